-- oktadpop.resty inside a real nginx (Debian's nginx + lua module, LuaJIT): listing users
-- with DPoP, not blocking the worker, one token for many workers, and the DPoP guard.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local util = require "spec.support.util"
local nginx = require "spec.support.nginx"

local CLIENT_ID = "0oanginx000000000001"

local sh, write = util.sh, util.write

-- Starts nginx with the given worker count; returns {url=, stop=}.
local function start_nginx(dir, emu, workers)
  local server = ([[
    location = /users { content_by_lua_block {
      local n = 0
      for _ in require("nginx_app").client():paginate("/api/v1/users", {limit = 200}) do n = n + 1 end
      ngx.say(n)
    } }
    location = /slow { content_by_lua_block {
      local body, err = require("nginx_app").client():get("/api/v1/groups", {limit = 1})
      ngx.say(body and "slow ok" or tostring(err))
    } }
    location = /fast { content_by_lua_block {
      local body, err = require("nginx_app").client():get("/api/v1/users/user1@example.com")
      ngx.say(body and body.profile.login or tostring(err))
    } }
    location = /scope { content_by_lua_block {
      local _, info = require("nginx_app").client(ngx.var.arg_s):token()
      ngx.say(info and info.scope or "none")
    } }
    location = /jtis { content_by_lua_block {
      local o = require "oktadpop"
      local key = o.generate_key("ES256")
      local claims = o.decode_jwt(o.dpop_proof(key, {htm = "GET", htu = "https://x.test/"}))
      ngx.say(ngx.worker.pid(), " ", claims.jti)
    } }
    location = /protected {
      access_by_lua_block {
        require("oktadpop.resty.guard").protect{jwks = "%s/jwks.json", issuer = "%s", audience = "%s",
          replay_dict = "replay", max_age = 60, leeway = 1, origin = ngx.var.scheme .. "://127.0.0.1:" .. ngx.var.server_port}
      }
      content_by_lua_block { ngx.say("hello ", ngx.ctx.oktadpop.claims.sub, " ", ngx.ctx.oktadpop.jkt) }
    }
]]):format(dir, emu.url, emu.url)
  local n = nginx.start{dir = dir, workers = workers, server = server, http = [[
  lua_shared_dict oktadpop 1m;
  lua_shared_dict replay 1m;
  # a proof in the master fills its jti pool before the fork: workers must not inherit it
  init_by_lua_block { local o = require "oktadpop"; o.dpop_proof(o.generate_key("ES256"), {htm = "GET", htu = "https://x.test/"}) }
]]}
  return {url = n.url, pid = n.pid, stop = function() n:stop() end}
end

-- Status and WWW-Authenticate of a curl request with extra headers.
local function curl(url, headers, method)
  local args = {"curl -s -o /dev/null -D - -X " .. (method or "GET")}
  for _, h in ipairs(headers or {}) do args[#args + 1] = "-H '" .. h .. "'" end
  args[#args + 1] = "'" .. url .. "'"
  local out = sh(table.concat(args, " "))
  return tonumber(out:match("^HTTP/%S+ (%d+)")), out:match("\n[Ww][Ww][Ww]%-[Aa]uthenticate: ([^\r\n]*)")
end

describe("oktadpop.resty in nginx #nginx", function()
  local emu, dir, server, cc_key, dpop_key

  local function count(kind, status) return util.log_count(emu, kind, status) end

  setup(function()
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
    dir = sh("mktemp -d"):gsub("%s+$", "")
    cc_key = assert(oktadpop.generate_key("RS256", {kid = "nginx-cc"}))
    dpop_key = assert(oktadpop.generate_key("ES256"))
    assert(cc_key:save_pem(dir .. "/cc.pem", true))
    assert(dpop_key:save_pem(dir .. "/dpop.pem", true))
    emu = emulator.start{tls = false, config = {users = 450, rate_limit = 100000, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {cc_key:public_jwk()}}, dpop_required = true,
       scopes = {"okta.users.read", "okta.groups.read"}}}}}
    write(dir .. "/jwks.json", sh("curl -s " .. emu.url .. "/oauth2/v1/keys"))
    write(dir .. "/nginx_app.lua", ([[
local resty = require "oktadpop.resty"
local M, clients = {}, {}
function M.client(scopes) -- one client per worker (and scopes); tokens are shared through the dict
  scopes = scopes or "okta.users.read okta.groups.read"
  if not clients[scopes] then
    clients[scopes] = assert(resty.new{org_url = %q, client_id = %q, scopes = scopes,
      private_key = %q, kid = "nginx-cc", dpop_key = %q, shared_dict = "oktadpop"})
  end
  return clients[scopes]
end
return M
]]):format(emu.url, CLIENT_ID, dir .. "/cc.pem", dir .. "/dpop.pem"))
  end)

  teardown(function()
    if server then server.stop() end
    if emu then emu:stop() end
    if dir and not os.getenv("OKTADPOP_KEEP_TMP") then os.execute("rm -rf " .. dir) end
  end)

  describe("with one worker", function()
    setup(function() server = start_nginx(dir, emu, 1) end)
    teardown(function() server.stop(); server = nil end)

    it("lists all users from the emulator with DPoP required", function()
      assert.equal("450\n", sh("curl -s " .. server.url .. "/users"))
      assert.equal(1, count("token", 200))
      for _, e in ipairs(emu:log()) do
        if e.kind == "api" then assert.equal("DPoP", e.auth_scheme) end
      end
    end)

    it("does not block: 50 requests finish while 5 wait on a 2 s delay", function()
      assert.equal("user1@example.com\n", sh("curl -s " .. server.url .. "/fast"))
      emu:control{faults = {{path_prefix = "/api/v1/groups", kind = "delay", delay_ms = 2000, times = 5}}}
      local urls = {}
      for _ = 1, 50 do urls[#urls + 1] = "'" .. server.url .. "/fast'" end
      local out = sh(([[
t0=$(date +%%s.%%N)
for i in 1 2 3 4 5; do curl -s %s/slow > %s/slow.$i & done
sleep 0.3
t1=$(date +%%s.%%N)
curl -s %s > %s/fast.out
t2=$(date +%%s.%%N)
wait
t3=$(date +%%s.%%N)
echo "$t1 $t2 $t0 $t3"
]]):format(server.url, dir, table.concat(urls, " "), dir))
      local t1, t2, t0, t3 = out:match("(%S+) (%S+) (%S+) (%S+)")
      local fast, slow = tonumber(t2) - tonumber(t1), tonumber(t3) - tonumber(t0)
      local fast_out = sh("cat " .. dir .. "/fast.out")
      local _, n = fast_out:gsub("user1@example.com", "")
      assert.equal(50, n)
      for i = 1, 5 do assert.equal("slow ok\n", sh("cat " .. dir .. "/slow." .. i)) end
      assert.is_true(slow >= 2)
      print(("\nnon-blocking: 50 fast requests took %.3f s while 5 slow ones took %.3f s (ratio %.3f)"):format(fast, slow, fast / slow))
      assert.is_true(fast / slow < 0.25)
    end)
  end)

  describe("with four workers and the shared dict", function()
    setup(function()
      emu:reset()
      server = start_nginx(dir, emu, 4)
    end)
    teardown(function() server.stop(); server = nil end)

    it("makes one token acquisition for 200 concurrent requests", function()
      local list = {}
      for _ = 1, 200 do list[#list + 1] = "url = \"" .. server.url .. "/fast\"" end
      write(dir .. "/urls.txt", table.concat(list, "\n") .. "\n")
      local out = sh("curl -s --no-progress-meter --parallel --parallel-max 25 -K " .. dir .. "/urls.txt")
      local _, n = out:gsub("user1@example.com", "")
      assert.equal(200, n)
      print(("\nshared token: %d token requests (%d successful) for 200 calls over 4 workers"):format(count("token"), count("token", 200)))
      assert.equal(1, count("token", 200))
      assert.is_true(count("token") <= 2) -- the use_dpop_nonce answer and the success
    end)

    it("never shares a token between clients whose scopes differ", function()
      emu:reset()
      for _ = 1, 3 do
        assert.equal("okta.users.read\n", sh("curl -s '" .. server.url .. "/scope?s=okta.users.read'"))
        assert.equal("okta.groups.read\n", sh("curl -s '" .. server.url .. "/scope?s=okta.groups.read'"))
      end
      assert.equal(2, count("token", 200)) -- one token per scope set, shared by the workers
    end)

    it("gives every worker its own jtis after the fork", function()
      local list = {}
      for _ = 1, 40 do list[#list + 1] = "url = \"" .. server.url .. "/jtis\"" end
      write(dir .. "/jtis.txt", table.concat(list, "\n") .. "\n")
      -- a connection per request (curl would reuse one when the machine is busy): the kernel
      -- spreads 40 connections over the workers (reuseport)
      local out = sh("curl -s --no-progress-meter --parallel --parallel-max 10 -H 'Connection: close' -K " .. dir .. "/jtis.txt")
      local pids, seen, n, workers = {}, {}, 0, 0
      for pid, jti in out:gmatch("(%d+) (%S+)") do
        if not pids[pid] then pids[pid] = true; workers = workers + 1 end
        assert.is_nil(seen[jti], "jti handed out twice: " .. jti)
        seen[jti], n = true, n + 1
      end
      assert.equal(40, n)
      assert.is_true(workers >= 2, "all 40 connections went to one worker")
    end)
  end)

  describe("the DPoP guard", function()
    local okta, token, url
    setup(function()
      server = start_nginx(dir, emu, 1)
      url = server.url .. "/protected"
      okta = assert(oktadpop.new{org_url = emu.url, client_id = CLIENT_ID, scopes = "okta.users.read",
        private_key = dir .. "/cc.pem", kid = "nginx-cc"})
      token = assert(okta:token())
    end)
    teardown(function() server.stop(); server = nil end)

    local function proof(over)
      local o = {htm = "GET", htu = url, access_token = token}
      for k, v in pairs(over or {}) do if k ~= "key" then o[k] = v end end
      return assert(oktadpop.dpop_proof(over and over.key or okta.dpop_key, o))
    end

    local function expect_denied(headers, code, method)
      local status, www = curl(url, headers, method)
      assert.equal(401, status)
      assert.is_string(www)
      assert.matches('^DPoP ', www)
      assert.matches('error="' .. code .. '"', www, 1, true)
    end

    it("lets a valid DPoP-bound call through with the claims in ngx.ctx", function()
      local out = sh(("curl -s -H 'Authorization: DPoP %s' -H 'DPoP: %s' '%s'"):format(token, proof(), url))
      assert.equal("hello " .. CLIENT_ID .. " " .. okta.dpop_key:thumbprint() .. "\n", out)
    end)

    it("rejects a missing proof", function()
      expect_denied({"Authorization: DPoP " .. token}, "invalid_dpop_proof")
    end)

    it("rejects a wrong htm", function()
      expect_denied({"Authorization: DPoP " .. token, "DPoP: " .. proof{htm = "POST"}}, "invalid_dpop_proof")
    end)

    it("rejects a wrong htu", function()
      expect_denied({"Authorization: DPoP " .. token, "DPoP: " .. proof{htu = server.url .. "/other"}}, "invalid_dpop_proof")
    end)

    it("rejects a replayed jti", function()
      local p = proof()
      assert.equal(200, (curl(url, {"Authorization: DPoP " .. token, "DPoP: " .. p})))
      expect_denied({"Authorization: DPoP " .. token, "DPoP: " .. p}, "invalid_dpop_proof")
    end)

    it("rejects a wrong ath", function()
      expect_denied({"Authorization: DPoP " .. token, "DPoP: " .. proof{access_token = "another-token"}}, "invalid_dpop_proof")
    end)

    it("rejects a proof by another key", function()
      expect_denied({"Authorization: DPoP " .. token, "DPoP: " .. proof{key = assert(oktadpop.generate_key())}}, "invalid_dpop_proof")
    end)

    it("rejects a token signed by a key outside the JWKS, under the JWKS's kid or another", function()
      local claims, header = oktadpop.decode_jwt(token)
      assert.equal(200, (curl(url, {"Authorization: DPoP " .. token, "DPoP: " .. proof()}))) -- its key is loaded
      for _, kid in ipairs({header.kid, "not-in-the-jwks"}) do
        local forged = assert(oktadpop.sign_jwt(assert(oktadpop.generate_key("RS256", {kid = kid})), claims))
        expect_denied({"Authorization: DPoP " .. forged, "DPoP: " .. proof{access_token = forged}}, "invalid_token")
      end
    end)

    it("rejects a Bearer-scheme use of a DPoP token", function()
      expect_denied({"Authorization: Bearer " .. token, "DPoP: " .. proof()}, "invalid_token")
    end)

    it("rejects an expired token", function()
      emu:control{token_lifetime = 1}
      local short = assert(oktadpop.new{org_url = emu.url, client_id = CLIENT_ID, scopes = "okta.users.read",
        private_key = dir .. "/cc.pem", kid = "nginx-cc", renew_skew = 0})
      local t = assert(short:token())
      emu:control{token_lifetime = 3600}
      os.execute("sleep 3.2") -- whole seconds on both sides: exp + leeway (1 s) is surely past
      local p = assert(oktadpop.dpop_proof(short.dpop_key, {htm = "GET", htu = url, access_token = t}))
      expect_denied({"Authorization: DPoP " .. t, "DPoP: " .. p}, "invalid_token")
    end)
  end)
end)
