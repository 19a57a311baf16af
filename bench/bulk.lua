-- bench/bulk.lua: a bulk job at the org's pace, against the Okta emulator enforcing Okta's limits
-- (50 ms a request, a concurrency limit, per-minute buckets, the app's 50 % share), with the
-- client's default settings (max_concurrency 10, max_capacity 0.4). Three runs:
--   concurrency  N user reads by id through client:batch; the bucket holds them all in one
--                window, so the floor is N x latency / C, C = min(max_concurrency, the org's limit);
--   budget       M reads against a bucket that allows fewer in a window (40 % of R), the
--                emulator's clock set so that its minute ends a few seconds after the start: the
--                floor is the time to the window's end plus the rest at C in flight;
--   sequential   K reads one after the other (client:get), the seed's way, as the reference.
-- Prints "key value" lines: wall, floor, 429s, peak in flight and peak bucket use, from the
-- emulator's /__emulator/stats.
package.path = "bench/?.lua;./?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local emulator = require "spec.support.emulator"

local CLIENT_ID = "0oabenchbulk00000001"
local N, M, K = 2000, 300, 100
local LATENCY_MS, ORG_CONCURRENCY = 50, 75
local R_WIDE, R_TIGHT = 10000, 500       -- GET /api/v1/users/{id} per minute in the two runs
local WINDOW_LEAD = 8                    -- seconds left in the emulator's minute when the budget run starts
local BUCKET = "GET /api/v1/users/{id}"
local DEFAULT_CONCURRENCY, DEFAULT_CAPACITY = 10, 0.4

local cc = lib.key(oktadpop, "RS256", "cc")
local emu = emulator.start{tls = true, verbose = false, config = {
  users = N, latency_ms = LATENCY_MS, concurrency_limit = ORG_CONCURRENCY,
  clients = {{client_id = CLIENT_ID, jwks = {keys = {cc:public_jwk()}}, scopes = {"okta.users.read"}}},
}}

local function paths(count)
  local out = {}
  for i = 1, count do out[i] = ("/api/v1/users/00u%015d"):format(i) end
  return out
end

-- A client with its token already fetched, and the emulator's statistics cleared.
local function ready_client()
  local client = assert(oktadpop.new{org_url = emu.url, client_id = CLIENT_ID, scopes = "okta.users.read",
    private_key = cc, dpop_key = lib.key(oktadpop, "ES256"), ca_file = emu.ca_file})
  assert(client:token())
  emu:reset()
  return client
end

local function report(prefix, count, wall, failed)
  local stats = emu:stats()
  local bucket = stats.buckets[BUCKET] or {}
  local sent = 0
  for _, e in ipairs(emu:log()) do if e.kind == "api" then sent = sent + 1 end end
  lib.out(prefix .. ".requests", sent) -- more than n when a request was retried
  lib.out(prefix .. ".n", count)
  lib.out(prefix .. ".wall_s", ("%.3f"):format(wall))
  lib.out(prefix .. ".failed", failed)
  lib.out(prefix .. ".count_429", ("%d"):format(stats.count_429))
  lib.out(prefix .. ".in_flight_peak", ("%d"):format(stats.in_flight_peak))
  lib.out(prefix .. ".bucket_limit", ("%d"):format(bucket.limit or 0))
  lib.out(prefix .. ".bucket_peak", ("%d"):format((bucket.peak_used_by_client or {})[CLIENT_ID] or 0))
end

local ok, err = pcall(function()
  local c_allowed = math.min(DEFAULT_CONCURRENCY, ORG_CONCURRENCY)
  lib.out("latency_ms", LATENCY_MS)
  lib.out("org_concurrency", ORG_CONCURRENCY)
  lib.out("max_concurrency", DEFAULT_CONCURRENCY)
  lib.out("max_capacity", DEFAULT_CAPACITY)

  -- 1. concurrency-bound
  emu:control{rate_limits = {[BUCKET] = R_WIDE}, clock_skew = 0}
  local client = ready_client()
  local t0 = lib.wall()
  local _, failed = client:batch(paths(N))
  report("conc", N, lib.wall() - t0, #failed)
  lib.out("conc.floor_s", ("%.3f"):format(N * LATENCY_MS / 1000 / c_allowed))
  client:close()

  -- 2. budget-bound: the emulator's minute ends WINDOW_LEAD s after the start
  local skew = (60 - WINDOW_LEAD - os.time() % 60) % 60
  emu:control{rate_limits = {[BUCKET] = R_TIGHT}, clock_skew = skew}
  client = ready_client()
  local allowed = math.floor(R_TIGHT * DEFAULT_CAPACITY)
  local t_start = lib.wall()
  local to_boundary = 60 - (os.time() + skew) % 60
  local _, failed2 = client:batch(paths(M))
  report("budget", M, lib.wall() - t_start, #failed2)
  lib.out("budget.allowed_per_window", allowed)
  lib.out("budget.floor_s", ("%.3f"):format(to_boundary + (M - allowed) * LATENCY_MS / 1000 / c_allowed))
  client:close()

  -- 3. the sequential reference
  emu:control{rate_limits = {[BUCKET] = R_WIDE}, clock_skew = 0}
  client = ready_client()
  t0 = lib.wall()
  for _, p in ipairs(paths(K)) do assert(client:get(p)) end
  local per_call = (lib.wall() - t0) / K
  lib.out("seq.n", K)
  lib.out("seq.per_call_ms", ("%.1f"):format(per_call * 1000))
  lib.out("seq.scaled_wall_s", ("%.1f"):format(per_call * N))
  client:close()
end)
emu:stop()
if not ok then error(err, 0) end
