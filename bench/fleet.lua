-- bench/fleet.lua: a bulk job split over two processes that share one Redis (a private
-- redis-server), against the emulator's bucket of L reads a 2 s window (the pair's share: 40 % of
-- L together): the floor for the pair is the windows the budget needs, (ceil(N / share) - 1) x 2 s;
-- and the same job in one process with no shared store, for the price of Redis.
package.path = "bench/?.lua;./?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local emulator = require "spec.support.emulator"
local redis = require "spec.support.redis"
local util = require "spec.support.util"

local CLIENT_ID = "0oabenchfleet0000001"
local USERS_ONE = "GET /api/v1/users/{id}"
local N, LIMIT, CAP = 80, 20, 0.4

local cc = lib.key(oktadpop, "RS256", "cc")
local dir = util.sh("mktemp -d"):gsub("%s+$", "")
assert(cc:save_pem(dir .. "/cc.pem", true))
assert(lib.key(oktadpop, "ES256"):save_pem(dir .. "/dpop.pem", true))
local emu = emulator.start{tls = false, verbose = false, config = {users = 200,
  clients = {{client_id = CLIENT_ID, jwks = {keys = {cc:public_jwk()}}, scopes = {"okta.users.read"}}}}}
local r = redis.start{}

-- A job process: `count` reads from `first`, with the Redis store (or none), printing its wall time.
local function job(first, count, with_redis)
  local file = dir .. "/job-" .. first .. ".lua"
  util.write(file, ([[
package.path = %q
package.cpath = %q
local o = require "oktadpop"
local okta = assert(o.new{org_url = %q, client_id = %q, scopes = "okta.users.read", private_key = %q,
  dpop_key = %q, retry_base = 0.01, store = %s})
assert(okta:token())
local reqs = {}
for i = 1, %d do reqs[i] = ("/api/v1/users/00u%%015d"):format(%d + i) end
local t0 = o.libcurl.clock()
local _, failed = okta:batch(reqs, {concurrency = 4})
print(("%%.3f %%d %%d"):format(o.libcurl.clock() - t0, #failed, okta.stats.rate_limited))
]]):format(package.path, package.cpath, emu.url, CLIENT_ID, dir .. "/cc.pem", dir .. "/dpop.pem",
           with_redis and ("assert(o.redis_store{url = %q})"):format(r.url) or "nil", count, first))
  return file
end

local lua = jit and "luajit" or "lua5.4"
local ok, err = pcall(function()
  local share = math.floor(LIMIT * CAP)
  local floor = (math.ceil(N / share) - 1) * 2
  emu:control{rate_window_seconds = 2, rate_limits = {[USERS_ONE] = LIMIT}}
  emu:reset()
  local out = util.sh(("%s %s > %s/a.out & %s %s > %s/b.out & wait; cat %s/a.out %s/b.out")
    :format(lua, job(0, N / 2, true), dir, lua, job(N / 2, N / 2, true), dir, dir, dir))
  local walls, failed = {}, 0
  for wall, f in out:gmatch("(%S+) (%d+) %d+\n") do walls[#walls + 1] = tonumber(wall); failed = failed + tonumber(f) end
  local bucket = emu:stats().buckets[USERS_ONE] or {}
  lib.out("pair.n", N)
  lib.out("pair.wall_s", ("%.3f"):format(math.max(walls[1] or 0, walls[2] or 0)))
  lib.out("pair.floor_s", ("%.3f"):format(floor))
  lib.out("pair.failed", failed)
  lib.out("pair.count_429", bucket.count_429 or 0)
  lib.out("pair.peak", bucket.peak_used or 0)
  lib.out("pair.share", share)
  lib.out("pair.limit", LIMIT)
  emu:control{rate_window_seconds = emulator.null, rate_limits = {[USERS_ONE] = 100000}}
  emu:reset()
  os.execute("sleep 2.5") -- the pair's last window, still in the store, is over
  -- the price of the shared store: one process, N reads unpaced by the bucket, Redis or not
  local with = util.sh(lua .. " " .. job(0, N, true)):match("^(%S+)")
  local without = util.sh(lua .. " " .. job(0, N, false)):match("^(%S+)")
  lib.out("store.redis_wall_s", with)
  lib.out("store.memory_wall_s", without)
end)
r:stop()
emu:stop()
os.execute("rm -rf " .. dir)
if not ok then error(err, 0) end
