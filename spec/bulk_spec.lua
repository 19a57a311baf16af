-- Bulk work at Okta's pace, against the emulator enforcing Okta's limits: pagination that ends
-- at the first empty page and resumes from err.next with nothing lost or repeated, System Log
-- polling that sleeps on empty pages and stays inside its bucket, batches that never exceed
-- their concurrency, keep every result with its input and share one token refresh; in nginx,
-- batches on light threads, a poller in a timer, and a budget shared by four workers through
-- the shared dict.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local nginx = require "spec.support.nginx"
local util = require "spec.support.util"

local CLIENT_ID = "0oabulk0000000000001"
local USERS = 100

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
local function user_id(i) return ("00u%015d"):format(i) end

-- Waits, if need be, until at least `margin` seconds are left in the current minute: Okta's
-- windows (and the emulator's) are whole minutes, and a test that counts a window's requests
-- must not straddle two.
local function away_from_window_end(margin)
  local left = 60 - os.time() % 60
  if left < margin then os.execute(("sleep %d"):format(left + 1)) end
end

local function api_log(emu, prefix)
  local out = {}
  for _, e in ipairs(emu:log()) do
    if e.kind == "api" and e.path:sub(1, #prefix) == prefix then out[#out + 1] = e end
  end
  return out
end

describe("bulk work", function()
  local emu, key

  local function client(extra)
    local cfg = {org_url = emu.url, client_id = CLIENT_ID, private_key = key, ca_file = emu.ca_file,
                 scopes = "okta.users.read okta.users.manage okta.groups.read okta.logs.read", retry_base = 0.02}
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return assert(oktadpop.new(cfg))
  end

  setup(function()
    key = assert(oktadpop.generate_key("RS256", {kid = "bulk"}))
    emu = emulator.start{tls = true, config = {users = USERS, log_events = 25, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {key:public_jwk()}},
       scopes = {"okta.users.read", "okta.users.manage", "okta.groups.read", "okta.logs.read"}}}}}
  end)
  teardown(function() if emu then emu:stop() end end)
  before_each(function()
    emu:control{latency_ms = 0, rs_nonce = false, rate_limits = {}}
    emu:reset()
  end)

  describe("paginate", function()
    it("stops at the first empty page of a System Log polling query, whose next link never ends", function()
      local okta = client()
      local total = emu:state().log_events
      local n = 0
      for _ in okta:paginate("/api/v1/logs", {since = iso(os.time() - 7 * 86400), limit = 10}) do n = n + 1 end
      assert.equal(total, n)
      local pages = api_log(emu, "/api/v1/logs")
      assert.equal(math.ceil(total / 10) + 1, #pages) -- the pages with events, then one empty page
    end)

    it("fails at page k with err.next, and resuming there yields every user exactly once", function()
      local okta = client{max_retries = 0}
      local ids = {}
      local ok, err = pcall(function()
        for u in okta:paginate("/api/v1/users", {limit = 20}) do
          ids[#ids + 1] = u.id
          if #ids == 45 then -- inside page 3: page 4's request meets a gateway error
            emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html503", times = 1}}}
          end
        end
      end)
      assert.is_false(ok)
      assert.equal(503, err.status)
      assert.equal(60, #ids) -- the three pages handed out, not one item more
      assert.matches("^" .. emu.url:gsub("%p", "%%%0") .. "/api/v1/users%?.*after=", err.next)
      for u in okta:paginate("/api/v1/users", nil, {from = err.next}) do ids[#ids + 1] = u.id end
      local seen = {}
      for _, id in ipairs(ids) do
        assert.is_nil(seen[id], "yielded twice: " .. id)
        seen[id] = true
      end
      assert.equal(USERS, #ids)
      for i = 1, USERS do assert.is_true(seen[user_id(i)], user_id(i)) end
    end)
  end)

  describe("poll", function()
    it("sleeps interval after each empty page and hands out events as they arrive", function()
      local okta = client()
      -- three events arrive 1.2 s after polling starts
      os.execute(("(sleep 1.2; curl -s --cacert %s -X POST -H 'Content-Type: application/json' --data '{\"log_events\":3}' %s/__emulator/control >/dev/null) &")
        :format(util.shell_quote(emu.ca_file), util.shell_quote(emu.listen_url)))
      local events, t0 = {}, os.time()
      for e in okta:poll("/api/v1/logs", {since = iso(os.time()), interval = 0.3, max_items = 3, duration = 20}) do
        events[#events + 1] = e
      end
      assert.equal(3, #events)
      assert.is_true(os.time() - t0 < 15)
      local polls = api_log(emu, "/api/v1/logs")
      assert.is_true(#polls >= 3 and #polls <= 8, #polls .. " requests")
      for i = 2, #polls do
        assert.matches("after=", polls[i].query) -- the next link, not the first query again
        assert.is_true(polls[i].t - polls[i - 1].t >= 290, "polled again after " .. (polls[i].t - polls[i - 1].t) .. " ms")
      end
    end)

    it("stays inside its share of the logs bucket however short the interval", function()
      emu:control{rate_limits = {["/api/v1/logs"] = 20}} -- 8 a minute at max_capacity 0.4
      away_from_window_end(10)
      emu:reset()
      local okta = client{max_queue_wait = 1}
      local ok, err = pcall(function()
        for _ in okta:poll("/api/v1/logs", {since = iso(os.time()), interval = 0.1, duration = 6}) do end
      end)
      assert.is_false(ok) -- the budget ran out long before the duration
      assert.equal("ratelimit", err.kind)
      assert.is_string(err.next) -- where to go on from in the next window
      local stats = emu:stats()
      assert.equal(0, stats.count_429)
      assert.equal(8, stats.buckets["/api/v1/logs"].peak_used_by_client[CLIENT_ID])
      assert.equal(8, #api_log(emu, "/api/v1/logs"))
    end)
  end)

  describe("batch", function()
    local paths = {}
    for i = 1, 60 do paths[i] = "/api/v1/users/" .. user_id(i) end

    it("never has more than its concurrency in flight, over HTTP/2 streams", function()
      emu:control{latency_ms = 50}
      for _, conc in ipairs({6, 3}) do
        local okta = client{max_concurrency = 6}
        assert(okta:token())
        emu:reset()
        local results, failed = okta:batch(paths, {concurrency = conc})
        assert.equal(0, #failed)
        assert.equal(#paths, #results)
        local peak = emu:stats().in_flight_peak
        assert.is_true(peak <= conc and peak >= 2, "peak in flight " .. peak .. " for concurrency " .. conc)
        for _, e in ipairs(api_log(emu, "/api/v1/users")) do assert.equal("2.0", e.http_version) end
        okta:close()
      end
    end)

    it("keeps every result with its input; failures are listed to retry just those", function()
      local okta = client()
      local inputs = {user_id(1), "user2@example.com", "no-such-user", user_id(4), "a/b?c#d%e@f", false}
      local results, failed = okta:batch(inputs, {request = function(id)
        if not id then return {method = "GET", path = "/api/v1/users/with space"} end
        return "/api/v1/users/" .. oktadpop.escape(id)
      end})
      assert.equal(#inputs, #results)
      for i, r in ipairs(results) do
        assert.equal(i, r.index)
        assert.equal(inputs[i], r.input)
      end
      assert.is_true(results[1].ok)
      assert.equal(user_id(1), results[1].body.id)
      assert.equal("user2@example.com", results[2].body.profile.login)
      assert.equal(user_id(4), results[4].body.id)
      assert.equal(3, #failed)
      assert.equal(404, results[3].error.status)
      assert.equal("E0000007", results[3].error.code)
      assert.equal(404, results[5].error.status) -- one segment, never another path
      assert.equal("/api/v1/users/a%2Fb%3Fc%23d%25e%40f", api_log(emu, "/api/v1/users/a")[1].path)
      assert.is_nil(results[6].res) -- refused before anything was sent
      assert.matches("path", results[6].error.message)
      local indexes = {failed[1].index, failed[2].index, failed[3].index}
      table.sort(indexes) -- failed is in the order they completed
      assert.same({3, 5, 6}, indexes)
    end)

    it("maps a function over an iterator, each result to on_result as it completes", function()
      local okta = client()
      local got = {}
      local succeeded, failed = okta:batch(okta.users:list{limit = 30}, {concurrency = 4,
        request = function(u) return "/api/v1/users/" .. u.id .. "/groups" end,
        on_result = function(r) got[#got + 1] = r end})
      assert.equal(USERS, succeeded) -- streaming: counts, nothing kept
      assert.equal(0, failed)
      assert.equal(USERS, #got)
      for _, r in ipairs(got) do assert.equal(r.input.id, r.request.path:match("users/([^/]+)/groups")) end
    end)

    it("shares one token refresh among concurrent requests, through a 401, nonce challenges and a 429", function()
      local okta = client{max_retry_wait = 5}
      assert(okta:token())
      emu:reset()
      emu:control{expire_tokens = true, rs_nonce = true,
                  faults = {{path_prefix = "/api/v1/users/" .. user_id(7), kind = "rate_limit", times = 1, reset_in = 1}}}
      local results, failed = okta:batch(paths, {concurrency = 10})
      assert.equal(0, #failed, failed[1] and tostring(failed[1].error))
      assert.equal(#paths, #results)
      assert.equal(1, util.log_count(emu, "token", 200))
      local counts = {}
      for _, e in ipairs(api_log(emu, "/api/v1/users")) do counts[e.status] = (counts[e.status] or 0) + 1 end
      assert.equal(#paths, counts[200])
      assert.equal(1, counts[429])
      assert.is_true((counts[401] or 0) >= 1) -- revoked token and resource nonce challenges
    end)
  end)
end)

describe("bulk work in nginx (four workers, one shared dict) #nginx", function()
  local emu, dir, server, key

  setup(function()
    dir = util.sh("mktemp -d"):gsub("%s+$", "")
    key = assert(oktadpop.generate_key("RS256", {kid = "bulk-nginx"}))
    assert(key:save_pem(dir .. "/cc.pem", true))
    assert(assert(oktadpop.generate_key("ES256")):save_pem(dir .. "/dpop.pem", true))
    emu = emulator.start{tls = false, config = {users = 50, latency_ms = 100, log_events = 5, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {key:public_jwk()}}, scopes = {"okta.users.read", "okta.logs.read"}}}}}
    util.write(dir .. "/bulk_app.lua", ([[
local resty = require "oktadpop.resty"
local M = {}
function M.client()
  M.okta = M.okta or assert(resty.new{org_url = %q, client_id = %q, scopes = "okta.users.read okta.logs.read",
    private_key = %q, kid = "bulk-nginx", dpop_key = %q, shared_dict = "oktadpop",
    max_capacity = 0.4, max_concurrency = 4, max_queue_wait = 3})
  return M.okta
end
return M
]]):format(emu.url, CLIENT_ID, dir .. "/cc.pem", dir .. "/dpop.pem"))
    server = nginx.start{dir = dir, workers = 4, http = "lua_shared_dict oktadpop 1m;", server = [[
    location = /user { content_by_lua_block {
      local body, err = require("bulk_app").client():get("/api/v1/users/" .. ngx.var.arg_id)
      ngx.say(body and "ok" or err.kind)
    } }
    location = /batch { content_by_lua_block {
      local paths = {}
      for i = 1, 20 do paths[i] = ("/api/v1/users/00u%015d/groups"):format(i) end
      local results, failed = require("bulk_app").client():batch(paths, {concurrency = 4})
      ngx.say(#results, " ", #failed)
    } }
    location = /tail { content_by_lua_block {
      local dict, since = ngx.shared.oktadpop, os.date("!%Y-%m-%dT%H:%M:%SZ", ngx.time() - 7200)
      dict:set("tail_count", 0)
      dict:delete("tail_done")
      ngx.timer.at(0, function(premature)
        if premature then return end
        local ok, err = pcall(function()
          for _ in require("bulk_app").client():poll("/api/v1/logs", {since = since, interval = 0.3, duration = 2}) do
            dict:incr("tail_count", 1)
          end
        end)
        dict:set("tail_done", ok and "done" or tostring(err))
      end)
      ngx.say("started")
    } }
    location = /tail_count { content_by_lua_block {
      ngx.say(ngx.shared.oktadpop:get("tail_count"), " ", ngx.shared.oktadpop:get("tail_done") or "polling")
    } }
]]}
  end)
  teardown(function()
    if server then server:stop() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("runs a batch on light threads, never more than its concurrency in flight", function()
    emu:reset()
    assert.equal("20 0\n", util.sh("curl -s " .. server.url .. "/batch"))
    local peak = emu:stats().in_flight_peak
    assert.is_true(peak <= 4 and peak >= 2, "in flight peak " .. peak)
  end)

  it("polls the System Log from a timer without holding up the worker", function()
    emu:reset()
    assert.equal("started\n", util.sh("curl -s " .. server.url .. "/tail"))
    os.execute("sleep 0.8")
    local now = util.sh("curl -s -w ' %{time_total}' " .. server.url .. "/tail_count")
    local count, state, took = now:match("^(%d+) (%S+)\n ([%d.]+)$")
    assert.equal("5", count) -- the seeded events, then empty pages every 0.3 s
    assert.equal("polling", state)
    assert.is_true(tonumber(took) < 0.5, "answered in " .. took .. " s while the timer polls")
    os.execute("sleep 2")
    assert.equal("5 done\n", util.sh("curl -s " .. server.url .. "/tail_count"))
    local polls = {}
    for _, e in ipairs(emu:log()) do if e.path == "/api/v1/logs" then polls[#polls + 1] = e end end
    assert.is_true(#polls >= 4 and #polls <= 9, #polls .. " polls in 2 s")
    for i = 3, #polls do -- after the first, non-empty page: a sleep of interval before each poll
      assert.is_true(polls[i].t - polls[i - 1].t >= 280, "polled again after " .. (polls[i].t - polls[i - 1].t) .. " ms")
    end
  end)

  it("admits exactly max_capacity of the bucket and max_concurrency in flight, with no 429", function()
    -- GET /api/v1/users/{id}: 50 a minute, of which this app may use half (Okta's default
    -- share) and the clients 40 %: 20 requests, whichever worker sends them
    emu:control{rate_limits = {["GET /api/v1/users/{id}"] = 50}}
    away_from_window_end(15)
    emu:reset()
    local list = {}
    for i = 1, 40 do list[#list + 1] = ("url = \"%s/user?id=%s\""):format(server.url, user_id(i)) end
    util.write(dir .. "/urls.txt", table.concat(list, "\n") .. "\n")
    local out = util.sh("curl -s --no-progress-meter --parallel --parallel-max 40 -K " .. dir .. "/urls.txt")
    local _, ok = out:gsub("ok\n", "")
    local _, paced = out:gsub("ratelimit\n", "")
    assert.equal(20, ok)
    assert.equal(20, paced)
    local stats = emu:stats()
    print(("\nfour workers: %d admitted, %d paced; bucket peak %d of 50 (app share 25), in flight peak %d, 429s %d")
      :format(ok, paced, stats.buckets["GET /api/v1/users/{id}"].peak_used_by_client[CLIENT_ID], stats.in_flight_peak,
              stats.count_429))
    assert.equal(0, stats.count_429)
    assert.equal(20, stats.buckets["GET /api/v1/users/{id}"].peak_used_by_client[CLIENT_ID])
    assert.is_true(stats.in_flight_peak <= 4, "in flight peak " .. stats.in_flight_peak)
  end)
end)
