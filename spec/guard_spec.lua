-- The DPoP guard (oktadpop.resty.guard) in a real nginx with four workers, against keys it
-- fetches itself: discovery from the issuer's metadata, key rotation under load (a new key is
-- accepted within one refetch, without a reload), a flood of unknown kids (one refetch per
-- interval), required scopes (403 insufficient_scope), and server nonces (RFC 9449 section 9),
-- which oktadpop's own client follows by itself.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local nginx = require "spec.support.nginx"
local util = require "spec.support.util"

local sh, write = util.sh, util.write

local function curl(url, headers)
  local args = {"curl -s --max-time 20 -D - -o /dev/stdout"}
  for _, h in ipairs(headers or {}) do args[#args + 1] = "-H '" .. h .. "'" end
  args[#args + 1] = "'" .. url .. "'"
  local out = sh(table.concat(args, " "))
  local head, body = out:match("^(.-)\r\n\r\n(.*)$")
  head = head or out
  local h = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do h[k:lower()] = v end
  return tonumber(head:match("^HTTP/%S+ (%d+)")), h, body or ""
end

describe("the DPoP guard with fetched keys, in nginx #nginx", function()
  local dir, server, iss, k1, k2, dpop, port2

  local function token(signer, over)
    local claims = {iss = iss, aud = "api://guard", sub = "app", exp = os.time() + 3600, cnf = {jkt = dpop:thumbprint()},
                    scp = {"items.read"}}
    for k, v in pairs(over or {}) do claims[k] = v end
    return assert(oktadpop.sign_jwt(signer, claims))
  end
  local function proof(path, tok, over)
    local o = {htm = "GET", htu = "http://api.test" .. path, access_token = tok}
    for k, v in pairs(over or {}) do o[k] = v end
    return assert(oktadpop.dpop_proof(dpop, o))
  end
  local function call(path, tok, over)
    return curl(server.url .. path, {"Authorization: DPoP " .. tok, "DPoP: " .. proof(path, tok, over)})
  end
  local function fetches() return tonumber(sh("curl -s " .. server.url .. "/fetches")) end
  local function publish(...)
    local keys = {}
    for _, k in ipairs({...}) do keys[#keys + 1] = k:public_jwk() end
    write(dir .. "/jwks.json.new", cjson.encode({keys = keys}))
    os.rename(dir .. "/jwks.json.new", dir .. "/jwks.json")
  end

  setup(function()
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000) -- ports no other run picks
    port2 = math.random(20000, 60000)
    dir = sh("mktemp -d"):gsub("%s+$", "")
    k1 = assert(oktadpop.generate_key("ES256", {kid = "k1"}))
    k2 = assert(oktadpop.generate_key("RS256", {kid = "k2"}))
    dpop = assert(oktadpop.generate_key("ES256"))
    publish(k1)
    local guard = [[
        access_by_lua_block {
          require("oktadpop.resty.guard").protect{issuer = "http://127.0.0.1:%%PORT%%/as", audience = "api://guard",
            cache_dict = "jwks", replay_dict = "replay", origin = "http://api.test", refetch_interval = 1, %s}
        }
        content_by_lua_block { ngx.say("ok ", ngx.ctx.oktadpop.claims.sub) }
    ]]
    server = nginx.start{dir = dir, workers = 4, http = [[
      lua_shared_dict jwks 1m; lua_shared_dict replay 4m; lua_shared_dict nonces 1m; lua_shared_dict counts 1m;
    ]], server = [[
      location = /as/.well-known/oauth-authorization-server {
        content_by_lua_block { ngx.say(require("cjson").encode{issuer = "http://127.0.0.1:%PORT%/as",
          jwks_uri = "http://127.0.0.1:%PORT%/as/keys"}) }
      }
      location = /as/keys {
        content_by_lua_block {
          ngx.shared.counts:incr("fetches", 1, 0)
          local f = io.open("]] .. dir .. [[/jwks.json") ngx.print(f:read("*a")) f:close()
        }
      }
      location = /fetches { content_by_lua_block { ngx.say(ngx.shared.counts:get("fetches") or 0) } }
      location /items/ {]] .. guard:format("") .. [[}
      location /admin/ {]] .. guard:format('required_scopes = {"items.read", "items.manage"}') .. [[}
      location /nonced/ {]] .. guard:format('nonce_dict = "nonces", nonce_lifetime = 300') .. [[}
      location = /oauth2/v1/token {
        content_by_lua_block { local f = io.open("]] .. dir .. [[/token.json")
          ngx.header.content_type = "application/json" ngx.print(f:read("*a")) f:close() }
      }
      location /own/ {]] .. guard:format('nonce_dict = "nonces"'):gsub('origin = "http://api.test"',
        'origin = "http://127.0.0.1:%%PORT%%"') .. [[}
      listen 127.0.0.1:]] .. port2 .. [[; # another origin for the same keys
      location = /as3/.well-known/oauth-authorization-server {
        content_by_lua_block { ngx.say(require("cjson").encode{issuer = "http://127.0.0.1:%PORT%/as3",
          jwks_uri = "http://127.0.0.1:]] .. port2 .. [[/as/keys"}) }
      }
      location /foreign/ {]] .. guard:format(""):gsub("/as\"", "/as3\"") .. [[}
      location /explicit/ {]] .. guard:format('jwks_uri = "http://127.0.0.1:' .. port2 .. '/as/keys"'):gsub("/as\"", "/as3\"") .. [[}
      location = /down/.well-known/oauth-authorization-server {
        content_by_lua_block { ngx.say(require("cjson").encode{issuer = "http://127.0.0.1:%PORT%/down",
          jwks_uri = "http://127.0.0.1:%PORT%/down/keys"}) }
      }
      location = /down/keys { return 503 "busy"; }
      location /down-api/ {]] .. guard:format(""):gsub("/as\"", "/down\"") .. [[}
      location /no-replay/ {
        access_by_lua_block { require("oktadpop.resty.guard").protect{issuer = "http://127.0.0.1:%PORT%/as",
          cache_dict = "jwks", origin = "http://api.test"} }
      }
      location /no-origin/ {
        access_by_lua_block { require("oktadpop.resty.guard").protect{issuer = "http://127.0.0.1:%PORT%/as",
          cache_dict = "jwks", replay_dict = "replay"} }
      }
    ]]}
    iss = "http://127.0.0.1:" .. server.port .. "/as"
  end)

  teardown(function()
    if server then server:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("discovers the keys from the issuer's metadata and lets a valid call through", function()
    local code, _, body = call("/items/1", token(k1))
    assert.equal(200, code, body)
    assert.equal("ok app\n", body)
    assert.equal(1, fetches())
  end)

  it("accepts tokens of a rotated key within one refetch, under load, without a reload", function()
    local old = token(k1) -- verified and cached by the workers before the rotation
    for i = 1, 12 do assert.equal(200, (call("/items/cached" .. i, old))) end
    os.execute("sleep 1.2") -- past refetch_interval since the first fetch
    publish(k2) -- the authorization server rotates: k1 is gone, k2 signs
    local list = {}
    for i = 1, 60 do
      local tok = token(k2)
      local path = "/items/" .. i
      list[#list + 1] = ("url = \"%s%s\"\nheader = \"Authorization: DPoP %s\"\nheader = \"DPoP: %s\"\n" ..
        "write-out = \"%%{http_code}\\n\"\noutput = \"/dev/null\""):format(server.url, path, tok, proof(path, tok))
    end
    write(dir .. "/load.txt", table.concat(list, "\nnext\n") .. "\n") -- next: each URL its own headers
    local out = sh("curl -s --no-progress-meter --parallel --parallel-max 20 -K " .. dir .. "/load.txt")
    local ok, n = 0, 0
    for code in out:gmatch("(%d%d%d)") do n = n + 1; if code == "200" then ok = ok + 1 end end
    assert.equal(60, n)
    assert.equal(60, ok)
    assert.equal(2, fetches()) -- exactly one refetch for the rotation
    assert.equal(401, (call("/items/old", token(k1)))) -- the retired key no longer opens anything
    for i = 1, 12 do -- and a token it signed, cached while it was the issuer's, is dropped with it
      local code, _, body = call("/items/dropped" .. i, old)
      assert.equal(401, code)
      assert.equal("invalid_token", cjson.decode(body).error)
    end
  end)

  it("refetches at most once per interval for a flood of unknown kids", function()
    os.execute("sleep 1.2")
    local before = fetches()
    local list = {}
    for i = 1, 80 do
      local forged = token(assert(oktadpop.generate_key("ES256", {kid = "made-up-" .. i})))
      local path = "/items/f" .. i
      list[#list + 1] = ("url = \"%s%s\"\nheader = \"Authorization: DPoP %s\"\nheader = \"DPoP: %s\"\n" ..
        "write-out = \"%%{http_code}\\n\"\noutput = \"/dev/null\""):format(server.url, path, forged, proof(path, forged))
    end
    write(dir .. "/flood.txt", table.concat(list, "\nnext\n") .. "\n")
    local t0 = sh("date +%s.%N")
    local out = sh("curl -s --no-progress-meter --parallel --parallel-max 20 -K " .. dir .. "/flood.txt")
    local took = tonumber(sh("date +%s.%N")) - tonumber(t0)
    local n401 = select(2, out:gsub("401", ""))
    assert.equal(80, n401)
    assert.is_true(fetches() - before <= 1 + math.ceil(took / 1), ("%d fetches in %.1f s"):format(fetches() - before, took))
  end)

  it("takes a discovered jwks_uri only on the issuer's own origin, unless jwks_uri is configured", function()
    local tok = token(k2, {iss = "http://127.0.0.1:" .. server.port .. "/as3"})
    local code, _, body = call("/foreign/1", tok)
    assert.equal(401, code)
    assert.equal("invalid_token", cjson.decode(body).error)
    assert.matches('names jwks_uri "http://127.0.0.1:' .. port2 .. '/as/keys", not on the issuer\'s origin',
      server:error_log(), 1, true)
    code, _, body = call("/explicit/1", tok) -- the same keys, configured: taken
    assert.equal(200, code, body)
  end)

  it("logs why a JWKS fetch failed, not only where", function()
    local code = call("/down-api/1", token(k2, {iss = "http://127.0.0.1:" .. server.port .. "/down"}))
    assert.equal(401, code)
    assert.matches("cannot fetch the JWKS: http://127.0.0.1:" .. server.port .. "/down/keys: HTTP 503", server:error_log(), 1, true)
  end)

  it("answers its own misconfiguration with 500 in JSON, naming what is missing in the error log", function()
    for path, missing in pairs{["/no-replay/1"] = "replay_dict (or replay_store) is required", ["/no-origin/1"] = "set origin="} do
      local code, h, body = call(path, token(k2))
      assert.equal(500, code)
      assert.equal("application/json", h["content-type"])
      assert.is_nil(body:match("<html"), "the guard answers JSON, never nginx's HTML page")
      assert.same({error = "server_error", error_description = "the DPoP guard is misconfigured: see the error log"}, cjson.decode(body))
      assert.matches("oktadpop guard: misconfigured: " .. missing, server:error_log(), 1, true)
    end
  end)

  it("answers 403 insufficient_scope naming the scopes a route requires (RFC 6750 section 3.1)", function()
    local code, h, body = call("/admin/x", token(k2))
    assert.equal(403, code)
    assert.matches('error="insufficient_scope"', h["www-authenticate"], 1, true)
    assert.matches('scope="items.read items.manage"', h["www-authenticate"], 1, true)
    assert.equal("insufficient_scope", cjson.decode(body).error)
    code = call("/admin/x", token(k2, {scp = {"items.read", "items.manage"}}))
    assert.equal(200, code)
  end)

  it("answers an unauthenticated call with an empty body, never an HTML page", function()
    local code, h, body = curl(server.url .. "/items/1")
    assert.equal(401, code)
    assert.matches("^DPoP algs=", h["www-authenticate"])
    assert.equal("", body)
  end)

  it("issues and requires server nonces: use_dpop_nonce with a fresh DPoP-Nonce, then the nonce works", function()
    local tok = token(k2)
    local code, h, body = call("/nonced/1", tok)
    assert.equal(401, code)
    assert.matches('error="use_dpop_nonce"', h["www-authenticate"], 1, true)
    assert.equal("use_dpop_nonce", cjson.decode(body).error)
    local nonce = h["dpop-nonce"]
    assert.is_string(nonce)
    assert.is_true(#nonce >= 32)
    code, h = call("/nonced/2", tok, {nonce = nonce})
    assert.equal(200, code)
    assert.equal(nonce, h["dpop-nonce"]) -- the current nonce rides on every answer
    assert.equal(401, (call("/nonced/3", tok, {nonce = "guessed"})))
  end)

  it("is followed by oktadpop's own client, which retries the nonce challenge once by itself", function()
    write(dir .. "/token.json", cjson.encode{token_type = "DPoP", access_token = token(k2), expires_in = 3600,
      scope = "items.read"})
    local c = assert(oktadpop.new{org_url = server.url, client_id = "app", scopes = "items.read",
      private_key = assert(oktadpop.generate_key("RS256")), dpop_key = dpop, max_retries = 0})
    local body, err = c:get("/own/1")
    assert.equal("ok app\n", body, tostring(err))
    body = assert(c:get("/own/2")) -- the nonce is remembered: one request this time
    assert.equal(1, c.stats.token_requests)
    assert.equal(3, c.stats.api_requests)
  end)
end)

describe("the guard's key cache under made-up kids, in nginx", function()
  local dir, server

  setup(function()
    dir = sh("mktemp -d"):gsub("%s+$", "")
    local as = assert(oktadpop.generate_key("RS256", {kid = "as1"}))
    write(dir .. "/jwks.json", cjson.encode({keys = {as:public_jwk()}}))
    local guard = [[
        access_by_lua_block { require("oktadpop.resty.guard").protect{issuer = "http://127.0.0.1:%%PORT%%/as",
          replay_dict = "replay", origin = "http://api.test", %s} }
        content_by_lua_block { ngx.say("ok") }
    ]]
    server = nginx.start{dir = dir, workers = 1, http = [[
      lua_shared_dict jwks 1m; lua_shared_dict replay 1m;
      large_client_header_buffers 4 16k; # let 6 KB kids through to the guard: the worst case
    ]], server = [[
      location = /rss { content_by_lua_block {
        local f = io.open("/proc/self/status") local s = f:read("*a") f:close() ngx.say(s:match("VmRSS:%s*(%d+)"))
      } }
      location = /as/.well-known/oauth-authorization-server {
        content_by_lua_block { ngx.say(require("cjson").encode{issuer = "http://127.0.0.1:%PORT%/as",
          jwks_uri = "http://127.0.0.1:%PORT%/as/keys"}) }
      }
      location = /as/keys { alias ]] .. dir .. [[/jwks.json; }
      location /static/ {]] .. guard:format('jwks = "' .. dir .. '/jwks.json"') .. [[}
      location /fetched/ {]] .. guard:format('cache_dict = "jwks"') .. [[}
    ]]}
  end)

  teardown(function()
    if server then server:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  -- wrk with distinct 6 KB kids for `seconds`, counting from `first`; requests answered 401
  local function flood(path, first, seconds)
    -- wrk's event loop has room for a few descriptors only: it gets none of the ones busted holds
    local out = sh(("bash -c 'for fd in /proc/$$/fd/*; do n=${fd##*/}; [ \"$n\" -gt 2 ] && eval \"exec $n>&-\"; done; " ..
      "exec wrk -t1 -c4 -d%ds -s spec/support/kidflood.lua %s%s -- %d 6144' 2>&1"):format(seconds, server.url, path, first))
    local n, refused = tonumber(out:match("(%d+) requests in")), tonumber(out:match("Non%-2xx or 3xx responses: (%d+)"))
    assert(n and n > 0 and refused == n, out) -- every answer a 401
    return n
  end
  local function rss() return tonumber(sh("curl -s " .. server.url .. "/rss")) end

  for _, path in ipairs{"/static/x", "/fetched/x"} do
    it("keeps a worker's memory flat over 20,000 requests with distinct unknown 6 KB kids: " .. path, function()
      rss()
      flood(path, 1e9, 1) -- warm-up: the JIT, the allocator, the LRU full
      local before, n, round = rss(), 0, 0
      while n < 20000 do
        round = round + 1
        n = n + flood(path, (round + 1) * 1e9, 2)
      end
      local growth = rss() - before
      print(("\n%s: VmRSS %d KiB, %+d KiB after %d requests with distinct 6 KB kids"):format(path, before, growth, n))
      assert.is_true(growth < 15 * 1024, ("the worker grew by %d KiB"):format(growth))
      local code = tonumber(sh("curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: DPoP x.y.z' -H 'DPoP: x' " ..
        server.url .. path))
      assert.equal(401, code)
    end)
  end
end)
