--- oktadpop.pretty: oktadpop.pretty(value), a readable rendering of response tables for the
-- REPL: sorted keys, two-space indent, JSON null shown as null, cycles marked. It needs nothing
-- of the C module (luaopen_oktadpop loads it), so JSON null is lua-cjson's own.
-- @module oktadpop.pretty
local null = require("cjson").null
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  return a < b
end
local function render(v, indent, seen, out)
  local t = type(v)
  if v == null then out[#out + 1] = 'null'
  elseif t == 'string' then out[#out + 1] = string.format('%q', v)
  elseif t ~= 'table' then out[#out + 1] = tostring(v)
  elseif seen[v] then out[#out + 1] = '<cycle>'
  elseif getmetatable(v) and getmetatable(v).__tostring then out[#out + 1] = tostring(v)
  else
    seen[v] = true
    local keys, n = {}, #v
    for k in pairs(v) do
      if not (type(k) == 'number' and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
    end
    table.sort(keys, key_order)
    if n == 0 and #keys == 0 then out[#out + 1] = '{}' seen[v] = nil return end
    local inner = indent .. '  '
    out[#out + 1] = '{\n'
    for i = 1, n do
      out[#out + 1] = inner
      render(v[i], inner, seen, out)
      out[#out + 1] = ',\n'
    end
    for _, k in ipairs(keys) do
      local name = type(k) == 'string' and k:match('^[%a_][%w_]*$') and k or '[' .. string.format('%q', k) .. ']'
      out[#out + 1] = inner .. name .. ' = '
      render(v[k], inner, seen, out)
      out[#out + 1] = ',\n'
    end
    out[#out + 1] = indent .. '}'
    seen[v] = nil
  end
end
return function(v) -- pretty(value) -> string
  local out = {}
  render(v, '', {}, out)
  return table.concat(out)
end

