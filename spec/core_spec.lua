-- The protocol core (oktadpop.core), driven with synthetic responses, a fake clock and an
-- in-process store: every rule and its bound, without a server or a socket. This is the
-- API both drivers run (client.c over libcurl, oktadpop.resty over cosockets).
local oktadpop = require "oktadpop"
local cjson = require "cjson"

local core = oktadpop.core
local ORG = "https://acme.okta.com"
local T0 = 1800000000 -- the fake clock's start
local KEY

local function http_date(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t)) end

-- A driver with a fake clock: answers store actions itself, hands back the rest.
local Driver = {}
Driver.__index = Driver

local function driver(extra)
  local cfg = {org_url = ORG, client_id = "0oa1", scopes = "okta.users.read", private_key = KEY, retry_base = 0}
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local store = cfg.store or core.memory_store()
  cfg.store = nil
  local session, warnings = core.session(cfg)
  assert(session, warnings)
  return setmetatable({session = session, store = store, now = T0, stores = {}}, Driver)
end

function Driver:response(status, headers, body)
  local h = {date = http_date(self.now)}
  for k, v in pairs(headers or {}) do h[k] = v end
  if type(body) == "table" then
    h["content-type"] = "application/json"
    body = cjson.encode(body)
  end
  return {status = status, headers = h, body = body or ""}
end

-- Steps op with input at the driver's time; store actions are answered from its store.
function Driver:step(op, input)
  local a = op:step(input, self.now)
  while a.action == "store" do
    self.stores[#self.stores + 1] = a.op .. " " .. a.key:gsub("^ok[da]:[^:]*:", "")
    local v
    if a.op == "incr" then v = self.store:incr(a.key, a.value, 0, a.ttl)
    elseif a.op == "get" then v = self.store:get(a.key)
    else v = self.store[a.op](self.store, a.key, a.value, a.ttl) end
    a = op:step(v, self.now)
  end
  return a
end

-- Sleeps on the fake clock and steps on.
function Driver:wake(op, a)
  assert.equal("sleep", a.action)
  self.now = self.now + a.seconds
  return self:step(op)
end

local TOKEN = {token_type = "DPoP", access_token = "tok.en.1", expires_in = 3600, scope = "okta.users.read"}

function Driver:token(body)
  local op = assert(self.session:token_operation())
  local a = self:step(op)
  if a.action == "send" then a = self:step(op, self:response(200, {}, body or TOKEN)) end
  assert.equal("done", a.action)
  return a
end

-- A session holding a token, and the first action of an API operation.
function Driver:api(method, path, opts)
  if not self.session.stats.token_requests or self.session.stats.token_requests == 0 then self:token() end
  local op = assert(self.session:operation(method or "GET", path or "/api/v1/users", opts))
  return op, self:step(op)
end

local function claims_of(action) return (oktadpop.decode_jwt(action.headers.DPoP)) end
local function www(err, extra) return {["www-authenticate"] = 'DPoP error="' .. err .. '"' .. (extra or "")} end

describe("the protocol core", function()
  setup(function() KEY = assert(oktadpop.generate_key("RS256")) end)

  describe("the token exchange", function()
    it("sends a proof on the first token request, then retries use_dpop_nonce with the server's nonce", function()
      local d = driver()
      local op = d.session:token_operation()
      local a = d:step(op)
      assert.equal("send", a.action)
      assert.equal("POST", a.method)
      assert.equal(ORG .. "/oauth2/v1/token", a.url)
      assert.is_nil(claims_of(a).nonce)
      assert.equal(T0, claims_of(a).iat)
      assert.matches("^grant_type=client_credentials&scope=okta%.users%.read&client_assertion_type=urn%%3Aietf", a.body)
      local first = a.body:match("client_assertion=([^&]+)")
      a = d:step(op, d:response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
      assert.equal("n1", claims_of(a).nonce)
      assert.are_not.equal(first, a.body:match("client_assertion=([^&]+)"))
      a = d:step(op, d:response(200, {}, TOKEN))
      assert.equal("done", a.action)
      assert.equal("tok.en.1", a.token)
      assert.equal("DPoP", a.info.token_type)
      assert.equal(3600, a.info.expires_in)
      assert.same({}, a.info.missing_scopes)
    end)

    it("never retries with a nonce the server just refused, and at most twice", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      d:step(op, d:response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
      local a = d:step(op, d:response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
      assert.equal("fail", a.action)
      assert.equal("oauth", a.error.kind)
      op = d.session:token_operation()
      d:step(op)
      d:step(op, d:response(400, {["dpop-nonce"] = "n2"}, {error = "use_dpop_nonce"}))
      d:step(op, d:response(400, {["dpop-nonce"] = "n3"}, {error = "use_dpop_nonce"}))
      a = d:step(op, d:response(400, {["dpop-nonce"] = "n4"}, {error = "use_dpop_nonce"}))
      assert.equal("fail", a.action)
    end)

    it("does not retry a token nonce it could not keep", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      local a = d:step(op, d:response(400, {["dpop-nonce"] = ("n"):rep(600)}, {error = "use_dpop_nonce"}))
      assert.equal("fail", a.action)
    end)

    it("remembers the authorization server's nonce: a renewal is one round trip", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      d:step(op, d:response(400, {["dpop-nonce"] = "n1"}, {error = "use_dpop_nonce"}))
      d:step(op, d:response(200, {["dpop-nonce"] = "n2"}, TOKEN))
      local a = d:step(d.session:token_operation(true))
      assert.equal("n2", claims_of(a).nonce)
    end)

    it("keeps resource and authorization server nonces apart", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      d:step(op, d:response(200, {["dpop-nonce"] = "as-nonce"}, TOKEN))
      local _, a = d:api()
      assert.is_nil(claims_of(a).nonce)
    end)

    it("rejects a Bearer token when DPoP is on, naming the app setting", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      local a = d:step(op, d:response(200, {}, {token_type = "Bearer", access_token = "x", expires_in = 60}))
      assert.equal("fail", a.action)
      assert.matches("Require Demonstrating Proof of Possession", a.error.message, 1, true)
    end)

    it("reports an OAuth error with code, summary and request id", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      local a = d:step(op, d:response(401, {["x-okta-request-id"] = "r9"}, {error = "invalid_client", error_description = "bad assertion"}))
      assert.equal("oauth", a.error.kind)
      assert.equal(401, a.error.status)
      assert.equal("invalid_client", a.error.code)
      assert.equal("bad assertion", a.error.summary)
      assert.equal("r9", a.error.request_id)
    end)

    it("says which requested scopes Okta did not grant, once in the debug log", function()
      local d = driver{scopes = "okta.users.read okta.users.manage okta.groups.read", debug = true}
      local op = d.session:token_operation()
      d:step(op)
      local a = op:step(d:response(200, {}, {token_type = "DPoP", access_token = "t", expires_in = 60, scope = "okta.users.read"}), d.now)
      local lines = table.concat(a.log or {}, "\n")
      while a.action == "store" do a = op:step(nil, d.now) end
      assert.same({"okta.users.manage", "okta.groups.read"}, a.info.missing_scopes)
      assert.matches('did not grant the scopes "okta.users.manage okta.groups.read"', lines, 1, true)
    end)
  end)

  describe("the clock", function()
    it("signs iat on the server's clock when ours is off by more than a few seconds", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      d:step(op, d:response(200, {date = http_date(T0 + 600)}, TOKEN))
      local _, a = d:api()
      assert.equal(T0 + 600, claims_of(a).iat)
      assert.equal(600, d.session.stats.clock_offset)
    end)

    for _, skew in ipairs{-600, 600} do
      it(("retries a token request refused for time once, on the server's clock (ours %+d s)"):format(-skew), function()
        local d = driver()
        local op = d.session:token_operation()
        local a = d:step(op)
        assert.equal(T0, claims_of(a).iat)
        a = d:step(op, d:response(401, {date = http_date(T0 + skew)},
          {error = "invalid_client", error_description = "The client_assertion token is expired."}))
        assert.equal("send", a.action)
        assert.equal(T0 + skew, claims_of(a).iat)
        local assertion = oktadpop.decode_jwt(a.body:match("client_assertion=([^&]+)"))
        assert.equal(T0 + skew, assertion.iat)
        a = d:step(op, d:response(401, {date = http_date(T0 + skew)}, {error = "invalid_client"}))
        assert.equal("fail", a.action) -- once only
      end)
    end

    it("does not retry a refusal when the clocks agree", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      local a = d:step(op, d:response(401, {}, {error = "invalid_client", error_description = "no such client"}))
      assert.equal("fail", a.action)
    end)

    it("ignores a Date further off than a real clock can be, and never shares offsets between sessions", function()
      local d, other = driver(), driver()
      local op = d.session:token_operation()
      d:step(op)
      d:step(op, d:response(200, {date = "Fri, 01 Jan 2100 00:00:00 GMT"}, TOKEN))
      assert.equal(0, d.session.stats.clock_offset)
      local _, a = d:api()
      assert.equal(T0, claims_of(a).iat)
      other:token()
      assert.equal(0, other.session.stats.clock_offset)
    end)
  end)

  describe("requests", function()
    it("builds API requests: DPoP scheme, ath, htu without the query, caller headers, JSON body, a timeout", function()
      local d = driver()
      local _, a = d:api("POST", "/api/v1/users", {query = {activate = true}, headers = {["X-Trace"] = "t1"},
        body = {profile = {login = "a@b.c"}}})
      assert.equal(ORG .. "/api/v1/users?activate=true", a.url)
      assert.equal("DPoP tok.en.1", a.headers.Authorization)
      assert.equal("application/json", a.headers["Content-Type"])
      assert.equal("t1", a.headers["X-Trace"])
      assert.same({profile = {login = "a@b.c"}}, cjson.decode(a.body))
      assert.equal(40, a.timeout) -- above Okta's own 30 s query timeout
      local claims = claims_of(a)
      assert.equal(ORG .. "/api/v1/users", claims.htu)
      assert.equal("POST", claims.htm)
      assert.equal(oktadpop.ath("tok.en.1"), claims.ath)
    end)

    it("puts the path into htu as Okta compares it: decoded, with % space \" # escaped again", function()
      local d = driver()
      local cases = {
        ["/api/v1/users/john%40example.com"] = "/api/v1/users/john@example.com", -- okta-sdk-python #541
        ["/api/v1/users/a%2Fb%3Fc%23d%25e%40f"] = "/api/v1/users/a/b?c%23d%25e@f", -- okta-sdk-java PR #1528
        ["/api/v1/groups/x%20y%22z"] = "/api/v1/groups/x%20y%22z",
        ["/api/v1/users/%C3%A9l%C3%A8ve"] = "/api/v1/users/\195\169l\195\168ve", -- UTF-8 decoded too
        ["/api/v1/users/bad%FFutf8"] = "/api/v1/users/bad%FFutf8", -- not UTF-8: stays escaped
        ["/API/v1/users"] = "/API/v1/users",
      }
      for path, htu in pairs(cases) do
        local op, a = d:api("GET", path, {query = {limit = 1}})
        assert.equal(ORG .. path .. "?limit=1", a.url) -- the request line keeps the escapes
        assert.equal(ORG .. htu, claims_of(a).htu, path)
        d:step(op, d:response(200, {}, {}))
      end
    end)

    it("refuses headers it manages, bad names and control characters before any request", function()
      local s = driver().session
      for _, opts in ipairs{{headers = {authorization = "x"}}, {headers = {["X-A"] = "a\r\nHost: evil"}},
                            {headers = {["bad name"] = "x"}}, {headers = {["X-A"] = "a\0b"}}, {bodyy = "x"}} do
        local op, err = s:operation("GET", "/api/v1/users", opts)
        assert.is_nil(op)
        assert.equal("config", err.kind)
      end
      local op, err = s:operation("GET", "/api/v1/users\r\nX: y")
      assert.is_nil(op)
      assert.matches("control character", err.message)
    end)

    it("says what a path must look like", function()
      local op, err = driver().session:operation("GET", "api/v1/users")
      assert.is_nil(op)
      assert.matches("path must start with /", err.message, 1, true)
      op, err = driver().session:operation("GET", "/api/v1/users/100%zz")
      assert.is_nil(op)
      assert.equal("config", err.kind)
    end)

    it("encodes query values and sorts keys", function()
      local _, a = driver():api("GET", "/api/v1/users", {query = {search = 'profile.login eq "a&b"', limit = 2, z = {"1", "2"}}})
      assert.equal(ORG .. "/api/v1/users?limit=2&search=profile.login%20eq%20%22a%26b%22&z=1&z=2", a.url)
    end)

    it("never sends two Content-Type headers", function()
      local _, a = driver():api("POST", "/api/v1/users", {headers = {["content-type"] = "application/json; okta-version=1.0.0"}, body = "{}"})
      local n = 0
      for name in pairs(a.headers) do if name:lower() == "content-type" then n = n + 1 end end
      assert.equal(1, n)
    end)

    it("decodes JSON bodies (integers stay integers on 5.3+), keeps others as strings, reads Link rel=next", function()
      local d = driver()
      local op = d:api()
      local a = d:step(op, d:response(200, {link = '<' .. ORG .. '/api/v1/users?limit=1>; rel="self", <' .. ORG ..
        '/api/v1/users?after=x&limit=1>; rel="next"'}, {{id = "u1", lastLogin = cjson.null, n = 3}}))
      assert.equal("u1", a.response.body[1].id)
      assert.equal(oktadpop.null, a.response.body[1].lastLogin)
      if math.type then assert.equal("integer", math.type(a.response.body[1].n)) end
      assert.equal(ORG .. "/api/v1/users?after=x&limit=1", a.response.next)
      op = d:api()
      a = d:step(op, d:response(200, {["content-type"] = "application/json"}, "<html>"))
      assert.equal("<html>", a.response.body)
      assert.equal("json", a.response.error.kind)
    end)
  end)

  describe("the retry policy", function()
    it("retries a resource nonce challenge once with a fresh proof", function()
      local d = driver()
      local op, a = d:api()
      local jti1 = claims_of(a).jti
      a = d:step(op, d:response(401, {["www-authenticate"] = 'DPoP error="use_dpop_nonce", error_description="nonce"', ["dpop-nonce"] = "rs1"}))
      assert.equal("send", a.action)
      assert.equal("rs1", claims_of(a).nonce)
      assert.are_not.equal(jti1, claims_of(a).jti)
      a = d:step(op, d:response(401, {["www-authenticate"] = 'DPoP error="use_dpop_nonce"', ["dpop-nonce"] = "rs2"}))
      assert.equal("done", a.action)
      assert.equal(401, a.response.status)
      assert.equal("use_dpop_nonce", a.response.error.code)
    end)

    it("retries a proof the transport re-sent once with a fresh one, on idempotent methods only", function()
      local reused = {["www-authenticate"] = 'DPoP algs="ES256", error="invalid_dpop_proof", ' ..
        'error_description="The DPoP proof JWT has already been used.", resource="/api/v1/users/x"'}
      local d = driver()
      local op, a = d:api("GET", "/api/v1/users/x")
      local jti1 = claims_of(a).jti
      a = d:step(op, d:response(400, reused))
      assert.equal("send", a.action)
      assert.are_not.equal(jti1, claims_of(a).jti)
      a = d:step(op, d:response(400, reused)) -- once only
      assert.equal("done", a.action)
      assert.equal(400, a.response.status)
      op, a = d:api("POST", "/api/v1/users/x/lifecycle/suspend")
      a = d:step(op, d:response(400, reused))
      assert.equal("done", a.action)
      assert.matches("may have been applied: check before repeating it", a.response.error.message, 1, true)
    end)

    it("refreshes the token once on 401 invalid_token", function()
      local d = driver()
      local op = d:api()
      local a = d:step(op, d:response(401, www("invalid_token")))
      assert.equal("token", a.kind)
      a = d:step(op, d:response(200, {}, {token_type = "DPoP", access_token = "tok.en.2", expires_in = 3600}))
      assert.equal("api", a.kind)
      assert.equal("DPoP tok.en.2", a.headers.Authorization)
      a = d:step(op, d:response(401, www("invalid_token")))
      assert.equal("done", a.action)
      assert.equal("oauth", a.response.error.kind)
    end)

    it("waits out a 429 on the server's clock, up to max_retry_wait and max_retries", function()
      local d = driver{max_retries = 2, max_retry_wait = 30}
      local op = d:api()
      local server_now = T0 + 3600 -- the server's clock is an hour ahead of ours
      local a = d:step(op, d:response(429, {date = http_date(server_now), ["x-rate-limit-reset"] = tostring(server_now + 5),
        ["x-okta-request-id"] = "req-1"}))
      assert.near(5.05, a.seconds, 1e-9) -- to the reset on the server's Date (floored), 50 ms spare
      a = d:wake(op, a)
      assert.equal("req-1", a.headers["X-Okta-Retry-For"])
      assert.equal("1", a.headers["X-Okta-Retry-Count"])
      a = d:step(op, d:response(429, {date = http_date(server_now),
        ["x-rate-limit-reset"] = ("%d, %d"):format(server_now + 10, server_now + 8)})) -- a repeated header: the least
      assert.near(8.05, a.seconds, 1e-9)
      a = d:wake(op, a)
      assert.equal("2", a.headers["X-Okta-Retry-Count"])
      a = d:step(op, d:response(429, {["x-rate-limit-reset"] = tostring(d.now)}))
      assert.equal("done", a.action) -- max_retries
      assert.equal(429, a.response.status)
      op = d:api()
      a = d:step(op, d:response(429, {["x-rate-limit-reset"] = tostring(d.now + 500)}))
      assert.equal("done", a.action) -- further away than max_retry_wait: answered at once
      assert.equal(501, a.response.error.retry_after)
    end)

    it("waits out a 429 at the token endpoint too, with Okta's retry headers", function()
      local d = driver()
      local op = d.session:token_operation()
      d:step(op)
      local a = d:step(op, d:response(429, {["x-rate-limit-reset"] = tostring(T0 + 3), ["x-okta-request-id"] = "tr1"},
        {errorCode = "E0000047"}))
      assert.near(3.05, a.seconds, 1e-9)
      a = d:wake(op, a)
      assert.equal("token", a.kind)
      assert.equal("tr1", a.headers["X-Okta-Retry-For"])
      assert.equal("1", a.headers["X-Okta-Retry-Count"])
    end)

    it("retries 502, 503, 504 and lost connections on idempotent methods, with capped, jittered backoff", function()
      local d = driver{max_retries = 3, retry_base = 1, max_retry_wait = 3}
      local op = d:api("GET")
      local waits = {}
      for _, status in ipairs{502, 503} do
        local a = d:step(op, d:response(status, {}, "<html>"))
        waits[#waits + 1] = a.seconds
        d:wake(op, a)
      end
      local a = d:step(op, {error = core.error("network", "reset")})
      waits[#waits + 1] = a.seconds
      d:wake(op, a)
      assert.is_true(waits[1] >= 0.5 and waits[1] <= 1, "first wait " .. waits[1])
      assert.is_true(waits[2] >= 1 and waits[2] <= 2, "second wait " .. waits[2])
      assert.is_true(waits[3] >= 1.5 and waits[3] <= 3, "capped third wait " .. waits[3])
      a = d:step(op, d:response(504, {}, "<html>"))
      assert.equal("done", a.action)
      assert.equal(504, a.response.status)
    end)

    it("answers a 500 at once, with a hint on Okta's E0000009 query timeout", function()
      local d = driver()
      local op = d:api("GET", "/api/v1/logs")
      local a = d:step(op, d:response(500, {}, {errorCode = "E0000009", errorSummary = "Internal Server Error"}))
      assert.equal("done", a.action)
      assert.equal("E0000009", a.response.error.code)
      assert.matches("narrow the query", a.response.error.message, 1, true)
    end)

    it("does not retry a POST on a 503 or a lost connection", function()
      local d = driver()
      local op = d:api("POST")
      local a = d:step(op, d:response(503, {}, "<html>"))
      assert.equal("done", a.action)
      op = d:api("POST")
      a = d:step(op, {error = core.error("network", "reset")})
      assert.equal("fail", a.action)
      assert.equal("network", a.error.kind)
    end)

    it("fetches a token first when another operation dropped it", function()
      local d = driver()
      local op1 = d:api()
      local op2 = d:api("GET", "/api/v1/groups")
      d:step(op2, d:response(401, www("invalid_token"))) -- refreshes: op2 now fetches a new token
      local a = d:step(op1, d:response(401, www("use_dpop_nonce"), {}))
      assert.equal("done", a.action) -- no nonce header: nothing to retry with
    end)
  end)

  describe("one token for everyone sharing a store", function()
    it("takes a lock, and a second operation waits for the first's token and adopts it", function()
      local d = driver()
      local first, second = d.session:token_operation(), d.session:token_operation()
      local a = d:step(first)
      assert.equal("send", a.action)
      a = d:step(second) -- the lock is held: it waits
      assert.equal("sleep", a.action)
      d:step(first, d:response(200, {}, TOKEN))
      d.now = d.now + a.seconds
      a = d:step(second)
      assert.equal("done", a.action)
      assert.equal("tok.en.1", a.token)
      assert.equal(1, d.session.stats.token_requests)
    end)

    it("adopts a token another process published in the store, without a request", function()
      local store, dpop = core.memory_store(), oktadpop.generate_key("ES256")
      local one, two = driver{store = store, dpop_key = dpop}, driver{store = store, dpop_key = dpop}
      one:token()
      local a = two:step(two.session:token_operation())
      assert.equal("done", a.action)
      assert.equal(0, two.session.stats.token_requests)
    end)

    it("names the store's keys by org, client, token endpoint, scopes and DPoP key", function()
      local store, dpop = core.memory_store(), oktadpop.generate_key("ES256")
      local one = driver{store = store, dpop_key = dpop}
      one:token()
      for _, other in ipairs{{scopes = "okta.users.manage"}, {token_url = ORG .. "/oauth2/default/v1/token"},
                             {client_id = "0oa2"}} do
        other.store, other.dpop_key = store, dpop
        local d = driver(other)
        local a = d:step(d.session:token_operation())
        assert.equal("send", a.action) -- not the first client's token
      end
    end)

    it("gives the lock up when a holder never finishes, and gives back what an aborted operation holds", function()
      local d = driver{timeout = 1, connect_timeout = 1, max_retries = 0, max_retry_wait = 0}
      local stuck = d.session:token_operation()
      d:step(stuck) -- holds the lock, never answered
      local op = d.session:token_operation()
      local a = d:step(op)
      while a.action == "sleep" do a = d:wake(op, a) end
      assert.equal("send", a.action) -- after the lock's ttl (3 x 2 s)
      local releases = stuck:abort()
      assert.equal(1, #releases)
      assert.equal("delete", releases[1].op)
    end)
  end)

  describe("pacing", function()
    local function rl(limit, remaining, reset)
      return {["x-rate-limit-limit"] = tostring(limit), ["x-rate-limit-remaining"] = tostring(remaining),
              ["x-rate-limit-reset"] = tostring(reset)}
    end

    it("keeps each bucket under max_capacity of its limit, waiting for the next window", function()
      local d = driver{max_capacity = 0.4}
      local reset = T0 + 30
      local sent = 0
      for i = 1, 5 do
        local op, a = d:api("GET", "/api/v1/users/00u" .. i)
        assert.equal("send", a.action, "request " .. i)
        sent = sent + 1
        a = d:step(op, d:response(200, rl(10, 10 - sent, reset), {}))
        assert.equal("done", a.action)
        if sent == 4 then break end
      end
      local op, a = d:api("GET", "/api/v1/users/00u9") -- the fifth in a window of 10 at 40 %
      assert.equal("sleep", a.action)
      assert.is_true(math.abs(a.seconds - 30.05) < 0.01, a.seconds)
      a = d:wake(op, a)
      assert.equal("send", a.action) -- a new window
      assert.equal(1, d.session.stats.rate_waits)
    end)

    it("says what each sleep waits for, with the server's figures, for a driver's on_wait", function()
      local d = driver{max_capacity = 0.5, max_retry_wait = 30}
      local op = d:api("GET", "/api/v1/groups")
      d:step(op, d:response(200, rl(10, 4, T0 + 20), {}))
      local _, a = d:api("GET", "/api/v1/groups") -- paced: the bucket's budget is spent
      assert.same({reason = "ratelimit", seconds = a.seconds, until_time = T0 + a.seconds, bucket = "/api/v1/groups",
                   limit = 10, remaining = 4, reset = T0 + 20}, a.wait)
      op = d:api("GET", "/api/v1/apps")
      a = d:step(op, d:response(429, {["x-rate-limit-limit"] = "100", ["x-rate-limit-remaining"] = "0",
        ["x-rate-limit-reset"] = tostring(T0 + 7)}))
      assert.near(7.05, a.wait.seconds, 1e-9)
      assert.same({reason = "retry", seconds = a.wait.seconds, until_time = T0 + a.wait.seconds, bucket = "/api/v1/apps",
                   limit = 100, remaining = 0, reset = T0 + 7}, a.wait)
      op = d:api("GET", "/api/v1/users/00u1")
      a = d:step(op, d:response(503, {}, "busy"))
      assert.equal("server_error", a.wait.reason)
      assert.is_nil(a.wait.bucket)
      op = assert(d.session:poll("/api/v1/logs", {interval = 15}))
      d:step(op)
      a = d:step(op, d:response(200, {link = '<' .. ORG .. '/api/v1/logs?after=c>; rel="next"'}, {}))
      assert.same({reason = "poll", seconds = 15, until_time = d.now + 15}, a.wait)
    end)

    it("counts what the server says is used when others share the bucket", function()
      local d = driver{max_capacity = 0.5}
      local op = d:api("GET", "/api/v1/groups")
      d:step(op, d:response(200, rl(10, 4, T0 + 20), {})) -- six used by someone else already
      local _, a = d:api("GET", "/api/v1/groups")
      assert.equal("sleep", a.action)
    end)

    it("keeps buckets apart: a full users bucket does not hold back the logs", function()
      local d = driver{max_capacity = 0.1}
      local op = d:api("GET", "/api/v1/users/00u1")
      d:step(op, d:response(200, rl(10, 9, T0 + 20), {}))
      local _, a = d:api("GET", "/api/v1/users/00u2")
      assert.equal("sleep", a.action)
      _, a = d:api("GET", "/api/v1/logs")
      assert.equal("send", a.action)
    end)

    it("sends one request to a bucket it knows nothing of, then paces", function()
      local d = driver()
      local probe, a = d:api("GET", "/api/v1/apps")
      assert.equal("send", a.action)
      local op
      op, a = d:api("GET", "/api/v1/apps")
      assert.equal("sleep", a.action) -- waits for the first answer
      d:step(probe, d:response(200, rl(100, 99, T0 + 60), {}))
      a = d:wake(op, a)
      assert.equal("send", a.action)
    end)

    it("shares a bucket's limit and count with every session on the store: one probe, counted", function()
      local store = core.memory_store()
      local a1, a2 = driver{store = store, max_capacity = 0.5}, driver{store = store, max_capacity = 0.5}
      local probe, a = a1:api("GET", "/api/v1/apps")
      assert.equal("send", a.action)
      a1:step(probe, a1:response(200, rl(4, 3, T0 + 60), {}))
      -- the other session (another nginx worker) learns the limit from the store: no probe of
      -- its own; the probe already used one of the two requests allowed (50 % of 4)
      local op
      op, a = a2:api("GET", "/api/v1/apps")
      assert.equal("send", a.action)
      a2:step(op, a2:response(200, rl(4, 2, T0 + 60), {}))
      _, a = a2:api("GET", "/api/v1/apps")
      assert.equal("sleep", a.action)
      _, a = a1:api("GET", "/api/v1/apps")
      assert.equal("sleep", a.action)
    end)

    it("never invents a window: once the server's reset has passed, the next request learns the new one", function()
      local d = driver{max_capacity = 0.5}
      local op = d:api("GET", "/api/v1/users/00u1")
      d:step(op, d:response(200, rl(4, 3, T0 + 2), {})) -- a 2 s window
      local _, a = d:api("GET", "/api/v1/users/00u2")
      assert.equal("send", a.action) -- the second of two allowed
      local op3
      op3, a = d:api("GET", "/api/v1/users/00u3")
      assert.equal("sleep", a.action)
      assert.is_true(a.seconds <= 2 + 1, "never past the server's reset plus a second")
      assert.equal("ratelimit", a.wait.reason)
      a = d:wake(op3, a)
      assert.equal("send", a.action) -- a probe of the next window, at once
      d:step(op3, d:response(200, rl(4, 0, T0 + 4), {})) -- other apps used the rest of it
      _, a = d:api("GET", "/api/v1/users/00u4")
      assert.equal("sleep", a.action) -- Remaining 0: nothing more in this window
      assert.is_true(a.seconds <= 2 + 1)
    end)

    it("takes a bucket that answers without rate-limit headers as none for a window: only concurrency applies", function()
      local d = driver{max_concurrency = 50}
      local probe, a = d:api("GET", "/api/v1/users/00u1")
      assert.equal("send", a.action)
      local _, waiting = d:api("GET", "/api/v1/users/00u2")
      assert.equal("sleep", waiting.action) -- the probe learns first
      d:step(probe, d:response(200, {}, {}))
      for i = 1, 20 do
        local _, b = d:api("GET", "/api/v1/users/00u" .. (10 + i))
        assert.equal("send", b.action)
      end
      assert.is_truthy(d.session.stats.buckets["GET /api/v1/users/{id}"].unlimited_until)
      d.now = d.now + 61
      local _, b = d:api("GET", "/api/v1/users/00u99")
      assert.equal("send", b.action) -- the next window's probe
      _, b = d:api("GET", "/api/v1/users/00u98")
      assert.equal("sleep", b.action)
    end)

    it("ends its window for every session on the store after a 429 it did not expect", function()
      local store = core.memory_store()
      local a1, a2 = driver{store = store, max_capacity = 0.5}, driver{store = store, max_capacity = 0.5}
      local op = a1:api("GET", "/api/v1/groups")
      a1:step(op, a1:response(200, rl(20, 19, T0 + 60), {}))
      local a
      op, a = a1:api("GET", "/api/v1/groups") -- the second of ten allowed
      assert.equal("send", a.action)
      a = a1:step(op, a1:response(429, rl(20, 18, T0 + 60), {errorCode = "E0000047"})) -- the app's share is lower
      assert.equal(1, a1.session.stats.budget_cuts)
      assert.equal(1, a1.session.stats.rate_limited)
      local _, b = a2:api("GET", "/api/v1/groups")
      assert.equal("sleep", b.action) -- the other session learned it through the store
    end)

    it("never has more than max_concurrency requests in flight", function()
      local d = driver{max_concurrency = 1}
      d:token()
      local ops, sends = {}, 0
      for i = 1, 3 do
        ops[i] = d.session:operation("GET", "/api/v1/users/00u" .. i)
        local a = d:step(ops[i])
        if a.action == "send" then sends = sends + 1 end
        if i == 1 then d:step(ops[1], d:response(200, rl(1000, 999, T0 + 60), {})) ops[1] = nil end
      end
      assert.equal(2, sends) -- the first answered, the second in flight, the third waits
    end)

    it("bounds the wait for a slot or the budget by max_queue_wait", function()
      local d = driver{max_concurrency = 1, max_queue_wait = 1}
      d:token()
      d:step(d.session:operation("GET", "/api/v1/users/1")) -- in flight forever
      local op = d.session:operation("GET", "/api/v1/users/2")
      local a = d:step(op)
      while a.action == "sleep" do a = d:wake(op, a) end
      assert.equal("fail", a.action)
      assert.equal("ratelimit", a.error.kind)
    end)
  end)

  describe("pages", function()
    local function page(d, items, next_url)
      return d:response(200, next_url and {link = '<' .. next_url .. '>; rel="next"'} or {}, items)
    end

    it("hands out each page, stops at the first empty one, and says what it did", function()
      local d = driver()
      d:token()
      local op = assert(d.session:pages("/api/v1/logs", {since = "2026-01-01T00:00:00Z"}))
      local a = d:step(op)
      assert.equal(ORG .. "/api/v1/logs?since=2026-01-01T00%3A00%3A00Z", a.url)
      a = d:step(op, page(d, {{uuid = "e1"}, {uuid = "e2"}}, ORG .. "/api/v1/logs?after=c1"))
      assert.equal("items", a.action)
      assert.equal(2, #a.items)
      a = d:step(op)
      assert.equal(ORG .. "/api/v1/logs?after=c1", a.url)
      a = d:step(op, page(d, {}, ORG .. "/api/v1/logs?after=c1")) -- Okta's polling query: empty, with a next link
      assert.equal("done", a.action)
      assert.equal(2, a.pages)
      assert.equal(2, a.items)
    end)

    it("fails with err.next, the page to resume from, and resumes there with nothing lost or repeated", function()
      local d = driver()
      d:token()
      local op = d.session:pages("/api/v1/users")
      d:step(op)
      d:step(op, page(d, {{id = 1}}, ORG .. "/api/v1/users?after=1"))
      d:step(op)
      local a = d:step(op, d:response(400, {}, {errorCode = "E0000031", errorSummary = "Invalid search"}))
      assert.equal("fail", a.action)
      assert.equal(ORG .. "/api/v1/users?after=1", a.error.next)
      op = d.session:pages("/api/v1/users", nil, {from = a.error.next})
      a = d:step(op)
      assert.equal(ORG .. "/api/v1/users?after=1", a.url)
    end)

    it("refuses a next link to another origin, and stops at max_pages with err.next", function()
      local d = driver()
      d:token()
      local op = d.session:pages("/api/v1/users")
      d:step(op)
      local a = d:step(op, page(d, {{id = 1}}, "https://evil.example.com/api/v1/users?after=1"))
      assert.equal("fail", a.action)
      assert.matches("only " .. ORG .. " receives the token", a.error.message, 1, true)
      op = d.session:pages("/api/v1/users", nil, {max_pages = 1})
      d:step(op)
      d:step(op, page(d, {{id = 1}}, ORG .. "/api/v1/users?after=1"))
      a = d:step(op)
      assert.equal("fail", a.action)
      assert.equal("limit", a.error.kind)
      assert.equal(ORG .. "/api/v1/users?after=1", a.error.next)
      local none, err = d.session:pages("/api/v1/users", nil, {from = "https://evil.example.com/x"})
      assert.is_nil(none)
      assert.equal("config", err.kind)
    end)

    it("polls: sleeps interval after an empty page, asks the same link again, stops at its limits", function()
      local d = driver()
      d:token()
      local op = assert(d.session:poll("/api/v1/logs", {since = "2026-01-01T00:00:00Z", interval = 15, max_items = 3}))
      local a = d:step(op)
      a = d:step(op, page(d, {}, ORG .. "/api/v1/logs?after=c0"))
      assert.equal("sleep", a.action)
      assert.equal(15, a.seconds)
      a = d:wake(op, a)
      assert.equal(ORG .. "/api/v1/logs?after=c0", a.url)
      a = d:step(op, page(d, {{uuid = "e1"}, {uuid = "e2"}}, ORG .. "/api/v1/logs?after=c2"))
      assert.equal("items", a.action)
      a = d:step(op)
      assert.equal(ORG .. "/api/v1/logs?after=c2", a.url) -- items came: no sleep
      a = d:step(op, page(d, {{uuid = "e3"}}, ORG .. "/api/v1/logs?after=c3"))
      assert.equal("items", a.action)
      a = d:step(op)
      assert.equal("done", a.action) -- max_items reached
      assert.equal(ORG .. "/api/v1/logs?after=c3", a.next)
    end)

    it("stops a walk at exactly max_items, mid-page, and names that page and what of it was handed out", function()
      local d = driver()
      d:token()
      local op = assert(d.session:pages("/api/v1/users", {limit = 3}, {max_items = 4}))
      local a = d:step(op)
      a = d:step(op, page(d, {{id = 1}, {id = 2}, {id = 3}}, ORG .. "/api/v1/users?after=3&limit=3"))
      assert.equal(3, #a.items)
      a = d:step(op)
      assert.equal(ORG .. "/api/v1/users?after=3&limit=3", a.url)
      a = d:step(op, page(d, {{id = 4}, {id = 5}, {id = 6}}, ORG .. "/api/v1/users?after=6&limit=3"))
      assert.equal("items", a.action)
      assert.same({{id = 4}}, a.items) -- cut: one of this page's three
      a = d:step(op)
      assert.equal("done", a.action) -- no third request
      assert.equal(4, a.items)
      assert.equal(ORG .. "/api/v1/users?after=3&limit=3", a.next) -- the cut page itself...
      assert.equal(1, a.skip) -- ...of which one item was handed out
      -- a walk that ends at a page boundary names the next page, with nothing to skip
      op = assert(d.session:pages("/api/v1/users", nil, {max_items = 2}))
      d:step(op)
      a = d:step(op, page(d, {{id = 1}, {id = 2}}, ORG .. "/api/v1/users?after=2"))
      assert.equal(2, #a.items)
      a = d:step(op)
      assert.equal("done", a.action)
      assert.equal(ORG .. "/api/v1/users?after=2", a.next)
      assert.is_nil(a.skip)
    end)

    it("polls up to exactly max_items, cutting the page that passes it", function()
      local d = driver()
      d:token()
      local op = assert(d.session:poll("/api/v1/logs", {interval = 15, max_items = 2}))
      d:step(op)
      local a = d:step(op, page(d, {{uuid = "e1"}, {uuid = "e2"}, {uuid = "e3"}}, ORG .. "/api/v1/logs?after=c3"))
      assert.same({{uuid = "e1"}, {uuid = "e2"}}, a.items)
      a = d:step(op)
      assert.equal("done", a.action)
      assert.equal(2, a.items)
      assert.equal(2, a.skip)
    end)

    it("polls for a stated duration", function()
      local d = driver()
      d:token()
      local op = d.session:poll("/api/v1/logs", {interval = 10, duration = 25})
      local a, polls = d:step(op), 0
      for _ = 1, 5 do
        polls = polls + 1
        a = d:step(op, page(d, {}, ORG .. "/api/v1/logs?after=c"))
        if a.action == "done" then break end
        a = d:wake(op, a)
      end
      assert.equal("done", a.action)
      assert.equal(3, polls) -- at 0, 10 and 20 s; the next would be past 25 s
      assert.equal(T0 + 20, d.now)
    end)
  end)

  describe("results and errors", function()
    it("keeps what Okta said in a challenge: code, description, scope, the raw header", function()
      local d = driver()
      local op = d:api()
      local a = d:step(op, d:response(403, {["www-authenticate"] = 'DPoP algs="ES256", authorization_uri="http://acme/oauth2/v1/authorize", ' ..
        'realm="http://acme", scope="okta.users.read", error="insufficient_scope", error_description="The access token ' ..
        'provided does not contain the required scopes.", resource="/api/v1/users"'}))
      local err = a.response.error
      assert.equal("oauth", err.kind)
      assert.equal("insufficient_scope", err.code)
      assert.equal("okta.users.read", err.scope)
      assert.equal("The access token provided does not contain the required scopes.", err.description)
      assert.matches("okta.users.read", err.message, 1, true)
      assert.matches("grant the app that scope", err.message, 1, true)
      assert.matches("^DPoP algs=", err.www_authenticate)
    end)

    it("keeps Okta's JSON error members", function()
      local d = driver()
      local op = d:api()
      local a = d:step(op, d:response(403, {["x-okta-request-id"] = "r1"}, {errorCode = "E0000006",
        errorSummary = "You do not have permission to perform the requested action", errorLink = "E0000006",
        errorId = "oae123", errorCauses = {{errorSummary = "c1"}}}))
      local err = a.response.error
      assert.equal("http", err.kind)
      assert.equal("E0000006", err.code)
      assert.equal("oae123", err.error_id)
      assert.equal("E0000006", err.error_link)
      assert.same({"c1"}, err.causes)
      assert.equal("r1", err.request_id)
      assert.matches("admin role", err.message, 1, true)
      assert.equal(1, select(2, tostring(err):gsub("E0000006", ""))) -- tostring does not repeat the code
      assert.equal(": c1 (request r1)", tostring(err):sub(-17)) -- Okta's reason, then the request id
      local many = {}
      for i = 1, 500 do many[i] = {errorSummary = "c" .. i} end -- the server decides how many
      op = d:api()
      a = d:step(op, d:response(400, {}, {errorCode = "E0000001", errorSummary = "Api validation failed",
        errorCauses = many}))
      local text = tostring(a.response.error)
      assert.equal(500, #a.response.error.causes)
      assert.truthy(text:find(": c1; c2; ", 1, true))
      assert.truthy(text:find("; c500", 1, true))
    end)

    it("answers a result the way client:get does (core.result)", function()
      local d = driver()
      local op = d:api("DELETE", "/api/v1/users/x")
      local res = d:step(op, d:response(204, {})).response
      local body, same = core.result(res)
      assert.is_true(body)
      assert.equal(res, same)
      op = d:api()
      res = d:step(op, d:response(404, {}, {errorCode = "E0000007", errorSummary = "Not found"})).response
      local none, err
      none, err, same = core.result(res)
      assert.is_nil(none)
      assert.equal("E0000007", err.code)
      assert.equal(res, same)
    end)

    it("prints long server-provided error fields without harm", function()
      local d = driver()
      local op = d:api()
      local a = d:step(op, d:response(404, {["x-okta-request-id"] = ("r"):rep(3000)}, {errorCode = ("E"):rep(988), errorSummary = ("s"):rep(5000)}))
      for _ = 1, 3 do assert.matches("^oktadpop http error", tostring(a.response.error)) end
      local err = core.error("http", ("m"):rep(9000))
      err.code = ("c"):rep(9000)
      assert.is_string(tostring(err))
    end)
  end)

  describe("sessions", function()
    it("joins a scope list with a long entry correctly", function()
      local d = driver{scopes = {("a"):rep(1024), "okta.users.read", ("b"):rep(5000)}}
      assert.equal(("a"):rep(1024) .. " okta.users.read " .. ("b"):rep(5000), d.session.scopes)
    end)

    it("answers a closed session, or one whose key was freed, with an error and no crash", function()
      local d = driver{dpop_key = oktadpop.generate_key("ES256")}
      local op = d.session:token_operation()
      d.session:close()
      local a = d:step(op)
      assert.equal("fail", a.action)
      local key = oktadpop.generate_key("ES256")
      d = driver{dpop_key = key}
      getmetatable(key).__gc(key)
      op = d.session:token_operation()
      assert.is_nil(op)
      local none, err = d.session:operation("GET", "/api/v1/users")
      assert.is_nil(none)
      assert.equal("key", err.kind)
    end)

    it("refuses a token_url with a bad escape, naming it", function()
      local s, err = core.session{org_url = ORG, client_id = "x", scopes = "s", private_key = KEY, token_url = ORG .. "/t%zz"}
      assert.is_nil(s)
      assert.matches("token_url", err.message)
    end)
  end)
end)
