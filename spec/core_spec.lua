-- The transport-free core, driven with synthetic responses: every retry rule and its bound,
-- without a server. This is the API other drivers (oktadpop.resty) run.
local oktadpop = require "oktadpop"
local cjson = require "cjson"

local ORG = "https://acme.okta.com"
local key_path

local function http_date(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", t) end

local function response(status, headers, body)
  local h = {date = http_date(os.time())}
  for k, v in pairs(headers or {}) do h[k] = v end
  if type(body) == "table" then
    h["content-type"] = "application/json"
    body = cjson.encode(body)
  end
  return {status = status, headers = h, body = body or ""}
end

local TOKEN = {token_type = "DPoP", access_token = "tok.en.1", expires_in = 3600, scope = "okta.users.read"}

local function client(extra)
  local cfg = {org_url = ORG, client_id = "0oa1", scopes = "okta.users.read", private_key = key_path, retry_base = 0}
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return assert(oktadpop.new(cfg))
end

local function claims_of(action)
  local _, claims = oktadpop.decode_jwt(action.headers.DPoP)
  return claims
end

-- A client holding a token, with its first API action already emitted.
local function api_op(c, method, path, opts)
  local op = assert(c:operation("token"))
  local a = op:step()
  if a.action == "send" then a = op:step(response(200, {}, TOKEN)) end
  assert.equal("done", a.action)
  op = assert(c:operation(method or "GET", path or "/api/v1/users", opts))
  return op, op:step()
end

describe("the protocol core", function()
  setup(function()
    key_path = os.tmpname()
    assert(assert(oktadpop.generate_key("RS256")):save_pem(key_path, true))
  end)
  teardown(function() os.remove(key_path) end)

  it("sends a proof on the first token request, then retries use_dpop_nonce with the server's nonce", function()
    local op = assert(client():operation("token"))
    local a = op:step()
    assert.equal("send", a.action)
    assert.equal("POST", a.method)
    assert.equal(ORG .. "/oauth2/v1/token", a.url)
    assert.is_nil(claims_of(a).nonce)
    assert.matches("^grant_type=client_credentials&scope=okta%.users%.read&client_assertion_type=urn%%3Aietf", a.body)
    local first_assertion = a.body:match("client_assertion=([^&]+)")
    a = op:step(response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
    assert.equal("send", a.action)
    assert.equal("n1", claims_of(a).nonce)
    assert.are_not.equal(first_assertion, a.body:match("client_assertion=([^&]+)"))
    a = op:step(response(200, {}, TOKEN))
    assert.equal("done", a.action)
    assert.equal("tok.en.1", a.token)
    assert.equal("DPoP", a.info.token_type)
  end)

  it("never retries with a nonce the server just rejected, and at most twice", function()
    local op = client():operation("token")
    op:step()
    local a = op:step(response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
    a = op:step(response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
    assert.equal("fail", a.action)
    assert.equal("oauth", a.error.kind)
    op = client():operation("token")
    op:step()
    op:step(response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
    op:step(response(400, {["dpop-nonce"] = "n2"}, {error = "use_dpop_nonce"}))
    a = op:step(response(400, {["dpop-nonce"] = "n3"}, {error = "use_dpop_nonce"}))
    assert.equal("fail", a.action)
  end)

  it("remembers the authorization server's nonce for the next token request", function()
    local c = client()
    local op = c:operation("token")
    op:step()
    op:step(response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
    op:step(response(200, {["dpop-nonce"] = "n2"}, TOKEN))
    local a = c:operation("token", true):step()
    assert.equal("n2", claims_of(a).nonce)
  end)

  it("keeps resource and authorization server nonces apart", function()
    local c = client()
    local op = c:operation("token")
    op:step()
    op:step(response(200, {["dpop-nonce"] = "as-nonce"}, TOKEN))
    local a = c:operation("GET", "/api/v1/users"):step()
    assert.is_nil(claims_of(a).nonce)
  end)

  it("builds API requests: DPoP scheme, ath, htu without the query, caller headers, JSON body", function()
    local c = client()
    local _, a = api_op(c, "POST", "/api/v1/users", {query = {activate = true}, headers = {["X-Trace"] = "t1"},
      body = {profile = {login = "a@b.c"}}})
    assert.equal(ORG .. "/api/v1/users?activate=true", a.url)
    assert.equal("DPoP tok.en.1", a.headers.Authorization)
    assert.equal("application/json", a.headers["Content-Type"])
    assert.equal("t1", a.headers["X-Trace"])
    assert.same({profile = {login = "a@b.c"}}, cjson.decode(a.body))
    local claims = claims_of(a)
    assert.equal(ORG .. "/api/v1/users", claims.htu)
    assert.equal("POST", claims.htm)
    assert.equal(oktadpop.ath("tok.en.1"), claims.ath)
  end)

  it("refuses headers it manages and control characters", function()
    local c = client()
    local op, err = c:operation("GET", "/api/v1/users", {headers = {authorization = "x"}})
    assert.is_nil(op)
    assert.equal("config", err.kind)
    op, err = c:operation("GET", "/api/v1/users", {headers = {["X-A"] = "a\r\nHost: evil"}})
    assert.is_nil(op)
    op, err = c:operation("GET", "/api/v1/users\r\nX: y")
    assert.is_nil(op)
    assert.matches("control character", err.message)
  end)

  it("encodes query values and sorts keys", function()
    local _, a = api_op(client(), "GET", "/api/v1/users", {query = {search = 'profile.login eq "a&b"', limit = 2, z = {"1", "2"}}})
    assert.equal(ORG .. "/api/v1/users?limit=2&search=profile.login%20eq%20%22a%26b%22&z=1&z=2", a.url)
  end)

  it("retries a resource nonce challenge once with a fresh proof", function()
    local op, a = api_op(client())
    local jti1 = claims_of(a).jti
    a = op:step(response(401, {["www-authenticate"] = 'DPoP error="use_dpop_nonce", error_description="nonce"', ["dpop-nonce"] = "rs1"}))
    assert.equal("send", a.action)
    assert.equal("rs1", claims_of(a).nonce)
    assert.are_not.equal(jti1, claims_of(a).jti)
    a = op:step(response(401, {["www-authenticate"] = 'DPoP error="use_dpop_nonce"', ["dpop-nonce"] = "rs2"}))
    assert.equal("done", a.action)
    assert.equal(401, a.response.status)
  end)

  it("refreshes the token once on 401 invalid_token", function()
    local op = api_op(client())
    local a = op:step(response(401, {["www-authenticate"] = 'DPoP error="invalid_token"'}))
    assert.equal("token", a.kind)
    a = op:step(response(200, {}, {token_type = "DPoP", access_token = "tok.en.2", expires_in = 3600}))
    assert.equal("api", a.kind)
    assert.equal("DPoP tok.en.2", a.headers.Authorization)
    a = op:step(response(401, {["www-authenticate"] = 'DPoP error="invalid_token"'}))
    assert.equal("done", a.action)
  end)

  it("waits out a 429 on the server's clock, capped, then gives up after max_retries", function()
    local c = client{max_retries = 2, max_retry_wait = 30}
    local op = api_op(c)
    local server_now = os.time() + 3600 -- the server's clock is an hour ahead of ours
    local a = op:step(response(429, {date = http_date(server_now), ["x-rate-limit-reset"] = tostring(server_now + 5),
      ["x-okta-request-id"] = "req-1"}))
    assert.equal("sleep", a.action)
    assert.equal(6, a.seconds)
    a = op:step()
    assert.equal("req-1", a.headers["X-Okta-Retry-For"])
    assert.equal("1", tostring(a.headers["X-Okta-Retry-Count"]))
    a = op:step(response(429, {date = http_date(server_now), ["x-rate-limit-reset"] = tostring(server_now + 500)}))
    assert.equal(30, a.seconds)
    op:step()
    a = op:step(response(429, {}))
    assert.equal("done", a.action)
    assert.equal(429, a.response.status)
  end)

  it("retries 5xx and dropped connections only for idempotent methods, with growing backoff", function()
    local c = client{max_retries = 2, retry_base = 0.5}
    local op = api_op(c, "GET")
    local a = op:step(response(503, {}, "<html>"))
    assert.equal(0.5, a.seconds)
    op:step()
    a = op:step({error = oktadpop.error("network", "reset")})
    assert.equal(1, a.seconds)
    op:step()
    a = op:step(response(503, {}, "<html>"))
    assert.equal("done", a.action)
    op = api_op(c, "POST")
    a = op:step({error = oktadpop.error("network", "reset")})
    assert.equal("fail", a.action)
    assert.equal("network", a.error.kind)
  end)

  it("signs iat on the server's clock when ours is off by more than a few seconds", function()
    local c = client()
    local op = c:operation("token")
    op:step()
    op:step(response(200, {date = http_date(os.time() + 600)}, TOKEN))
    local a = c:operation("GET", "/api/v1/users"):step()
    assert.is_true(math.abs(claims_of(a).iat - (os.time() + 600)) <= 2)
    assert.is_true(math.abs(c.stats.clock_offset - 600) <= 2)
  end)

  it("rejects a Bearer token when DPoP is on, naming the app setting", function()
    local op = client():operation("token")
    op:step()
    local a = op:step(response(200, {}, {token_type = "Bearer", access_token = "x", expires_in = 60}))
    assert.equal("fail", a.action)
    assert.matches("not set to require DPoP", a.error.message, 1, true)
  end)

  it("reports an OAuth error with code, summary and request id", function()
    local op = client():operation("token")
    op:step()
    local a = op:step(response(401, {["x-okta-request-id"] = "r9"}, {error = "invalid_client", error_description = "bad assertion"}))
    assert.equal("oauth", a.error.kind)
    assert.equal(401, a.error.status)
    assert.equal("invalid_client", a.error.code)
    assert.equal("bad assertion", a.error.summary)
    assert.equal("r9", a.error.request_id)
  end)

  it("decodes JSON bodies, keeps others as strings, and reads Link rel=next", function()
    local op = api_op(client())
    local a = op:step(response(200, {link = '<' .. ORG .. '/api/v1/users?limit=1>; rel="self", <' .. ORG .. '/api/v1/users?after=x&limit=1>; rel="next"'},
      {{id = "u1", lastLogin = cjson.null}}))
    assert.equal("u1", a.response.body[1].id)
    assert.equal(oktadpop.null, a.response.body[1].lastLogin)
    assert.equal(ORG .. "/api/v1/users?after=x&limit=1", a.response.next)
    op = api_op(client())
    a = op:step(response(200, {["content-type"] = "application/json"}, "<html>"))
    assert.equal("<html>", a.response.body)
    assert.is_string(a.response.json_error)
  end)

  it("builds error objects from Okta error bodies", function()
    local res = response(400, {["x-okta-request-id"] = "r1"})
    res.body = {errorCode = "E0000001", errorSummary = "Api validation failed: login",
      errorCauses = {{errorSummary = "login: already exists"}}} -- as request() returns it: decoded
    local err = oktadpop.http_error(res, "POST", "/api/v1/users")
    assert.equal("http", err.kind)
    assert.equal("E0000001", err.code)
    assert.same({"login: already exists"}, err.causes)
    assert.equal("r1", err.request_id)
    err = oktadpop.http_error(response(400, {["www-authenticate"] = 'DPoP error="invalid_dpop_proof", error_description="htu mismatch"'}), "GET", "/x")
    assert.equal("oauth", err.kind)
    assert.equal("invalid_dpop_proof", err.code)
    assert.equal("htu mismatch", err.summary)
    assert.matches("htu mismatch", tostring(err), 1, true)
  end)

  it("answers a response the way client:get does", function()
    local ok_res = response(204, {})
    local body, res = oktadpop.call_result(ok_res, "DELETE", "/api/v1/users/x")
    assert.is_true(body)
    assert.equal(ok_res, res)
    local bad = response(404, {})
    bad.body = {errorCode = "E0000007", errorSummary = "Not found"}
    local none, err, same = oktadpop.call_result(bad, "GET", "/api/v1/users/x")
    assert.is_nil(none)
    assert.equal("E0000007", err.code)
    assert.equal(bad, same)
    local junk = response(200, {})
    junk.body, junk.json_error = "<html>", "does not parse"
    none, err = oktadpop.call_result(junk, "GET", "/x")
    assert.is_nil(none)
    assert.equal("json", err.kind)
  end)

  it("shares token state between clients (for nginx workers)", function()
    local a, b = client(), client()
    local op = a:operation("token")
    op:step()
    op:step(response(200, {["dpop-nonce"] = "n5"}, TOKEN))
    assert.is_true(b:set_token_state(a:token_state()))
    assert.equal("done", b:operation("token"):step().action)
    assert.equal("n5", b:token_state().as_nonce)
    local again = a:token_state() -- the same token again (nginx re-adopts it per request): a new expiry only
    again.expires_at = again.expires_at + 100
    assert.is_true(b:set_token_state(again))
    assert.equal(again.expires_at, b:token_state().expires_at)
    assert.equal(again.token, b:token_state().token)
    assert.is_false(b:set_token_state{token = "x", token_type = "DPoP", expires_at = os.time() - 1})
    -- the token endpoint's own rules: a usable token, of the type this client sends
    assert.is_false(b:set_token_state{token = "x y", token_type = "DPoP", expires_at = os.time() + 60})
    assert.is_false(b:set_token_state{token = "x", token_type = "Bearer", expires_at = os.time() + 60})
  end)

  describe("regressions from review", function()
    it("a malformed escape in a path is a config error, not nil, nil", function()
      local c = client()
      local op, err = c:operation("GET", "/api/v1/users/100%zz")
      assert.is_nil(op)
      assert.equal("config", err.kind)
      local client2, err2 = oktadpop.new{org_url = ORG, client_id = "x", scopes = "s", private_key = key_path,
        token_url = ORG .. "/t%zz"}
      assert.is_nil(client2)
      assert.matches("token_url", err2.message)
    end)

    it("long server-provided error fields print without harm", function()
      local res = response(404, {["x-okta-request-id"] = ("r"):rep(3000)})
      res.body = {errorCode = ("E"):rep(988), errorSummary = ("s"):rep(5000)}
      local err = oktadpop.http_error(res, "GET", "/x")
      for _ = 1, 3 do assert.matches("^oktadpop http error", tostring(err)) end
      err = oktadpop.error("http", ("m"):rep(9000))
      err.code = ("c"):rep(9000)
      assert.is_string(tostring(err))
    end)

    it("a scope list with a long entry is joined correctly", function()
      local c = client{scopes = {("a"):rep(1024), "okta.users.read", ("b"):rep(5000)}}
      assert.equal(("a"):rep(1024) .. " okta.users.read " .. ("b"):rep(5000), c.scopes)
    end)

    it("sends X-Okta-Retry-Count as a string header", function()
      local op = api_op(client())
      op:step(response(429, {["x-rate-limit-reset"] = tostring(os.time())}))
      local a = op:step()
      assert.equal("string", type(a.headers["X-Okta-Retry-Count"]))
    end)

    it("fetches a token first when another operation dropped it", function()
      local c = client()
      local op1 = api_op(c)
      local op2 = c:operation("GET", "/api/v1/groups")
      op2:step()
      op2:step(response(401, {["www-authenticate"] = 'DPoP error="invalid_token"'})) -- drops the token
      local a = op1:step(response(401, {["www-authenticate"] = 'DPoP error="use_dpop_nonce"', ["dpop-nonce"] = "rs"}))
      assert.equal("token", a.kind)
      assert.is_nil(a.headers.Authorization)
    end)

    it("never sends two Content-Type headers", function()
      local _, a = api_op(client(), "POST", "/api/v1/users", {headers = {["content-type"] = "application/json; okta-version=1.0.0"}, body = "{}"})
      local n = 0
      for name in pairs(a.headers) do if name:lower() == "content-type" then n = n + 1 end end
      assert.equal(1, n)
    end)

    it("does not retry a token nonce it could not keep", function()
      local op = client():operation("token")
      op:step()
      local a = op:step(response(400, {["dpop-nonce"] = ("n"):rep(600)}, {error = "use_dpop_nonce"}))
      assert.equal("fail", a.action)
    end)
  end)
end)
