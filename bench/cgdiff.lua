-- bench/cgdiff.lua OUT1 N1 OUT2 N2 SIGN_FUNCTION [TOP]: per-proof instruction counts from two
-- callgrind runs of bench/proofloop.lua (N1 < N2 proofs), through callgrind_annotate. Start-up
-- and key loading are the same in both runs, so every figure is (run2 - run1) / (N2 - N1).
-- SIGN_FUNCTION "-" when there is none. Prints "key value" lines, then "top <rank> <Ir/proof> <self|incl> <function>" lines.
-- Further arguments name functions whose inclusive Ir/op is printed as "named <function> <Ir>".
local out1, n1, out2, n2, signfn, top = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4]), arg[5], tonumber(arg[6] or 10)

local function annotate(file, inclusive)
  local cmd = string.format("callgrind_annotate --threshold=100 --inclusive=%s '%s' 2>/dev/null",
    inclusive and "yes" or "no", file)
  local p = assert(io.popen(cmd))
  local total, fns = nil, {}
  for line in p:lines() do
    local num, rest = line:match("^%s*([%d,]+)%s+(.*)$")
    if num then
      local ir = tonumber((num:gsub(",", "")))
      rest = rest:gsub("^%b()%s*", "")
      if rest:match("PROGRAM TOTALS") then
        total = ir
      elseif not rest:find("'", 1, true) then -- skip recursion-level entries (fn'2)
        local where, lib = rest:match("^(.-)%s+%[(.-)%]$")
        where = where or rest
        local fn = where:match("^.*:(.-)$") or where
        lib = lib and lib:match("([^/]+)$") or "oktadpop.so"
        local name = fn .. " (" .. lib:gsub("%.so.*$", "") .. ")"
        if inclusive then
          fns[name] = math.max(fns[name] or 0, ir) -- one function split over several files
        else
          fns[name] = (fns[name] or 0) + ir
        end
      end
    end
  end
  p:close()
  assert(total, "no PROGRAM TOTALS in callgrind_annotate output of " .. file)
  return total, fns
end

-- Symbol-less functions (stripped libcrypto) are named by their main caller.
local callers = {}
do
  local p = assert(io.popen(string.format(
    "callgrind_annotate --tree=caller --inclusive=no --threshold=100 '%s' 2>/dev/null", out2)))
  local best, best_ir
  for line in p:lines() do
    local num, mark, rest = line:match("^%s*([%d,]+)%s+%b()%s+([<*])%s+(.*)$")
    if mark == "<" then
      local ir = tonumber((num:gsub(",", "")))
      if not best_ir or ir > best_ir then best, best_ir = rest:match(":([^:%s]+)"), ir end
    elseif mark == "*" then
      local fn = rest:match("^[^:]*:(0x%x+)")
      if fn and best then callers[fn] = callers[fn] or best end
      best, best_ir = nil, nil
    elseif line:match("^%s*$") then
      best, best_ir = nil, nil
    end
  end
  p:close()
end
local function label(name)
  local file = name:match("^<counts for unidentified lines in (.-)> %(")
  if file then return "(inlined code in " .. file .. ")" end
  local addr, lib = name:match("^(0x%x+) %((.-)%)$")
  if addr and callers[addr] then return string.format("%s (%s, called from %s)", addr, lib, callers[addr]) end
  return name
end

local dn = n2 - n1
local t1, inc1 = annotate(out1, true)
local t2, inc2 = annotate(out2, true)
local _, self1 = annotate(out1, false)
local _, self2 = annotate(out2, false)
local function per(a, b, name) return ((b[name] or 0) - (a[name] or 0)) / dn end
local sign
for name in pairs(inc2) do
  if name:match("^" .. signfn .. " %(") then sign = per(inc1, inc2, name) end
end
if signfn ~= "-" then assert(sign, "no " .. signfn .. " in the profile") end
sign = sign or 0
local total = (t2 - t1) / dn
print(string.format("total_ir %.0f", total))
print(string.format("sign_ir %.0f", sign))
print(string.format("overhead_ir %.0f", total - sign))

local function ranked(a, b, skip)
  local list = {}
  for name in pairs(b) do
    local v = per(a, b, name)
    if v > 0 and not (skip and skip(name)) then list[#list + 1] = { name, v } end
  end
  table.sort(list, function(x, y) return x[2] > y[2] end)
  return list
end
for i, e in ipairs(ranked(self1, self2)) do
  if i > top then break end
  print(string.format("top %d %.0f self %s", i, e[2], label(e[1])))
end
-- inclusive view: the module's own functions and the OpenSSL/Lua entry points they call
local chain = { "(lua5.4)", "(luajit", "(libc)", "(ld-linux", "(below main)", "__libc_start" }
local function skip(name)
  if name:sub(1, 2) == "0x" then return true end
  for _, c in ipairs(chain) do if name:find(c, 1, true) then return true end end
  return false
end
for i, e in ipairs(ranked(inc1, inc2, skip)) do
  if i > top + 10 then break end
  print(string.format("incl %d %.0f incl %s", i, e[2], label(e[1])))
end
for i = 7, #arg do
  local best
  for name in pairs(inc2) do
    if name:match("^" .. arg[i]:gsub("%p", "%%%0") .. " %(") then
      local v = per(inc1, inc2, name)
      if not best or v > best then best = v end
    end
  end
  if best then print(string.format("named %s %.0f", arg[i], best)) end
end
