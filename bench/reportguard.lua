-- bench/reportguard.lua: part 7 of bench/report.lua, the guard's rows and its steps section,
-- from bench/guard's "guard.*" figures. Loaded with dofile; takes report.lua's helpers.
local M = {}

local GUARD_TARGET = 0.80
function M.rows(c)
  local R, num, fmt, pct, verdict, row, misses, mean2 = c.R, c.num, c.fmt, c.pct, c.verdict, c.row, c.misses, c.mean2
  local plain = mean2(num("guard.plain_before"), num("guard.plain_after"))
  local verify = mean2(num("guard.verify_before"), num("guard.verify_after"))
  local rps = num("guard.rps")
  if not rps then
    if R["guard.error"] then row("7", "the guard", "failed: " .. R["guard.error"], "", "", "") end
    return
  end
  local floor = (plain and verify) and 1 / (1 / plain + 1 / verify) or nil
  local clean = num("guard.rps_not_2xx") == 0
  local ok = clean and floor and rps / floor >= GUARD_TARGET
  if not ok then misses[#misses + 1] = "the guard's requests/s" end
  row("7", "guard: requests/s through `oktadpop.resty.guard`, a fresh proof each (" .. (R["guard.pool_proofs"] or "?") ..
    " pre-signed)", fmt(rps) .. (clean and "" or (", " .. R["guard.rps_not_2xx"] .. " refused: **invalid run**")),
    "floor 1 / (1 / plain + 1 / verify) = " .. fmt(floor), pct(rps, floor), "≥ 80 %: " .. verdict(ok))
  local redis = num("guard.rps_redis")
  if redis then
    local clean_redis = num("guard.rps_redis_not_2xx") == 0
    row("7", "guard with `replay_store = redis_store{…}` (a private redis-server, same CPU)", fmt(redis) ..
      (clean_redis and "" or (", " .. R["guard.rps_redis_not_2xx"] .. " refused: **invalid run**")),
      "the guard on the shared dict " .. fmt(rps), pct(redis, rps), "measured (one Redis round trip a request)")
  end
  row("7", "… the plain location, same requests (before, after)", fmt(plain),
    fmt(num("guard.plain_before")) .. " → " .. fmt(num("guard.plain_after")), "", "")
  row("7", "… the plain location with an empty `access_by_lua` phase", fmt(num("guard.plain_access")), "", "", "")
  row("7", "… `openssl speed` ES256 verify/s (before, after)", fmt(verify),
    fmt(num("guard.verify_before")) .. " → " .. fmt(num("guard.verify_after")), "", "")
  for _, r in ipairs { { "replay_rps", "a replayed proof (the same one every time)" }, { "bad_rps", "a proof with another's signature" } } do
    local v, all401 = num("guard." .. r[1]), num("guard." .. r[1] .. "_not_401") == 0
    local fast = v and all401 and v >= rps
    if not fast then misses[#misses + 1] = "guard refusals: " .. r[2] end
    row("7", "guard: refusals/s, " .. r[2], fmt(v) .. (all401 and "" or " (not all 401: **invalid run**)"),
      "acceptance " .. fmt(rps) .. "/s", pct(v, rps), "not slower than acceptance: " .. verdict(fast))
  end
  local a, b = num("guard.kids_rss_before_kib"), num("guard.kids_rss_after_kib")
  if a and b then
    local ok_rss = b - a < 15 * 1024
    if not ok_rss then misses[#misses + 1] = "guard RSS under made-up kids" end
    row("7", "guard: worker VmRSS growth over " .. fmt(num("guard.kids_requests")) ..
      " requests with distinct unknown 6 KB kids", string.format("%+d KiB", b - a), "VmRSS after warm-up " .. fmt(a) .. " KiB",
      "", "< 15 MiB: " .. verdict(ok_rss))
  end
end

function M.section(c)
  local R, w = c.R, c.w
  if R["guard.step.verify_dpop_proof"] then
    w("## The guard's steps (inside the nginx worker)")
    w()
    w("`bench/guardsteps_nginx.lua`: each step of a guarded request timed alone in a loop inside the worker,")
    w("over the same request (µs of CPU per call; warm caches, so a real request, which shares its CPU with")
    w("wrk and the kernel, pays more). `bench/guard-profile.md` has the before/after profile.")
    w()
    w("| step | µs |")
    w("|---|---:|")
    for _, k in ipairs { "get_headers", "uri_method", "ath", "token", "verify_dpop_proof", "verify_dpop_proof_cached",
                         "replay_add", "ctx" } do
      if R["guard.step." .. k] then w("| " .. k .. " | " .. R["guard.step." .. k] .. " |") end
    end
    w()
  end
  local gp = io.open("bench/guard-profile.md", "rb")
  if gp then
    w((gp:read("*a"):gsub("\n+$", "")))
    gp:close()
    w()
  end
end

function M.method(c)
  local R, w = c.R, c.w
  w("7. **The guard**: `bench/guard` starts one nginx worker with a static JWKS and the replay dict, and")
  w("   `wrk -t1 -c1` sends each request with the access token and the next of " .. (R["guard.pool_proofs"] or "?") ..
    " proofs signed before")
  w("   the run (`bench/guardpool.lua`: ES256, one jti each; `bench/guardwrk.lua` formats every request before")
  w("   the clock starts, so wrk's own work per request is the same for every location). nginx and wrk share")
  w("   one CPU, as in part 2. The plain location answers the same requests with the same content handler and")
  w("   no guard; `openssl speed ecdsap256`'s verify/s is the signature check alone; floor = 1 / (1 / plain +")
  w("   1 / verify). Every guarded answer must be 200 and every refusal 401, else the row says the run is")
  w("   invalid. The Redis row is the same guard with its replay records in a private `redis-server`")
  w("   (no persistence, pinned to the same CPU), one `redis_store` per worker made in `init_worker`.")
  w("   The memory row sends 6 KB made-up kids (`spec/support/kidflood.lua`) after a one-second warm-up.")
end

return M
