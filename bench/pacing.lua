-- bench/pacing.lua: pacing by the server's numbers against servers that say otherwise than a
-- wall-clock minute, each run against its floor (the least time its limits allow), with its
-- 429s. The emulator (plain http, no latency unless said) and the client's defaults:
--   short     N reads under L a 2 s window (the client's share: 40 % of L); floor: the windows
--             the budget needs, (ceil(N / share) - 1) x 2 s;
--   others    N reads, 1 s windows, other apps using all but one request of each: one a window;
--             floor (N - 1) x 1 s;
--   headless  N reads, no rate-limit headers at all, 50 ms each, 10 at once (a small nginx of its
--             own); floor N x 50 ms / 10;
--   apps      N assignments (POST /api/v1/apps/{id}/users) under an apps bucket of L a 2 s
--             window; floor as for short;
--   share     N reads, one at a time, 2 s windows, the app's share set to 25 %: the client
--             learns it from a 429 a window; floor: (ceil(N / (25 % of L)) - 1) x 2 s.
package.path = "bench/?.lua;./?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local emulator = require "spec.support.emulator"
local nginx = require "spec.support.nginx"
local util = require "spec.support.util"

local CLIENT_ID = "0oabenchpacing000001"
local USERS_ONE = "GET /api/v1/users/{id}"
local CAP = 0.4

local cc = lib.key(oktadpop, "RS256", "cc")
local emu = emulator.start{tls = false, verbose = false, config = {users = 200,
  clients = {{client_id = CLIENT_ID, jwks = {keys = {cc:public_jwk()}}, scopes = {"okta.users.read", "okta.apps.manage"}}}}}

local function client(url, extra)
  local cfg = {org_url = url or emu.url, client_id = CLIENT_ID, scopes = "okta.users.read okta.apps.manage",
               private_key = cc, dpop_key = lib.key(oktadpop, "ES256"), retry_base = 0.01}
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local c = assert(oktadpop.new(cfg))
  assert(c:token())
  return c
end

local function settings(s)
  emu:control{latency_ms = 0, rate_window_seconds = emulator.null, other_apps_use = {}, rate_limit_headers = true,
              rate_limits = {}, app_shares = {}}
  emu:reset()
  emu:control(s)
end

local function user(i) return ("/api/v1/users/00u%015d"):format((i - 1) % 200 + 1) end

local function report(name, n, wall, floor, failed, bucket)
  local stats = emu:stats()
  lib.out(name .. ".n", n)
  lib.out(name .. ".wall_s", ("%.3f"):format(wall))
  lib.out(name .. ".floor_s", ("%.3f"):format(floor))
  lib.out(name .. ".failed", failed)
  lib.out(name .. ".count_429", bucket and ((stats.buckets[bucket] or {}).count_429 or 0) or stats.count_429)
  if bucket then lib.out(name .. ".windows", (stats.buckets[bucket] or {}).windows or 0) end
end

local function reads(c, n, concurrency)
  local reqs = {}
  for i = 1, n do reqs[i] = user(i) end
  local t0 = lib.wall()
  local _, failed = c:batch(reqs, {concurrency = concurrency})
  return lib.wall() - t0, #failed
end

local headless_dir, headless -- the header-less org's nginx, stopped whatever happens
local ok, err = pcall(function()
  -- short windows
  local n, limit = 40, 10
  settings{rate_window_seconds = 2, rate_limits = {[USERS_ONE] = limit}}
  local c = client()
  local wall, failed = reads(c, n, 4)
  report("short", n, wall, (math.ceil(n / math.floor(limit * CAP)) - 1) * 2, failed)
  c:close()

  -- other apps' use: one request a window
  n = 6
  settings{rate_window_seconds = 1, rate_limits = {[USERS_ONE] = 10}, other_apps_use = {[USERS_ONE] = 9}}
  c = client()
  wall, failed = reads(c, n, 2)
  report("others", n, wall, n - 1, failed)
  c:close()

  -- no rate-limit headers: concurrency-bound
  n = 1000
  headless_dir = util.sh("mktemp -d"):gsub("%s+$", "")
  headless = nginx.headerless_org(headless_dir, 0.05)
  c = client(headless.url)
  wall, failed = reads(c, n, 10)
  c:close()
  lib.out("headless.n", n)
  lib.out("headless.wall_s", ("%.3f"):format(wall))
  lib.out("headless.floor_s", ("%.3f"):format(n * 0.05 / 10))
  lib.out("headless.failed", failed)
  lib.out("headless.count_429", 0)

  -- the apps bucket
  n, limit = 30, 10
  settings{rate_window_seconds = 2, rate_limits = {["/api/v1/apps"] = limit}}
  c = client()
  local t0 = lib.wall()
  local ids = {}
  for i = 1, n do ids[i] = ("00u%015d"):format(100 + i) end
  local _, f = c:batch(ids, {request = function(id)
    return {method = "POST", path = "/api/v1/apps/0oa000000000000004/users", body = {id = id, scope = "USER"}}
  end})
  report("apps", n, lib.wall() - t0, (math.ceil(n / math.floor(limit * CAP)) - 1) * 2, #f, "/api/v1/apps")
  c:close()

  -- an app share of 25 %, learned
  n, limit = 30, 20
  settings{rate_window_seconds = 2, rate_limits = {[USERS_ONE] = limit}, app_shares = {[CLIENT_ID] = 0.25}}
  c = client(nil, {max_retry_wait = 5})
  wall, failed = reads(c, n, 1)
  report("share", n, wall, (math.ceil(n / math.floor(limit * 0.25)) - 1) * 2, failed, USERS_ONE)
  c:close()
end)
if headless then headless:stop() end
if headless_dir then os.execute("rm -rf " .. headless_dir) end
emu:stop()
if not ok then error(err, 0) end
