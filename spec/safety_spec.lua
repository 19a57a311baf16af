-- Safety round three, in both drivers: a path with a dot segment is refused before anything is
-- sent (so factors:reset(user, "..") can never reach the user itself), a Link cycle ends a page
-- walk, a batch callback that raises gives back every slot it held, and a streaming batch keeps
-- nothing. The same scenario code (SCENARIOS below) runs in this process over libcurl and in a
-- real nginx over cosockets.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local responder = require "spec.support.responder"
local nginx = require "spec.support.nginx"
local drivers = require "spec.support.drivers"
local util = require "spec.support.util"

local CLIENT_ID = "0oasafety00000000001"
local SCOPES = "okta.users.read okta.users.manage okta.groups.manage okta.apps.manage"

-- Each scenario takes a client and a clock and answers a JSON-able table.
local SCENARIOS = [==[
local M = {}

local function outcome(value, err)
  return {ok = value ~= nil, kind = err and err.kind, message = err and err.message}
end

function M.dot_segments(okta)
  local u = "00u000000000000001"
  return {
    factors_reset = outcome(okta.factors:reset(u, "..")),
    factors_reset_percent = outcome(okta.factors:reset(u, "%2e%2E")),
    groups_remove = outcome(okta.groups:remove("00g000000000000001", "..")),
    apps_unassign = outcome(okta.apps:unassign("0oa000000000000003", "..")),
    users_get_dot = outcome(okta.users:get(".")),
    raw_delete = outcome(okta:delete("/api/v1/users/" .. u .. "/factors/.%2e")),
    raw_get_middle = outcome(okta:get("/api/v1/users/./" .. u)),
    escaped_slash = outcome(okta.users:get("x/../../groups")),
    plain = outcome(okta.users:get(u)),
  }
end

function M.link_cycle(okta)
  local ids = {}
  local ok, err = pcall(function()
    for u in okta:paginate("/api/v1/users", {limit = 2}) do ids[#ids + 1] = u.id end
  end)
  return {ids = ids, ok = ok, kind = not ok and err.kind, next = not ok and err.next, message = not ok and err.message}
end

-- A batch whose callback raises (on_result, or request), three times, each followed by one
-- call that must go out at once: no slot may stay taken.
function M.raising_callbacks(okta, now)
  local rounds = {}
  for round = 1, 3 do
    local n, reqs = 0, {}
    for i = 1, 25 do reqs[i] = ("/api/v1/users/00u%015d"):format(i) end
    local opts = {concurrency = 5}
    if round % 2 == 1 then
      opts.on_result = function() n = n + 1; if n == 3 then error("on_result raised") end end
    else
      opts.request = function(p) n = n + 1; if n == 7 then error("request raised") end return p end
    end
    local ok, err = pcall(okta.batch, okta, reqs, opts)
    local t0 = now()
    local body, gerr = okta:get("/api/v1/users", {limit = 1})
    rounds[round] = {raised = not ok and tostring(err):match("[%w_]+ raised"), after_ok = body ~= nil,
                     after_err = gerr and tostring(gerr), after_s = now() - t0}
  end
  return rounds
end

return M
]==]

local function collect_api(emu)
  local n = 0
  for _, e in ipairs(emu:log()) do if e.kind == "api" then n = n + 1 end end
  return n
end

describe("safety round three", function()
  local runner, dir, key, key_path, dpop_path

  setup(function()
    runner = drivers.new{name = "safety", source = SCENARIOS, client_id = CLIENT_ID, scopes = SCOPES}
    dir, key, key_path, dpop_path = runner.dir, runner.key, runner.key_path, runner.dpop_path
  end)
  teardown(function() if runner then runner:close() end end)

  -- Runs scenario `name` in this driver against org_url, with these options over the defaults.
  local function run(driver, name, org_url, extra)
    local cfg = {org_url = org_url}
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return runner:run(driver, name, cfg)
  end

  describe("against the emulator", function()
    local emu
    setup(function()
      emu = emulator.start{tls = false, config = {users = 30, groups = 3, clients = {
        {client_id = CLIENT_ID, jwks = {keys = {key:public_jwk()}}, scopes = {"okta.users.read", "okta.users.manage",
          "okta.groups.manage", "okta.apps.manage"}}}}}
    end)
    teardown(function() if emu then emu:stop() end end)
    before_each(function() emu:control{latency_ms = 0}; emu:reset() end)

    for _, driver in ipairs({"libcurl", "nginx"}) do
      it("refuses every path with a dot segment before sending anything (" .. driver .. ")" .. (driver == "nginx" and " #nginx" or ""), function()
        local r = run(driver, "dot_segments", emu.url)
        for _, name in ipairs({"factors_reset", "groups_remove", "apps_unassign",
                               "users_get_dot", "raw_delete", "raw_get_middle", "escaped_slash"}) do
          assert.is_false(r[name].ok, name)
          assert.equal("config", r[name].kind, name)
          assert.truthy(r[name].message:find("dot segment", 1, true), name)
        end
        assert.truthy(r.factors_reset.message:find('(".." in /api/v1/users/00u000000000000001/factors/..)', 1, true))
        assert.truthy(r.raw_delete.message:find('(".%2e" in', 1, true)) -- an escaped dot, named as written
        assert.equal("http", r.factors_reset_percent.kind) -- "%2e%2E" is an id: escaped, sent, not found
        assert.is_true(r.plain.ok)
        local sent = {}
        for _, e in ipairs(emu:log()) do if e.kind == "api" then sent[#sent + 1] = e.method .. " " .. e.path end end
        assert.same({"DELETE /api/v1/users/00u000000000000001/factors/%252e%252E", "GET /api/v1/users/00u000000000000001"},
                    sent) -- only the id with % and the plain call went out
      end)

      it("gives back every slot when a batch callback raises, so the next call goes out at once (" .. driver .. ")" ..
        (driver == "nginx" and " #nginx" or ""),
        function()
          emu:control{latency_ms = 40}
          local rounds = run(driver, "raising_callbacks", emu.url, {max_concurrency = 5, max_queue_wait = 3})
          for i, r in ipairs(rounds) do
            assert.equal(i % 2 == 1 and "on_result raised" or "request raised", r.raised)
            assert.is_true(r.after_ok, r.after_err)
            assert.is_true(r.after_s < 1.5, ("round %d: the next call waited %.2f s"):format(i, r.after_s))
          end
          assert.is_true(collect_api(emu) < 3 * 25 + 3) -- the batches stopped taking inputs
        end)
    end

    it("gives back every slot when a batch callback raises out of the request handler (nginx) #nginx", function()
      emu:control{latency_ms = 60}
      local server = nginx.start{dir = dir, http = "lua_shared_dict oktadpop 1m;", server = ([[
        location /raise { content_by_lua_block {
          local okta = require("safety_client")(%q, %q, %q, %q, %q)
          local n, reqs = 0, {}
          for i = 1, 25 do reqs[i] = ("/api/v1/users/00u%%015d"):format(i) end
          okta:batch(reqs, {concurrency = 5, on_result = function() n = n + 1; if n == 2 then error("on_result raised") end end})
        } }
        location /get { content_by_lua_block {
          local okta = require("safety_client")(%q, %q, %q, %q, %q)
          ngx.update_time()
          local t0 = ngx.now()
          local body, err = okta:get("/api/v1/users", {limit = 1})
          ngx.update_time()
          ngx.say(body and "ok" or tostring(err), " ", ngx.now() - t0)
        } }
      ]]):format(emu.url, CLIENT_ID, SCOPES, key_path, dpop_path, emu.url, CLIENT_ID, SCOPES, key_path, dpop_path)}
      util.write(dir .. "/safety_client.lua", [[
        local clients = {}
        return function(org_url, client_id, scopes, key_path, dpop_path)
          clients[1] = clients[1] or assert(require("oktadpop.resty").new{org_url = org_url, client_id = client_id,
            scopes = scopes, private_key = key_path, dpop_key = dpop_path, shared_dict = "oktadpop",
            max_concurrency = 5, max_queue_wait = 3})
          return clients[1]
        end
      ]])
      local answers = {}
      for round = 1, 3 do
        local status = util.sh("curl -s -o /dev/null -w '%{http_code}' --max-time 60 " .. server.url .. "/raise")
        answers[round] = {status = status, get = util.sh("curl -s --max-time 60 " .. server.url .. "/get")}
      end
      local log = server:error_log()
      server:stop()
      for round, a in ipairs(answers) do
        assert.equal("500", a.status)
        local ok, seconds = a.get:match("^(%S+) (%S+)")
        assert.equal("ok", ok, a.get)
        assert.is_true(tonumber(seconds) < 1.5, ("round %d: the next call waited %s s"):format(round, seconds))
      end
      assert.truthy(log:find("on_result raised", 1, true))
    end)
  end)

  for _, driver in ipairs({"libcurl", "nginx"}) do
    it("ends a page walk whose next links cycle A -> B -> A, with err.next (" .. driver .. ")" ..
      (driver == "nginx" and " #nginx" or ""), function()
      local r = responder.start{script = {
        {status = 200, body = {token_type = "DPoP", access_token = "AT", expires_in = 3600, scope = SCOPES}},
        {status = 200, headers = {Link = '<$BASE/api/v1/users?after=b&limit=2>; rel="next"'}, body = {{id = "a1"}, {id = "a2"}}},
        {status = 200, headers = {Link = '<$BASE/api/v1/users?limit=2>; rel="next"'}, body = {{id = "b1"}, {id = "b2"}}},
      }}
      local result = run(driver, "link_cycle", r.url)
      local requests = #r:requests()
      r:stop()
      assert.same({"a1", "a2", "b1", "b2"}, result.ids)
      assert.is_false(result.ok)
      assert.equal("limit", result.kind)
      assert.equal(r.url .. "/api/v1/users?limit=2", result.next)
      assert.truthy(result.message:find("already handed out", 1, true))
      assert.equal(3, requests) -- the token, then A and B: A was never asked for again
    end)
  end

  it("keeps nothing of a streaming batch: 1,500 failures with 200 KB bodies, flat Lua heap", function()
    local server = nginx.start{dir = dir, http = "", server = [[
      location = /oauth2/v1/token { content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.say('{"token_type":"DPoP","access_token":"AT","expires_in":3600,"scope":"okta.users.read"}')
      } }
      location /api/ { content_by_lua_block {
        big = big or string.rep("x", 200 * 1024)
        ngx.status = 400
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"errorCode":"E0000001","errorSummary":"Api validation failed","errorCauses":[{"errorSummary":"', big, '"}]}')
      } }
    ]]}
    local okta = assert(oktadpop.new{org_url = server.url, client_id = CLIENT_ID, scopes = "okta.users.read",
                                     private_key = key, max_concurrency = 10})
    local inputs, seen, failed_seen = {}, 0, 0
    for i = 1, 1500 do inputs[i] = "/api/v1/users/" .. i end
    collectgarbage("collect")
    local before = collectgarbage("count")
    local ok_count, failed_count = okta:batch(inputs, {on_result = function(r)
      seen = seen + 1
      if not r.ok then failed_seen = failed_seen + 1 end
    end})
    collectgarbage("collect")
    local grown = (collectgarbage("count") - before) / 1024
    server:stop()
    assert.equal(1500, seen)
    assert.equal(1500, failed_seen)
    assert.equal(0, ok_count)
    assert.equal(1500, failed_count)
    print(("\nstreaming batch: 1,500 failures of 200 KB, Lua heap grew %.2f MB"):format(grown))
    assert.is_true(grown < 20, ("the Lua heap grew %.1f MB"):format(grown))
  end)
end)
