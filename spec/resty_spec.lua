-- oktadpop.resty and its guard in a real nginx (LuaJIT), against what an attacker or a broken
-- server does: an upstream whose chunk framing, trailers, lengths or interim answers never end
-- or lie must end in a clear error within the request's deadline, never in a worker crash; and
-- the guard must take its origin from configuration only, see every DPoP header, and remember
-- a proof's jti for as long as the proof could be accepted.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local responder = require "spec.support.responder"
local nginx = require "spec.support.nginx"
local util = require "spec.support.util"

local sh, write = util.sh, util.write

local function fetch(url, headers)
  local args = {"curl -s --max-time 60 -o - -w '\\n%{http_code}'"}
  for _, h in ipairs(headers or {}) do args[#args + 1] = "-H '" .. h .. "'" end
  args[#args + 1] = "'" .. url .. "'"
  local out = sh(table.concat(args, " "))
  local body, code = out:match("^(.*)\n(%d+)$")
  return tonumber(code), body
end

describe("oktadpop.resty against hostile upstreams, in nginx #nginx", function()
  local dir, raw, server

  setup(function()
    dir = sh("mktemp -d"):gsub("%s+$", "")
    raw = responder.start{}
    assert(assert(oktadpop.generate_key("RS256")):save_pem(dir .. "/cc.pem", true))
    assert(assert(oktadpop.generate_key("ES256")):save_pem(dir .. "/dpop.pem", true))
    write(dir .. "/hostile_app.lua", ([[
local M, client = {}, nil
function M.get(path)
  client = client or assert(require("oktadpop.resty").new{org_url = %q, client_id = "0oahostile", scopes = "s",
    private_key = %q, dpop_key = %q, timeout = 3, max_retries = 0, max_body = 65536})
  local t0 = ngx.now()
  local ok, body, err = pcall(client.get, client, path)
  ngx.update_time()
  ngx.say(require("cjson").encode{raised = not ok and tostring(body) or nil, ok = ok and body ~= nil,
    kind = err and err.kind, message = err and err.message, elapsed = ngx.now() - t0})
end
return M
]]):format(raw.url, dir .. "/cc.pem", dir .. "/dpop.pem"))
    server = nginx.start{dir = dir, server = [[
      location = /get { content_by_lua_block { require("hostile_app").get(ngx.var.arg_path) } }
    ]]}
  end)

  teardown(function()
    if server then server:stop() end
    if raw then raw:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function get(path)
    local code, body = fetch(server.url .. "/get?path=" .. path)
    assert.equal(200, code, body)
    return cjson.decode(body)
  end

  local function worker_alive()
    assert.is_nil(server:error_log():match("exited on signal"), "a worker crashed")
    assert.is_nil(server:error_log():match("atpanic"), "the Lua VM panicked")
  end

  it("ends a chunk-size line that never ends at 1 KiB, at once, and the worker lives", function()
    local r = get("/endless-chunk-size")
    assert.is_nil(r.raised)
    assert.equal("network", r.kind)
    assert.matches("longer than 1024 bytes", r.message, 1, true)
    assert.is_true(r.elapsed < 1.5, r.elapsed)
    worker_alive()
  end)

  it("ends trailers that never end at 16 KiB", function()
    local r = get("/endless-trailers")
    assert.is_nil(r.raised)
    assert.matches("trailers longer than", r.message, 1, true)
    worker_alive()
  end)

  it("holds one deadline for the whole request: headers or a body trickled a byte at a time", function()
    for _, path in ipairs({"/trickle-head", "/trickle"}) do
      local r = get(path)
      assert.is_nil(r.raised)
      assert.equal("timeout", r.kind, r.message)
      assert.is_true(r.elapsed >= 2.9 and r.elapsed < 4, path .. " took " .. r.elapsed)
    end
  end)

  it("refuses a negative or hex Content-Length as an error, not a raise", function()
    for _, path in ipairs({"/negative-length", "/hex-length"}) do
      local r = get(path)
      assert.is_nil(r.raised)
      assert.equal("network", r.kind)
      assert.matches("malformed Content-Length", r.message, 1, true)
    end
  end)

  it("skips a 100 Continue for the final answer, and gives up on an endless row of them", function()
    assert.is_true(get("/continue-100").ok)
    local r = get("/many-continue")
    assert.matches("too many interim", r.message, 1, true)
    worker_alive()
  end)
end)

describe("the guard's own defences, in nginx #nginx", function()
  local dir, server, key, token, jkt, as
  local ISSUER, AUD = "https://issuer.test/oauth2/default", "api://test"

  setup(function()
    dir = sh("mktemp -d"):gsub("%s+$", "")
    as = assert(oktadpop.generate_key("ES256", {kid = "as1"}))
    key = assert(oktadpop.generate_key("ES256"))
    jkt = key:thumbprint()
    token = assert(oktadpop.sign_jwt(as, {iss = ISSUER, aud = AUD, sub = "app", exp = os.time() + 3600,
      cnf = {jkt = jkt}, scp = {"read"}}))
    write(dir .. "/jwks.json", cjson.encode({keys = {as:public_jwk()}}))
    write(dir .. "/guard_app.lua", ([[
local guard = require "oktadpop.resty.guard"
local M = {spy = {}}
-- a replay store whose entries expire on the guard's own (test) clock
local store = {entries = {}}
function store:add(key, value, ttl)
  local now = M.now()
  local e = self.entries[key]
  if e and e.expires > now then return false, "exists" end
  self.entries[key] = {expires = now + ttl}
  M.spy[#M.spy + 1] = {key = key, ttl = ttl, at = now}
  return true
end
function M.now() return tonumber(ngx.var.http_x_test_clock) or ngx.now() end
M.mocked = {jwks = %q, issuer = %q, audience = %q, replay_store = store, origin = "http://api.example",
            max_age = 60, leeway = 5, clock = M.now}
M.plain = {jwks = %q, issuer = %q, audience = %q, replay_dict = "replay", origin = "http://api.example"}
M.no_origin = {jwks = %q, issuer = %q, audience = %q, replay_dict = "replay"}
-- tiny caches, to see them bounded
M.small = assert(guard.new{jwks = M.plain.jwks, issuer = M.plain.issuer, audience = M.plain.audience, replay_dict = "replay",
  origin = "http://api.example", leeway = 5, clock = M.now, token_cache_size = 2, key_cache_size = 2})
return M
]]):format(dir .. "/jwks.json", ISSUER, AUD, dir .. "/jwks.json", ISSUER, AUD, dir .. "/jwks.json", ISSUER, AUD))
    server = nginx.start{dir = dir, http = "lua_shared_dict replay 1m;", server = [[
      server_name _;
      location /mocked/ {
        access_by_lua_block { local app = require "guard_app"; require("oktadpop.resty.guard").protect(app.mocked) }
        content_by_lua_block { ngx.say("ok ", require("cjson").encode(require("guard_app").spy)) }
      }
      location / {
        access_by_lua_block { require("oktadpop.resty.guard").protect(require("guard_app").plain) }
        content_by_lua_block { ngx.say("ok") }
      }
      location /small/ {
        access_by_lua_block { require("guard_app").small:protect() }
        content_by_lua_block { local g = require("guard_app").small ngx.say(g.tokens:count(), " ", g.proof_keys:count()) }
      }
      location /unset/ {
        access_by_lua_block { require("oktadpop.resty.guard").protect(require("guard_app").no_origin) }
        content_by_lua_block { ngx.say("ok") }
      }
    ]]}
  end)

  teardown(function()
    if server then server:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function proof(htu, over)
    local o = {htm = "GET", htu = htu, access_token = token}
    for k, v in pairs(over or {}) do o[k] = v end
    return assert(oktadpop.dpop_proof(key, o))
  end

  it("refuses to run without an origin when server_name is not one plain name", function()
    local code = fetch(server.url .. "/unset/x", {"Authorization: DPoP " .. token, "DPoP: " .. proof("http://api.example/unset/x")})
    assert.equal(500, code)
    assert.matches("set origin=", server:error_log(), 1, true)
  end)

  it("never takes the origin from the Host header: a proof for / does not open /admin/delete-everything", function()
    local p = proof("http://api.example/")
    local code, body = fetch(server.url .. "/admin/delete-everything", {"Host: api.example#", "Authorization: DPoP " .. token,
      "DPoP: " .. p})
    assert.equal(401, code)
    assert.matches("htu does not match", body, 1, true)
    code = fetch(server.url .. "/admin/delete-everything", {"Authorization: DPoP " .. token,
      "DPoP: " .. proof("http://api.example/admin/delete-everything")})
    assert.equal(200, code) -- the control: the right proof passes
  end)

  it("sees a second DPoP header even after 100 other headers", function()
    local headers = {}
    for i = 1, 101 do headers[#headers + 1] = "X-Pad-" .. i .. ": p" end
    headers[#headers + 1] = "Authorization: DPoP " .. token
    headers[#headers + 1] = "DPoP: " .. proof("http://api.example/x")
    headers[#headers + 1] = "DPoP: " .. proof("http://api.example/x")
    local code, body = fetch(server.url .. "/x", headers)
    assert.equal(400, code)
    assert.matches("more than one DPoP header", body, 1, true)
    assert.is_nil(body:match("<html"), "the guard answers JSON, never nginx's HTML page")
  end)

  it("remembers a jti for as long as its proof can be accepted, counted from the proof's iat", function()
    local T = os.time()
    local edge = T + 60 + 5 -- the last second a proof with iat T is accepted (max_age 60, leeway 5)
    local p = proof("http://api.example/mocked/a", {iat = T})
    local function at(t, prf)
      return fetch(server.url .. "/mocked/a", {"X-Test-Clock: " .. t, "Authorization: DPoP " .. token, "DPoP: " .. prf})
    end
    local code, body = at(T - 4.9, p) -- used first a moment before its iat (within the leeway)
    assert.equal(200, code)
    local spy = cjson.decode(body:match("^ok (.*)$"))
    assert.is_true(spy[#spy].at + spy[#spy].ttl > edge, "the jti would be forgotten before the proof expires")
    assert.equal(401, (at(edge, p))) -- replayed at the edge of the window: still refused
    assert.equal(401, (at(edge + 1, p))) -- and after it, by its iat
    local late = proof("http://api.example/mocked/a", {iat = T})
    assert.equal(200, (at(edge - 0.1, late))) -- first used at the very end
    assert.equal(401, (at(edge, late)))
  end)

  -- a token for its own DPoP key, and a call to /small/ at guard time t with a fresh proof
  local function client(over)
    local k = assert(oktadpop.generate_key("ES256"))
    local claims = {iss = ISSUER, aud = AUD, sub = "app", exp = os.time() + 3600, cnf = {jkt = k:thumbprint()}}
    for name, v in pairs(over or {}) do claims[name] = v end
    return {key = k, token = assert(oktadpop.sign_jwt(as, claims))}
  end
  local function small(c, t, proof_key)
    local p = assert(oktadpop.dpop_proof(proof_key or c.key, {htm = "GET", htu = "http://api.example/small/x",
      access_token = c.token, iat = math.floor(t)}))
    return fetch(server.url .. "/small/x", {"X-Test-Clock: " .. t, "Authorization: DPoP " .. c.token, "DPoP: " .. p})
  end

  it("keeps verified tokens and proof keys in bounded LRUs", function()
    local now, clients = os.time(), {}
    for i = 1, 4 do
      clients[i] = client()
      local code, body = small(clients[i], now)
      assert.equal(200, code, body)
      assert.equal(("%d %d\n"):format(math.min(i, 2), math.min(i, 2)), body) -- tokens, proof keys
    end
    local code, body = small(clients[1], now) -- evicted long ago: verified again, and cached again
    assert.equal(200, code)
    assert.equal("2 2\n", body)
  end)

  it("holds a verified token until its exp, never longer (leeway or not)", function()
    local T = os.time()
    local c = client{exp = T + 30}
    assert.equal(200, (small(c, T))) -- verified and cached
    assert.equal(200, (small(c, T + 30))) -- at exp: from the cache
    assert.equal(200, (small(c, T + 35))) -- past exp, within the 5 s leeway: verified again, not cached
    local code, body = small(c, T + 35.5)
    assert.equal(401, code)
    assert.matches("JWT has expired", body, 1, true)
  end)

  it("never lets a refused token or proof pass because a token is cached", function()
    local now, c = os.time(), client()
    assert.equal(200, (small(c, now)))
    local code, body = small(c, now, assert(oktadpop.generate_key("ES256"))) -- the cached token, another key's proof
    assert.equal(401, code)
    assert.matches("cnf.jkt", body, 1, true)
    local wrong = client{aud = "api://other"} -- refused, and refused again: nothing was cached for it
    for _ = 1, 2 do assert.equal(401, (small(wrong, now))) end
    local h, p = c.token:match("^([^.]+)%.([^.]+)%.")
    local forged = {key = c.key, token = h .. "." .. p .. "." .. assert(oktadpop.sign_jwt(as, {x = 1})):match("([^.]+)$")}
    code, body = small(forged, now) -- the cached token's header and claims under another signature
    assert.equal(401, code)
    assert.matches("signature", body, 1, true)
  end)
end)
