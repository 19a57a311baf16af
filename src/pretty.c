/* pretty.c: oktadpop.pretty(value), a readable rendering of response tables for the REPL:
 * sorted keys, two-space indent, JSON null shown as null, cycles marked. */
#include "oktadpop.h"

static const char pretty_lua[] =
    "local null = ...\n"
    "local function key_order(a, b)\n"
    "  local ta, tb = type(a), type(b)\n"
    "  if ta ~= tb then return ta < tb end\n"
    "  return a < b\n"
    "end\n"
    "local function render(v, indent, seen, out)\n"
    "  local t = type(v)\n"
    "  if v == null then out[#out + 1] = 'null'\n"
    "  elseif t == 'string' then out[#out + 1] = string.format('%q', v)\n"
    "  elseif t ~= 'table' then out[#out + 1] = tostring(v)\n"
    "  elseif seen[v] then out[#out + 1] = '<cycle>'\n"
    "  elseif getmetatable(v) and getmetatable(v).__tostring then out[#out + 1] = tostring(v)\n"
    "  else\n"
    "    seen[v] = true\n"
    "    local keys, n = {}, #v\n"
    "    for k in pairs(v) do\n"
    "      if not (type(k) == 'number' and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end\n"
    "    end\n"
    "    table.sort(keys, key_order)\n"
    "    if n == 0 and #keys == 0 then out[#out + 1] = '{}' seen[v] = nil return end\n"
    "    local inner = indent .. '  '\n"
    "    out[#out + 1] = '{\\n'\n"
    "    for i = 1, n do\n"
    "      out[#out + 1] = inner\n"
    "      render(v[i], inner, seen, out)\n"
    "      out[#out + 1] = ',\\n'\n"
    "    end\n"
    "    for _, k in ipairs(keys) do\n"
    "      local name = type(k) == 'string' and k:match('^[%a_][%w_]*$') and k or '[' .. string.format('%q', k) .. ']'\n"
    "      out[#out + 1] = inner .. name .. ' = '\n"
    "      render(v[k], inner, seen, out)\n"
    "      out[#out + 1] = ',\\n'\n"
    "    end\n"
    "    out[#out + 1] = indent .. '}'\n"
    "    seen[v] = nil\n"
    "  end\n"
    "end\n"
    "return function(v)\n"
    "  local out = {}\n"
    "  render(v, '', {}, out)\n"
    "  return table.concat(out)\n"
    "end\n";

void ok_pretty_open(lua_State *L) {
  if (luaL_loadbuffer(L, pretty_lua, sizeof pretty_lua - 1, "=oktadpop.pretty") != 0) lua_error(L);
  ok_json_push_null(L);
  lua_call(L, 1, 1);
  lua_setfield(L, -2, "pretty");
}
