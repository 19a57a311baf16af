-- oktadpop.output: writing what a command or an example produces, without losing anything:
-- files only when asked for by name, written to a temporary file beside them and renamed into
-- place (a crash never leaves half a file where the old one was), never over an existing file
-- unless forced; CSV cells that a spreadsheet would run as a formula neutralised (OWASP, "CSV
-- Injection": a cell starting with = + - @, a tab or a CR gets a leading '); tables and JSON.
local oktadpop = require "oktadpop"
local cjson = require "cjson.safe"

local M = {}

-- A value as text: JSON null and nil are empty; tables are JSON.
function M.text(v)
  if v == nil or v == oktadpop.null then return "" end
  if type(v) == "table" then return cjson.encode(v) or "" end
  if math.type and math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end

function M.csv_cell(v)
  local s = M.text(v)
  if s:find("^[=+%-@\t\r]") then s = "'" .. s end
  if s:find('[,"\r\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

function M.csv_row(values, n)
  local cells = {}
  for i = 1, n or #values do cells[i] = M.csv_cell(values[i]) end
  return table.concat(cells, ",") .. "\n"
end

-- The value at a dotted path of an item ("profile.login").
function M.pick(item, dotted)
  local v = item
  for part in dotted:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = v[part]
  end
  return v
end

-- Writes items (an iterator) as table, json or csv to out (a file handle), with these columns
-- ({{"header", "dotted.path"}, ...}); returns the count.
function M.write_items(out, items, columns, format)
  local n = 0
  if format == "json" then
    out:write("[")
    for item in items do
      out:write(n > 0 and ",\n" or "\n", cjson.encode(item) or "null")
      n = n + 1
    end
    out:write(n > 0 and "\n]\n" or "]\n")
    return n
  end
  local heads = {}
  for i, c in ipairs(columns) do heads[i] = c[1] end
  if format == "csv" then out:write(M.csv_row(heads)) else out:write(table.concat(heads, "\t"), "\n") end
  for item in items do
    local row = {}
    for i, c in ipairs(columns) do row[i] = M.pick(item, c[2]) end
    if format == "csv" then
      out:write(M.csv_row(row, #columns))
    else
      for i = 1, #columns do row[i] = M.text(row[i]):gsub("[\t\r\n]", " ") end
      out:write(table.concat(row, "\t", 1, #columns), "\n")
    end
    n = n + 1
  end
  return n
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- A fresh name beside path, for writing before the rename.
local function temp_beside(path)
  return ("%s.tmp-%s"):format(path, oktadpop.random(16):sub(1, 10))
end

-- Renames the finished tmp over path; true, or nil, message with tmp removed.
local function move_into_place(tmp, path)
  local renamed, err = os.rename(tmp, path)
  if renamed then return true end
  os.remove(tmp)
  return nil, "cannot rename " .. tmp .. " to " .. path .. ": " .. tostring(err)
end

-- Runs fill(handle) on a temporary file beside path, then renames it over path. Refuses an
-- existing path unless opts.force. Returns what fill returned, or nil, message (the old file,
-- if any, untouched).
function M.atomic_write(path, fill, opts)
  if exists(path) and not (opts and opts.force) then
    return nil, path .. " exists: pass --force to replace it"
  end
  local tmp = temp_beside(path)
  local f, err = io.open(tmp, "wb")
  if not f then return nil, "cannot write " .. tmp .. ": " .. tostring(err) end
  local ok, result = pcall(fill, f)
  local closed = f:close()
  if not ok or not closed then
    os.remove(tmp)
    return nil, ok and ("cannot write " .. tmp) or result
  end
  local moved, merr = move_into_place(tmp, path)
  if not moved then return nil, merr end
  return result
end

-- Saves a key's private PEM (mode 0600) without ever replacing an existing file unless forced.
function M.save_key(key, path, force)
  if exists(path) and not force then
    return nil, path .. " exists (it may be the key registered in Okta): pass --force to replace it"
  end
  local tmp = temp_beside(path)
  local ok, err = key:save_pem(tmp, true)
  if not ok then return nil, tostring(err) end
  return move_into_place(tmp, path)
end

return M
