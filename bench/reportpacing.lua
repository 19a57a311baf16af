-- bench/reportpacing.lua: parts 8 and 9 of bench/report.lua, pacing by the server's numbers
-- (bench/pacing.lua, "pacing.*") and the fleet's pair on one Redis (bench/fleet.lua, "fleet.*").
-- Loaded with dofile; takes report.lua's helpers.
local M = {}

-- What each pacing case is, its floor, and how many 429s it may meet (the learned share: one a window).
local CASES = {
  {"short", "reads under a bucket with 2 s windows (the client's 40 %)", "(⌈N / share⌉ − 1) × 2 s"},
  {"others", "reads with other apps using all but one request of each 1 s window", "(N − 1) × 1 s"},
  {"headless", "reads from a 50 ms server with no rate-limit headers, 10 in flight", "N × 50 ms / 10"},
  {"apps", "`POST /api/v1/apps/{id}/users` under the apps bucket, 2 s windows", "(⌈N / share⌉ − 1) × 2 s"},
  {"share", "reads, one at a time, the app's share set to 25 % (learned from a 429)", "(⌈N / 25 %⌉ − 1) × 2 s"},
}

function M.rows(c)
  local R, num, pct, verdict, row, misses = c.R, c.num, c.pct, c.verdict, c.row, c.misses
  if R["pacing.error"] then row("8", "pacing", "failed: " .. R["pacing.error"], "", "", "") end
  for _, case in ipairs(CASES) do
    local k = "pacing." .. case[1]
    local wall, floor = num(k .. ".wall_s"), num(k .. ".floor_s")
    if wall and floor then
      local n429, windows = num(k .. ".count_429"), num(k .. ".windows")
      local allowed = case[1] == "share" and (windows or 0) or 0
      local ok = num(k .. ".failed") == 0 and n429 <= allowed and floor / wall >= 0.9
      if not ok then misses[#misses + 1] = "pacing " .. case[1] end
      row("8", ("pacing: %d %s"):format(num(k .. ".n"), case[2]),
        ("%.2f s, %d 429s%s"):format(wall, n429, windows and (" in " .. windows .. " windows") or ""),
        ("floor %s = %.2f s"):format(case[3], floor), pct(floor, wall),
        ("≥ 90 %% of the floor, %s: %s"):format(allowed > 0 and "≤ one 429 a window" or "0 429s", verdict(ok)))
    end
  end
  if R["fleet.error"] then row("9", "fleet", "failed: " .. R["fleet.error"], "", "", "") end
  local wall, floor = num("fleet.pair.wall_s"), num("fleet.pair.floor_s")
  if wall and floor then
    local share, peak = num("fleet.pair.share"), num("fleet.pair.peak")
    local ok = num("fleet.pair.failed") == 0 and num("fleet.pair.count_429") == 0 and peak <= share and floor / wall >= 0.9
    if not ok then misses[#misses + 1] = "the fleet's pair" end
    row("9", ("fleet: %d reads split over two processes sharing one Redis, a bucket of %d a 2 s window"):format(
      num("fleet.pair.n"), num("fleet.pair.limit")),
      ("%.2f s, %d 429s, peak %d a window"):format(wall, num("fleet.pair.count_429"), peak),
      ("floor for the pair (⌈N / %d⌉ − 1) × 2 s = %.2f s"):format(share, floor), pct(floor, wall),
      ("≥ 90 %% of the floor, 0 429s, peak ≤ %d: %s"):format(share, verdict(ok)))
  end
  local redis, memory = num("fleet.store.redis_wall_s"), num("fleet.store.memory_wall_s")
  if redis and memory then
    row("9", ("fleet: the price of the store, %d reads in one process, unpaced"):format(num("fleet.pair.n") or 0),
      ("%.3f s with Redis"):format(redis), ("%.3f s with the in-process store"):format(memory), pct(memory, redis),
      "measured")
  end
end

function M.method(c)
  local w = c.w
  w("8. **Pacing by the server's numbers** (`bench/pacing.lua`, the plain driver on Lua 5.4): the emulator")
  w("   set to windows of its own length, other apps' use in `Remaining`, an apps bucket and a 25 % app")
  w("   share; and a small nginx of its own that answers in 50 ms with no rate-limit headers. Each case's")
  w("   floor is the least time its limits allow; its 429s are the emulator's count.")
  w("9. **The fleet** (`bench/fleet.lua`): two plain-Lua processes split one bulk job and share a private")
  w("   `redis-server` through `redis_store`, against one emulator bucket; the floor is the windows the")
  w("   pair's share (40 % of the limit, together) needs. Then the same reads in one process with Redis")
  w("   and with the in-process store: what the shared store costs.")
end

return M
