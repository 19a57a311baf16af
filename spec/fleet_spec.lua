-- A fleet on one Redis, on real processes: two nginx nodes of two workers each and plain-Lua
-- job processes share one token, one rate budget and one replay cache through a private
-- redis-server; and the faults: Redis killed, restarted, slow, or refusing the password.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local emulator = require "spec.support.emulator"
local nginx = require "spec.support.nginx"
local redis = require "spec.support.redis"
local util = require "spec.support.util"

local CLIENT_ID = "0oafleet000000000001"
local SCOPES = "okta.users.read okta.groups.manage"
local ORIGIN = "https://api.example.com" -- both nodes serve this origin, behind one balancer
local LUA = jit and "luajit" or "lua5.4" -- job processes run on this suite's interpreter and build
local sh = util.sh

describe("a fleet on Redis", function()
  local dir, emu, r, key, dpop

  setup(function()
    dir = sh("mktemp -d"):gsub("%s+$", "")
    key = assert(oktadpop.generate_key("RS256", {kid = "fleet"}))
    dpop = assert(oktadpop.generate_key("ES256"))
    assert(key:save_pem(dir .. "/cc.pem", true))
    assert(dpop:save_pem(dir .. "/dpop.pem", true)) -- one DPoP key for every node: the token is bound to it
    emu = emulator.start{tls = false, config = {users = 60, groups = 3, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {key:public_jwk()}}, scopes = {"okta.users.read", "okta.groups.manage"}}}}}
    util.write(dir .. "/jwks.json", sh("curl -s " .. emu.url .. "/oauth2/v1/keys"))
    r = redis.start{requirepass = "fleet pass"}
  end)
  teardown(function()
    if r then r:stop() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function redis_url() return "redis://:fleet%20pass@127.0.0.1:" .. r.port end

  -- A node: nginx with two workers, its client and guard on the shared Redis.
  local function node(name)
    local ndir = dir .. "/" .. name
    os.execute("mkdir -p " .. ndir)
    util.write(ndir .. "/fleet_app.lua", ([[
local resty = require "oktadpop.resty"
local M = {}
M.store = assert(resty.redis_store{url = %q, timeout = 0.5})
function M.client()
  M.okta = M.okta or assert(resty.new{org_url = %q, client_id = %q, scopes = %q, private_key = %q, kid = "fleet",
    dpop_key = %q, store = M.store})
  return M.okta
end
M.guard = {jwks = %q, issuer = %q, audience = %q, replay_store = M.store, origin = %q, max_age = 60, leeway = 2}
return M
]]):format(redis_url(), emu.url, CLIENT_ID, SCOPES, dir .. "/cc.pem", dir .. "/dpop.pem", dir .. "/jwks.json",
           emu.url, emu.url, ORIGIN))
    return nginx.start{dir = ndir, workers = 2, server = [[
      location = /users { content_by_lua_block {
        local body, err = require("fleet_app").client():get("/api/v1/users", {limit = 1})
        ngx.say(body and "ok" or tostring(err))
      } }
      location = /protected {
        access_by_lua_block { require("oktadpop.resty.guard").protect(require("fleet_app").guard) }
        content_by_lua_block { ngx.say("hello ", ngx.ctx.oktadpop.claims.sub) }
      }
      location = /stats { content_by_lua_block { ngx.say(require("cjson").encode(require("fleet_app").client().stats)) } }
    ]]}
  end

  -- A plain-Lua job process: the script's output, decoded.
  local function job(script)
    local file = dir .. "/job-" .. tostring(math.random(1e9)) .. ".lua"
    util.write(file, ("package.path = %q\npackage.cpath = %q\n"):format(package.path, package.cpath) .. script)
    return file
  end

  local function client_config()
    return ("{org_url = %q, client_id = %q, scopes = %q, private_key = %q, kid = 'fleet', dpop_key = %q, "
      .. "store = assert(require('oktadpop').redis_store{url = %q, timeout = 0.5}), retry_base = 0.01}")
      :format(emu.url, CLIENT_ID, SCOPES, dir .. "/cc.pem", dir .. "/dpop.pem", redis_url())
  end

  local function status(url, headers)
    local args = {"curl -s -o /dev/null -w '%{http_code}' --max-time 10"}
    for _, h in ipairs(headers or {}) do args[#args + 1] = "-H '" .. h .. "'" end
    args[#args + 1] = "'" .. url .. "'"
    return tonumber(sh(table.concat(args, " ")))
  end

  describe("two nginx nodes #nginx", function()
    local a, b, token
    setup(function()
      r:cli("FLUSHALL")
      a, b = node("a"), node("b")
    end)
    teardown(function()
      if a then a:stop() end
      if b then b:stop() end
    end)

    it("make one token request for 200 calls spread over both", function()
      emu:reset()
      local urls = {}
      for i = 1, 100 do urls[#urls + 1] = "'" .. a.url .. "/users' '" .. b.url .. "/users'" end
      local out = sh("curl -s --parallel --parallel-max 20 " .. table.concat(urls, " "))
      local _, oks = out:gsub("ok\n", "")
      assert.equal(200, oks)
      assert.equal(1, util.log_count(emu, "token", 200))
    end)

    it("refuse on node B a proof node A accepted", function()
      local okta = assert(oktadpop.new{org_url = emu.url, client_id = CLIENT_ID, scopes = SCOPES, private_key = key,
                                       dpop_key = dpop})
      token = assert(okta:token())
      -- the first record after FLUSHALL starts the replay data's epoch: a proof made in the second
      -- before it is refused as "predates" (it could have been seen before the data was lost)
      local warm = assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = ORIGIN .. "/protected", access_token = token}))
      status(a.url .. "/protected", {"Authorization: DPoP " .. token, "DPoP: " .. warm})
      os.execute("sleep 1")
      local proof = assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = ORIGIN .. "/protected", access_token = token}))
      local headers = {"Authorization: DPoP " .. token, "DPoP: " .. proof}
      assert.equal(200, status(a.url .. "/protected", headers))
      assert.equal(401, status(b.url .. "/protected", headers))
      assert.equal(401, status(a.url .. "/protected", headers))
      local fresh = assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = ORIGIN .. "/protected", access_token = token}))
      assert.equal(200, status(b.url .. "/protected", {"Authorization: DPoP " .. token, "DPoP: " .. fresh}))
      okta:close()
    end)

    it("fail closed when Redis is gone (503, JSON), and recover when it is back, refusing older proofs", function()
      local proof_before = assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = ORIGIN .. "/protected",
                                                               access_token = token, iat = os.time() - 5}))
      r:kill()
      local out = sh(("curl -s -i --max-time 10 -H 'Authorization: DPoP %s' -H 'DPoP: %s' '%s/protected'")
        :format(token, proof_before, a.url))
      assert.matches("^HTTP/1.1 503", out)
      assert.matches("\r\nContent%-Type: application/json", out)
      assert.matches('"error":"temporarily_unavailable"', out, 1, true)
      assert.is_nil(out:find("fleet pass", 1, true))
      r:restart() -- every key is lost: a proof made before that could have been seen
      assert.equal(401, status(a.url .. "/protected", {"Authorization: DPoP " .. token, "DPoP: " .. proof_before}))
      os.execute("sleep 1")
      local fresh = assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = ORIGIN .. "/protected", access_token = token}))
      assert.equal(200, status(b.url .. "/protected", {"Authorization: DPoP " .. token, "DPoP: " .. fresh}))
    end)
  end)

  -- README, "Running a fleet", step 3: its Lua block as written, with the keys where the spec
  -- keeps them; the nginx half in a node's init_worker, the job-host half in a process
  it("runs the README's store code as pasted: a node and a job host on one token #nginx", function()
    r:cli("FLUSHALL")
    emu:reset()
    local readme = util.readfile("README.md")
    local section = readme:match("\n## Running a fleet\n(.-)\n## ")
    local block = assert(section:match("```lua\n(.-)```"), "the fleet section's Lua block")
    block = block:gsub("\n   ", "\n"):gsub("^   ", ""):gsub("/etc/oktadpop/", dir .. "/")
    local node_part, job_part = block:match("^(.-)(%-%- a job host.*)$")
    assert.truthy(node_part and job_part, "the block has a nginx half and a job-host half")
    local ndir = dir .. "/readme-node"
    os.execute("mkdir -p " .. ndir)
    util.write(ndir .. "/readme_fleet.lua", node_part .. "\nreturn okta\n")
    local env = {OKTA_REDIS_URL = redis_url(), OKTA_ORG_URL = emu.url, OKTA_CLIENT_ID = CLIENT_ID}
    local main = {}
    for k, v in pairs(env) do main[#main + 1] = ("env %s=%s;"):format(k, v) end
    local n = nginx.start{dir = ndir, workers = 2, main = table.concat(main, " "),
      http = [[init_worker_by_lua_block { package.loaded.readme_okta = require("readme_fleet") }]], server = [[
      location = /users { content_by_lua_block {
        local body, err = package.loaded.readme_okta:get("/api/v1/users", {limit = 1})
        ngx.say(body and "ok" or tostring(err))
      } }]]}
    local out = sh(("curl -s '%s/users' '%s/users'"):format(n.url, n.url))
    local log = n:error_log()
    n:stop()
    assert.equal("ok\nok\n", out, log)
    local script = job(job_part .. [[
local body = assert(okta:get("/api/v1/users", {limit = 1}))
print(#body, okta.stats.store)
]])
    local shell_env = {}
    for k, v in pairs(env) do shell_env[#shell_env + 1] = ("%s='%s'"):format(k, v) end
    local job_out = sh(("%s OKTA_SCOPES='okta.users.read' OKTA_CC_PRIVATE_KEY_FILE=%s/cc.pem "
      .. "OKTA_DPOP_PRIVATE_KEY_FILE=%s/dpop.pem %s %s 2>&1"):format(table.concat(shell_env, " "), dir, dir, LUA, script))
    assert.equal("1\tshared\n", job_out)
    assert.equal(1, util.log_count(emu, "token", 200)) -- the node's workers and the job: one token
  end)

  it("makes from_env's store from OKTA_REDIS_URL, and names the variable when it is wrong #once", function()
    r:cli("FLUSHALL")
    emu:reset()
    local base = ("OKTA_ORG_URL=%s OKTA_CLIENT_ID=%s OKTA_SCOPES='%s' OKTA_CC_PRIVATE_KEY_FILE=%s/cc.pem OKTA_CLIENT_KEYID=fleet "
      .. "OKTA_DPOP_PRIVATE_KEY_FILE=%s/dpop.pem"):format(emu.url, CLIENT_ID, SCOPES, dir, dir)
    local script = job([[
local okta, err = require("oktadpop").from_env()
if not okta then print(err.kind, err.message) return end
assert(okta:get("/api/v1/users", {limit = 1}))
print(okta.stats.store)
]])
    local url = redis_url()
    assert.equal("shared\nshared\n", sh(("%s OKTA_REDIS_URL='%s' %s %s; %s OKTA_REDIS_URL='%s' %s %s")
      :format(base, url, LUA, script, base, url, LUA, script)))
    assert.equal(1, util.log_count(emu, "token", 200)) -- the second process found the first's token
    local bad = sh(("%s OKTA_REDIS_URL='redis://:secret@127.0.0.1:notaport' %s %s"):format(base, LUA, script))
    assert.matches("^config\tOKTA_REDIS_URL: redis_store: ", bad)
    assert.is_nil(bad:find("secret", 1, true))
  end)

  it("keeps two job processes on one bucket at max_capacity together, with no 429 #once", function()
    r:cli("FLUSHALL")
    emu:reset()
    emu:control{rate_window_seconds = 2, rate_limits = {["GET /api/v1/users/{id}"] = 50}}
    local script = job(([[
local okta = assert(require("oktadpop").new(%s))
local reqs = {}
for i = 1, 30 do reqs[i] = ("/api/v1/users/00u%%015d"):format(i) end
local _, failed = okta:batch(reqs, {concurrency = 5})
print(#failed, okta.stats.store, okta.stats.store_fallbacks)
]]):format(client_config()))
    local out = sh(("%s %s > %s/j1.out 2>&1 & %s %s > %s/j2.out 2>&1 & wait; cat %s/j1.out %s/j2.out")
      :format(LUA, script, dir, LUA, script, dir, dir, dir))
    emu:control{rate_window_seconds = emulator.null, rate_limits = {}}
    assert.equal("0\tshared\t0\n0\tshared\t0\n", out)
    local users = emu:stats().buckets["GET /api/v1/users/{id}"]
    assert.equal(0, users.count_429)
    assert.is_true(users.peak_used <= 20, ("the pair used %d of a window's 50"):format(users.peak_used))
    print(("\ntwo job processes on one Redis: 60 reads, window peak %d of 50 (40 %% is 20), 0 429s"):format(users.peak_used))
  end)

  it("finishes a batch when Redis dies mid-run, nothing lost and no item done twice, and goes back to it #once", function()
    r:cli("FLUSHALL")
    emu:reset()
    emu:control{latency_ms = 40}
    local script = job(([[
local okta = assert(require("oktadpop").new(%s))
local n = 0
local ok_count, failed = okta:batch(function()
  n = n + 1
  if n == 15 then os.execute("touch %s/kill-now") end
  if n > 60 then return nil end
  return {method = "PUT", path = ("/api/v1/groups/00g000000000000003/users/00u%%015d"):format(n)}
end, {concurrency = 4, on_result = function() end})
print(ok_count, failed, okta.stats.store_fallbacks, okta.stats.store)
]]):format(client_config(), dir))
    os.remove(dir .. "/kill-now")
    local out = sh(("%s %s > %s/job.out 2>&1 & pid=$!; "
      .. "while [ ! -f %s/kill-now ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done; "
      .. "kill -9 %s; wait $pid; cat %s/job.out"):format(LUA, script, dir, dir, r.pid, dir))
    emu:control{latency_ms = 0}
    local oks, failed, fallbacks, store = out:match("(%d+)\t(%d+)\t(%d+)\t(%a+)\n$")
    assert.matches("on the in-process store at a quarter of the share", out, 1, true) -- said once, on stderr
    assert.equal("60", oks, out)
    assert.equal("0", failed)
    assert.equal("1", fallbacks)
    assert.equal("fallback", store)
    local seen = {}
    for _, e in ipairs(emu:log()) do
      if e.kind == "api" then
        assert.is_nil(seen[e.path], "done twice: " .. e.path)
        seen[e.path] = true
      end
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(60, n)
    r:restart()
    -- back on Redis once it answers again (tried every 5 s)
    local back = sh(LUA .. " " .. job(([[
local okta = assert(require("oktadpop").new(%s))
assert(okta:get("/api/v1/users", {limit = 1}))
print(okta.stats.store, okta.stats.store_fallbacks)
]]):format(client_config())))
    assert.equal("shared\t0\n", back)
  end)

  it("never waits past its timeout for a slow Redis, and never shows the password", function()
    local store = assert(oktadpop.redis_store{url = redis_url(), timeout = 0.3})
    assert.is_nil(tostring(store):find("fleet", 1, true))
    assert.truthy(store:set("probe", "1"))
    r:pause(2, "sleep")
    local t0 = oktadpop.libcurl.clock()
    local v, err = store:get("probe")
    local took = oktadpop.libcurl.clock() - t0
    assert.is_nil(v)
    assert.equal("store", err.kind)
    assert.is_true(took < 1, ("waited %.2f s"):format(took))
    assert.is_nil(tostring(err):find("fleet pass", 1, true))
    os.execute("sleep 2")
    local okta = assert(oktadpop.new{org_url = emu.url, client_id = CLIENT_ID, scopes = SCOPES, private_key = key,
      store = assert(oktadpop.redis_store{url = redis_url(), timeout = 0.3}), store_fallback = false})
    r:pause(1.5, "sleep")
    local body, cerr = okta:get("/api/v1/users", {limit = 1})
    assert.is_nil(body)
    assert.equal("store", cerr.kind)
    os.execute("sleep 1.5")
    local bad = assert(oktadpop.redis_store{url = "redis://:wrong@127.0.0.1:" .. r.port, timeout = 0.5})
    local _, aerr = bad:get("x")
    assert.matches("AUTH: refused", aerr.message, 1, true)
    assert.is_nil(aerr.message:find("wrong", 1, true))
  end)
end)
