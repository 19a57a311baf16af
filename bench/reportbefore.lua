-- bench/reportbefore.lua: RESULTS.md's "Before and after" section, when BENCH_BEFORE names the
-- raw figures (RESULTS.tmp) of an older build measured on this machine just before this run
-- (BENCH_BEFORE_NAME says which). Rates are compared as shares of their own run's reference
-- (openssl speed, libcurl alone), so a busier machine in one run does not pass for a change.
-- Loaded with dofile; returns a function(R, fmt, w, read_results).
return function(R, fmt, w, read_results)
  local path = os.getenv("BENCH_BEFORE")
  if not path or path == "" then return end
  local B = read_results(path)
  local function n(T, k) return tonumber((T[k] or ""):match("^%S+")) end
  local function share(T, k, ref) local a, b = n(T, k), n(T, ref) return a and b and b > 0 and a / b or nil end
  local rows = {}
  local function pair(what, before, after, unit, lower_is_better)
    if not before or not after then return end
    local change = 100 * (after - before) / before
    rows[#rows + 1] = ("| %s | %s | %s | %+.1f %%%s |"):format(what, unit(before), unit(after), change,
      ((lower_is_better and change > 2) or (not lower_is_better and change < -2)) and " (slower)" or "")
  end
  local pcent = function(x) return ("%.1f %%"):format(100 * x) end
  local ir = function(x) return fmt(x) .. " Ir" end
  for _, alg in ipairs{"es256", "rs256"} do
    for _, lua in ipairs{"lua54", "luajit"} do
      local name = ("%s proofs/s, %s, of openssl speed"):format(alg:upper(), lua == "lua54" and "Lua 5.4" or "LuaJIT")
      local speed = ("speed.%s.%s"):format(alg, lua) -- as part 1: openssl speed around that interpreter's run
      pair(name, share(B, ("proof.%s.%s.rate"):format(lua, alg), speed),
           share(R, ("proof.%s.%s.rate"):format(lua, alg), speed), pcent)
    end
  end
  for _, alg in ipairs{"es256", "rs256"} do
    for _, lua in ipairs{"lua54", "luajit"} do
      local name = ("%s calls/s, %s, of libcurl alone"):format(alg:upper(), lua == "lua54" and "Lua 5.4" or "LuaJIT")
      pair(name, share(B, ("calls.%s.%s.rate"):format(lua, alg), "floor.before.rate"),
           share(R, ("calls.%s.%s.rate"):format(lua, alg), "floor.before.rate"), pcent)
    end
  end
  pair("instructions per ES256 proof outside the signature", n(B, "ir.es256.rest_ir"), n(R, "ir.es256.rest_ir"), ir, true)
  pair("instructions per RS256 proof outside the signature", n(B, "ir.rs256.rest_ir"), n(R, "ir.rs256.rest_ir"), ir, true)
  pair("instructions per `client:get` outside ECDSA_sign_ex", n(B, "ir.call.rest_ir"), n(R, "ir.call.rest_ir"), ir, true)
  if #rows == 0 then return end
  w("## Before and after")
  w()
  w(("Before: %s, measured on this machine right before this run (`BENCH_BEFORE`). After: this run.")
    :format(os.getenv("BENCH_BEFORE_NAME") or path))
  w("Rates are shares of the reference measured in their own run; instruction counts (callgrind)")
  w("barely depend on the machine's load. Run-to-run noise of the rates here is about ±5 %; a change")
  w("beyond −2 % is marked.")
  w()
  w("| measurement | before | after | change |")
  w("|---|---:|---:|---:|")
  for _, r in ipairs(rows) do w(r) end
  w()
end
