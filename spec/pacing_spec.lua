-- Pacing by the server's numbers, in both drivers, against the emulator set to answer as a
-- stricter or smaller Okta would: windows of 1 or 2 s that start at a bucket's first request,
-- other apps' use in Remaining, no rate-limit headers at all, the apps bucket for
-- /api/v1/apps/{id}/*, an app share of 25 %, Okta's JSON E0000011 401, a concurrency 429 and
-- a bucket table from the configuration. The same scenario code (SCENARIOS) runs in this
-- process over libcurl and in a real nginx over cosockets.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local nginx = require "spec.support.nginx"
local drivers = require "spec.support.drivers"
local util = require "spec.support.util"

local CLIENT_ID = "0oapacing00000000001"
local SCOPES = "okta.users.read okta.apps.manage okta.groups.read"
local SLACK = "0oa000000000000004"
local USERS_ONE = "GET /api/v1/users/{id}"

-- Each scenario takes a client and a clock and answers a JSON-able table.
local SCENARIOS = [==[
local M = {}

local function user(i) return ("00u%015d"):format(i) end

local function stats(okta)
  local s = okta.stats
  return {rate_waits = s.rate_waits, rate_limited = s.rate_limited, budget_cuts = s.budget_cuts,
          concurrency_cuts = s.concurrency_cuts, concurrency = s.concurrency, token_requests = s.token_requests,
          buckets = s.buckets}
end

-- n gets of one user each, one after another; the time they took.
function M.sequential(okta, now, n)
  assert(okta:token())
  local t0, failures = now(), {}
  for i = 1, n do
    local body, err = okta:get("/api/v1/users/" .. user(i))
    if not body then failures[#failures + 1] = tostring(err) end
  end
  return {elapsed = now() - t0, failures = failures, stats = stats(okta)}
end

-- A batch of n gets, `concurrency` at a time.
function M.batch_reads(okta, now, n, concurrency)
  assert(okta:token())
  local reqs = {}
  for i = 1, n do reqs[i] = "/api/v1/users/" .. user((i - 1) % 40 + 1) end
  local t0 = now()
  local _, failed = okta:batch(reqs, {concurrency = concurrency})
  return {elapsed = now() - t0, failed = #failed, first_error = failed[1] and tostring(failed[1].error), stats = stats(okta)}
end

-- A batch of n assignments to Slack (POST /api/v1/apps/{id}/users), each its own user.
function M.apps_batch(okta, now, n)
  assert(okta:token())
  local t0, ids = now(), {}
  for i = 1, n do ids[i] = user(100 + i) end
  local _, failed = okta:batch(ids, {request = function(id)
    return {method = "POST", path = "/api/v1/apps/0oa000000000000004/users", body = {id = id, scope = "USER"}}
  end})
  return {elapsed = now() - t0, failed = #failed, first_error = failed[1] and tostring(failed[1].error), stats = stats(okta)}
end

-- One call after a fault the emulator was told to play.
function M.one_call(okta)
  local body, err = okta:get("/api/v1/users/" .. user(1))
  return {ok = body ~= nil, err = err and tostring(err), stats = stats(okta)}
end

-- A group's members: the bucket the configuration gives /api/v1/groups/{id}/users.
function M.members(okta)
  local n = 0
  for _ in okta.groups:members("00g000000000000002") do n = n + 1 end
  return {members = n, stats = stats(okta)}
end

return M
]==]

describe("pacing by the server's numbers", function()
  local runner, emu, dir

  setup(function()
    runner = drivers.new{name = "pacing", source = SCENARIOS, client_id = CLIENT_ID, scopes = SCOPES}
    dir = runner.dir
    emu = emulator.start{tls = false, config = {users = 200, groups = 4, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {runner.key:public_jwk()}}, scopes = {"okta.users.read", "okta.apps.manage",
        "okta.groups.read"}}}}}
  end)
  teardown(function()
    if emu then emu:stop() end
    if runner then runner:close() end
  end)

  -- The emulator afresh, then these settings.
  local function org(settings)
    emu:control{latency_ms = 0, rate_window_seconds = emulator.null, other_apps_use = {}, rate_limit_headers = true,
                rate_limits = {}, app_shares = {}, faults = {}}
    emu:reset()
    emu:control(settings)
  end

  -- Runs scenario name(args...) against the emulator with this client config (extra keys over the defaults).
  local function run(driver, name, extra, ...)
    local cfg = {org_url = emu.url}
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return runner:run(driver, name, cfg, ...)
  end

  local function bucket_stats(name) return emu:stats().buckets[name] or {} end

  for _, driver in ipairs({"libcurl", "nginx"}) do
    describe("(" .. driver .. ") #timing" .. (driver == "nginx" and " #nginx" or ""), function()
      it("honours a 2 s window to within a second: 12 calls under 5 a window take three windows", function()
        org{rate_window_seconds = 2, rate_limits = {[USERS_ONE] = 10}}
        local r = run(driver, "sequential", {max_capacity = 0.5}, 12)
        assert.same({}, r.failures)
        assert.equal(0, emu:stats().count_429)
        assert.is_true(r.stats.rate_waits >= 2, "it waited for the windows")
        -- the old rule waited 60 s for a window of its own making; three windows of 2 s, and at
        -- most a second past each reset
        assert.is_true(r.elapsed < 2 * 2 + 2 * 1 + 0.5, ("12 calls took %.2f s"):format(r.elapsed))
        print(("\n%s: 12 calls, 5 a 2 s window: %.2f s, %d waits, 0 429s"):format(driver, r.elapsed, r.stats.rate_waits))
      end)

      it("respects Remaining: 0 after a rollover: other apps used the window, no 429", function()
        org{rate_window_seconds = 1, rate_limits = {[USERS_ONE] = 10}, other_apps_use = {[USERS_ONE] = 9}}
        local r = run(driver, "sequential", {}, 4)
        assert.same({}, r.failures)
        assert.equal(0, emu:stats().count_429)
        assert.is_true(r.elapsed >= 2, "one request a window (of whole seconds), as the server said")
        assert.is_true(r.elapsed < 4 * 1 + 2, ("4 calls took %.2f s"):format(r.elapsed))
      end)

      it("reaches the latency floor against a server that sends no rate-limit headers", function()
        local server = nginx.headerless_org(dir .. "/headerless", 0.05)
        local r = run(driver, "batch_reads", {org_url = server.url}, 1000, 10)
        server:stop()
        local floor = 1000 * 0.05 / 10
        assert.equal(0, r.failed, r.first_error)
        print(("\n%s: 1,000 reads, no rate-limit headers, 50 ms each, 10 at once: %.2f s, %.0f%% of the %.1f s floor")
          :format(driver, r.elapsed, floor / r.elapsed * 100, floor))
        assert.is_true(floor / r.elapsed >= 0.9, ("%.2f s is %.0f%% of the floor"):format(r.elapsed, floor / r.elapsed * 100))
        assert.truthy((r.stats.buckets[USERS_ONE] or {}).unlimited_until)
      end)

      it("paces an apps batch on the apps bucket (POST /api/v1/apps/{id}/users)", function()
        org{rate_window_seconds = 2, rate_limits = {["/api/v1/apps"] = 10}}
        local r = run(driver, "apps_batch", {}, 12)
        local apps = bucket_stats("/api/v1/apps")
        assert.equal(0, r.failed, r.first_error)
        assert.equal(0, apps.count_429)
        assert.is_true(apps.peak_used <= 4, "at most 40 % of 10 a window") -- the probe included
        assert.is_truthy(r.stats.buckets["/api/v1/apps"])
        assert.is_nil(r.stats.buckets["/api/v1"])
      end)

      it("learns an app share of 25 % after at most one 429 a window", function()
        org{rate_window_seconds = 2, rate_limits = {[USERS_ONE] = 20}, app_shares = {[CLIENT_ID] = 0.25}}
        local r = run(driver, "batch_reads", {max_retry_wait = 5}, 16, 1)
        local users = bucket_stats(USERS_ONE)
        assert.equal(0, r.failed, r.first_error)
        assert.is_true(users.count_429 >= 1, "the share was below the client's 40 %")
        assert.is_true(users.count_429 <= users.windows, ("%d 429s in %d windows"):format(users.count_429, users.windows))
        assert.is_true(r.stats.budget_cuts >= 1)
        print(("\n%s: app share 25 %%: 16 reads, %d 429s in %d windows, %.2f s"):format(driver, users.count_429,
          users.windows, r.elapsed))
      end)

      it("renews the token once on a 401 with Okta's JSON E0000011 and no challenge", function()
        org{faults = {{path_prefix = "/api/v1/users", kind = "invalid_token_json", times = 1}}}
        local r = run(driver, "one_call", {})
        assert.is_true(r.ok, r.err)
        assert.equal(2, util.log_count(emu, "token", 200)) -- the first token, and the one renewal
        assert.equal(2, util.log_count(emu, "api")) -- the refused call, and its retry
      end)

      it("lowers max_concurrency for a while after a concurrency 429", function()
        org{faults = {{path_prefix = "/api/v1/users", kind = "concurrency", times = 1}}}
        local r = run(driver, "one_call", {max_retry_wait = 5})
        assert.is_true(r.ok, r.err)
        assert.equal(1, r.stats.concurrency_cuts)
        assert.equal(1, r.stats.concurrency)
        assert.equal(1, r.stats.rate_limited)
      end)

      it("counts requests in the buckets a configuration names, before Okta's table", function()
        org{}
        local r = run(driver, "members", {buckets = {{"/api/v1/groups/*", "/api/v1/groups"}}})
        assert.is_true(r.members > 0)
        assert.is_truthy(r.stats.buckets["/api/v1/groups"])
        assert.is_nil(r.stats.buckets["/api/v1"])
      end)
    end)
  end

  it("refuses a malformed bucket table, naming the entry", function()
    for _, case in ipairs({
      {{{"api/v1/x", "x"}}, "a pattern is"}, {{{"/api/v1/*/x", "x"}}, "stands alone"}, {{{"/x/a{id}", "x"}}, "whole segment"},
      {{{"get /x", "x"}}, "upper-case"}, {{{"/x", ""}}, "two strings"}, {{{"/x", "a:b"}}, "without ':'"},
      {"/x", "a list"}}) do
      local okta, err = oktadpop.new{org_url = emu.url, client_id = CLIENT_ID, scopes = SCOPES, private_key = runner.key,
                                     buckets = case[1]}
      assert.is_nil(okta)
      assert.equal("config", err.kind)
      assert.matches(case[2], err.message, 1, true)
    end
  end)
end)
