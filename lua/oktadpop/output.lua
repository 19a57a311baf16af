-- oktadpop.output: what the command and the examples write, in the four formats (table, json,
-- ndjson, csv), without losing anything: files only when asked for by name, through
-- oktadpop.outfile (never over an existing path, whatever its mode, unless forced; written
-- whole, then put in place), and every cell a spreadsheet would run as a formula neutralised.
local oktadpop = require "oktadpop"
local cjson = require "cjson.safe"

local M = {}

local null = oktadpop.null

-- A value as text: JSON null and nil are empty; tables are JSON.
function M.text(v)
  if v == nil or v == null then return "" end
  if type(v) == "table" then return M.json(v) end
  if math.type and math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end

-- The full-width forms of = + - @ (U+FF1D, U+FF0B, U+FF0D, U+FF20): spreadsheets read them as
-- the ASCII ones.
local FULL_WIDTH = {["\239\188\157"] = true, ["\239\188\139"] = true, ["\239\188\141"] = true, ["\239\188\160"] = true}

-- A text cell made inert for spreadsheets (OWASP, "CSV Injection"): one that starts with a tab
-- or CR, or whose first character after leading blanks is = + - @ or a full-width form of
-- them, gets a leading '.
function M.neutral(s)
  local first = s:match("^[ \t\r\n]*(.*)$")
  if s:find("^[\t\r]") or first:find("^[=+%-@]") or FULL_WIDTH[first:sub(1, 3)] then return "'" .. s end
  return s
end

-- A cell's text: strings neutralised (numbers and booleans cannot be formulas).
local function cell(v)
  local s = M.text(v)
  if type(v) == "string" then s = M.neutral(s) end
  return s
end

function M.csv_cell(v)
  local s = cell(v)
  if s:find('[,"\r\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

function M.csv_row(values, n)
  local cells = {}
  for i = 1, n or #values do cells[i] = M.csv_cell(values[i]) end
  return table.concat(cells, ",") .. "\n"
end

-- A table or TSV cell: neutralised, control characters (tabs, line breaks, terminal escapes)
-- made spaces.
local function plain_cell(v)
  return (cell(v):gsub("[%z\1-\31\127]", " "))
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

-- Columns for items that come without any ({{"header", "path"}, ...}): the first item's keys.
function M.columns_of(item)
  local columns = {}
  if type(item) ~= "table" then return {{"value", ""}} end
  for k in pairs(item) do
    if type(k) == "string" then columns[#columns + 1] = {k, k} end
  end
  table.sort(columns, function(a, b) return a[1] < b[1] end)
  return columns
end

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

-- JSON text of a value; pretty: two-space indents, keys sorted. A "/" is never escaped.
local function encode(v, pretty, indent, out)
  if type(v) ~= "table" or not pretty then
    out[#out + 1] = cjson.encode(v) or "null"
    return
  end
  local inner = indent .. "  "
  if is_array(v) then
    out[#out + 1] = "[\n"
    for i = 1, #v do
      out[#out + 1] = inner
      encode(v[i], pretty, inner, out)
      out[#out + 1] = i < #v and ",\n" or "\n"
    end
    out[#out + 1] = indent .. "]"
    return
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  if #keys == 0 then out[#out + 1] = "{}" return end
  table.sort(keys)
  out[#out + 1] = "{\n"
  for i, k in ipairs(keys) do
    local value = v[k]
    if value == nil then value = v[tonumber(k)] end
    out[#out + 1] = inner .. cjson.encode(k) .. ": "
    encode(value, pretty, inner, out)
    out[#out + 1] = i < #keys and ",\n" or "\n"
  end
  out[#out + 1] = indent .. "}"
end

-- JSON text of v (pretty: lines after the first start with indent). cjson escapes every "/" as
-- "\/"; in its output a backslash before "/" is always that escape, so it is undone.
function M.json(v, pretty, indent)
  local out = {}
  encode(v, pretty, indent or "", out)
  return (table.concat(out):gsub("\\/", "/"))
end

-- Display width of a cell (code points: enough for names and logins).
local function width(s)
  return utf8 and utf8.len(s) or select(2, s:gsub("[^\128-\191]", ""))
end

-- s cut to w columns, with … when something was cut.
local function fit(s, w)
  if width(s) <= w then return s end
  local out, n = {}, 0
  for ch in s:gmatch("[%z\1-\127\194-\244][\128-\191]*") do
    if n == w - 1 then break end
    out[#out + 1] = ch
    n = n + 1
  end
  return table.concat(out) .. "…"
end

-- Widths for rows (lists of cell texts) that together fit in `room` columns, two spaces apart.
local function widths_for(rows, ncol, room)
  local w, total = {}, 0
  for c = 1, ncol do
    w[c] = 1
    for _, row in ipairs(rows) do w[c] = math.max(w[c], width(row[c])) end
    total = total + w[c] + 2
  end
  while total - 2 > room do -- narrow the widest column, one at a time, down to 4
    local widest = 1
    for c = 2, ncol do if w[c] > w[widest] then widest = c end end
    if w[widest] <= 4 then break end
    w[widest] = w[widest] - 1
    total = total - 1
  end
  return w
end

local function aligned(row, w)
  local parts = {}
  for c = 1, #w do
    local s = fit(row[c], w[c])
    parts[c] = c < #w and s .. (" "):rep(w[c] - width(s)) or s
  end
  return table.concat(parts, "  ") .. "\n"
end

-- How many rows a terminal table holds back to measure its columns.
local ALIGN_ROWS = 100

--- A writer of items in one format to out (anything with write): w:add(item) for each,
-- w:finish() at the end (returns the count). format: "table" (aligned to opts.width columns
-- when given, a terminal's; else tab-separated), "json" (an array, opts.pretty), "ndjson" (one
-- item a line) or "csv". columns: {{"header", "dotted.path"}, ...}, or nil for the first
-- item's keys. Nothing is written before the first item; opts.flush flushes after each.
function M.writer(out, format, columns, opts)
  opts = opts or {}
  local w = {count = 0}
  local held, widths = {}, nil -- a terminal table's first rows, until its widths are known
  local function row_of(item)
    local row = {}
    for i, c in ipairs(columns) do row[i] = plain_cell(c[2] == "" and item or M.pick(item, c[2])) end
    return row
  end
  local function heads()
    local row = {}
    for i, c in ipairs(columns) do row[i] = c[1] end
    return row
  end
  local function flush_held()
    widths = widths_for(held, #columns, opts.width)
    for _, row in ipairs(held) do out:write(aligned(row, widths)) end
    held = {}
  end
  function w:add(item)
    columns = columns or M.columns_of(item)
    self.count = self.count + 1
    if format == "json" then
      out:write(self.count == 1 and "[\n" or ",\n", opts.pretty and "  " or "", M.json(item, opts.pretty, "  "))
    elseif format == "ndjson" then
      out:write(M.json(item), "\n")
    elseif format == "csv" then
      if self.count == 1 then out:write(M.csv_row(heads())) end
      local row = {}
      for i, c in ipairs(columns) do row[i] = c[2] == "" and item or M.pick(item, c[2]) end
      out:write(M.csv_row(row, #columns))
    elseif opts.width then
      if self.count == 1 then held[1] = heads() end
      if widths then out:write(aligned(row_of(item), widths))
      else
        held[#held + 1] = row_of(item)
        if #held > ALIGN_ROWS then flush_held() end
      end
    else
      if self.count == 1 then out:write(table.concat(heads(), "\t"), "\n") end
      out:write(table.concat(row_of(item), "\t", 1, #columns), "\n")
    end
    if opts.flush and out.flush then out:flush() end
  end
  function w:finish()
    if format == "json" then
      out:write(self.count == 0 and "[]\n" or "\n]\n")
    elseif self.count == 0 and format ~= "ndjson" and columns then -- an empty list: its header
      out:write(format == "csv" and M.csv_row(heads()) or table.concat(heads(), "\t") .. "\n")
    elseif #held > 0 then
      flush_held()
    end
    return self.count
  end
  return w
end

--- Writes items (an iterator that raises on failure) to out in format with columns; returns
-- the count.
function M.write_items(out, items, columns, format, opts)
  local w = M.writer(out, format, columns, opts)
  for item in items do w:add(item) end
  return w:finish()
end

--- Writes one value (an answer that is not a list): json and ndjson as the value itself, table
-- and csv as a one-row listing.
function M.write_value(out, value, format, columns, opts)
  if format == "json" or format == "ndjson" or type(value) ~= "table" then
    out:write(M.json(value, format == "json" and opts and opts.pretty), "\n")
    return
  end
  local w = M.writer(out, format, columns, opts)
  w:add(value)
  w:finish()
end

--- A refusal to replace a file, said for people who can pass --force (what: words after the path).
function M.file_error(err, what)
  if type(err) == "table" and err.exists then -- "<path> exists[ (a symbolic link)]: it is not replaced unless forced"
    return ("%s%s: pass --force to replace it"):format(err.message:match("^(.-): it is not replaced") or err.message, what or "")
  end
  return type(err) == "table" and err.message or tostring(err)
end

--- Runs fill(file) on an oktadpop.outfile for path ({force=, private=} as outfile takes them),
-- then puts the file in place. Returns what fill returned, or nil and the error: fill's own
-- (as raised: an error object keeps err.next), or a message about the file. Nothing is left at
-- path on failure, and what was there is untouched.
function M.atomic_write(path, fill, opts)
  local file, err = oktadpop.outfile(path, {force = opts and opts.force, private = opts and opts.private})
  if not file then return nil, M.file_error(err) end
  local ok, result = pcall(fill, file)
  if not ok then
    file:discard()
    return nil, result
  end
  local committed, cerr = file:commit()
  if not committed then return nil, M.file_error(cerr) end
  return result
end

--- Saves a key's private PEM (mode 0600) to path, never over an existing file unless forced.
function M.save_key(key, path, force)
  local pem, err = key:to_pem(true)
  if not pem then return nil, tostring(err) end
  local file, ferr = oktadpop.outfile(path, {force = force, private = true})
  if not file then return nil, M.file_error(ferr, " (it may be the key registered in Okta)") end
  local written, werr = file:write(pem)
  if not written then
    file:discard()
    return nil, M.file_error(werr)
  end
  local committed, cerr = file:commit()
  if not committed then return nil, M.file_error(cerr, " (it may be the key registered in Okta)") end
  return true
end

return M
