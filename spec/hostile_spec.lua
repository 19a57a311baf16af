-- Hostile servers and hostile input: what oktadpop sends when the caller hands it CR/LF, and
-- what it does with answers built to hurt (huge, compressed, slow, redirecting, off-origin,
-- malformed JSON, bad TLS). A raw responder (spec/support/responder.mjs) records every byte it
-- receives, so the tests check what a server actually got; the emulator supplies its faults.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local responder = require "spec.support.responder"

local CLIENT_ID = "0oahostile0000000001"

local function clock()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*a"))
  p:close()
  return t
end

describe("hostile servers", function()
  local r, other, emu, key

  local function client(url, extra)
    local cfg = {org_url = url, client_id = CLIENT_ID, scopes = "okta.users.read", private_key = key,
                 max_retries = 0, timeout = 5, retry_base = 0.01}
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return assert(oktadpop.new(cfg))
  end

  -- The requests the responder got after the first `from` of them.
  local function since(srv, from)
    local all, out = srv:requests(), {}
    for i = from + 1, #all do out[#out + 1] = all[i] end
    return out
  end

  setup(function()
    key = assert(oktadpop.generate_key("ES256", {kid = "hostile"}))
    r = responder.start()
    other = responder.start()
    emu = emulator.start{tls = false, config = {users = 5, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {key:public_jwk()}}, dpop_required = true, scopes = {"okta.users.read"}}}}}
  end)

  teardown(function()
    if r then r:stop() end
    if other then other:stop() end
    if emu then emu:stop() end
  end)

  describe("caller input never becomes protocol", function()
    it("refuses CR, LF or NUL in a path before anything is sent", function()
      local okta = client(r.url)
      local n0 = #r:requests()
      -- (a NUL would cut the path short in C: "/groups/00g1\0/users/x" must not become "/groups/00g1")
      for _, bad in ipairs({"\r", "\n", "\r\n", "\r\nX-Evil: 1\r\n\r\nGET /x HTTP/1.1", "\0/more", "\0"}) do
        local body, err = okta:get("/echo" .. bad)
        assert.is_nil(body)
        assert.equal("config", err.kind)
        local res, err2 = okta:request("GET", r.url .. "/echo" .. bad)
        assert.is_nil(res)
        assert.equal("config", err2.kind)
        local ok, err3 = pcall(function() for _ in okta:paginate("/echo" .. bad) do end end)
        assert.is_false(ok)
        assert.equal("config", err3.kind)
      end
      assert.equal(0, #since(r, n0))
    end)

    it("percent-encodes CR and LF in query keys and values", function()
      local okta = client(r.url)
      local n0 = #r:requests()
      assert(okta:get("/echo", {q = "a\r\nX-Evil: 1", ["k\r\nX-Evil2: 2"] = "v\n"}))
      local got = since(r, n0)
      local api = got[#got]
      assert.equal("GET", api.method)
      assert.matches("q=a%0D%0AX-Evil%3A%201", api.target, 1, true)
      assert.matches("k%0D%0AX-Evil2%3A%202=v%0A", api.target, 1, true)
      for _, req in ipairs(got) do
        local head = req.raw:match("^(.-\r\n)\r\n")
        assert.is_nil(head:find("\nX%-Evil"))
        assert.is_nil(head:find("[^\r]\n")) -- no bare LF anywhere in the head
      end
    end)

    it("refuses CR or LF in a header value, and a header name that is not a token", function()
      local okta = client(r.url)
      assert(okta:token())
      local n0 = #r:requests()
      local bad = {
        {["X-Test"] = "a\r\nX-Evil: 1"}, {["X-Test"] = "a\nX-Evil: 1"}, {["X-Test"] = "a\rX-Evil: 1"},
        {["X-Evil: 1\r\nX-Test"] = "a"}, {["X-Test:"] = "a"}, {["X Test"] = "a"}, {[""] = "a"},
        {["X-Test"] = "a\0\r\nX-Evil: 1"}, {["X-Test"] = "a\0"}, {["X-Te\0st"] = "a"},
      }
      for _, headers in ipairs(bad) do
        local res, err = okta:request("GET", "/echo", {headers = headers})
        assert.is_nil(res)
        assert.equal("config", err.kind)
      end
      assert.equal(0, #since(r, n0)) -- not one of them reached the server
      local okta2 = client(r.url) -- nor made a token request first
      assert.is_nil((okta2:request("GET", "/echo", {headers = {["X Test"] = "a"}})))
      assert.equal(0, #since(r, n0))
      assert(okta:request("GET", "/echo", {headers = {["X-Test"] = "fine, with: punctuation"}}))
      assert.matches("\r\nX%-Test: fine, with: punctuation\r\n", since(r, n0)[1].raw)
    end)

    it("refuses a method that is not a token", function()
      local okta = client(r.url)
      local n0 = #r:requests()
      for _, m in ipairs({"GE\r\nT", "GET /x", "", "G\0T"}) do
        local res, err = okta:request(m, "/echo")
        assert.is_nil(res)
        assert.equal("config", err.kind)
      end
      assert.equal(0, #since(r, n0))
    end)
  end)

  describe("answers built to hurt", function()
    it("caps response headers", function()
      local okta = client(r.url)
      local body, err = okta:get("/big-headers")
      assert.is_nil(body)
      assert.equal("network", err.kind)
      assert.matches("headers exceed", err.message, 1, true)
    end)

    it("caps the body at max_body, announced or chunked, and fails fast", function()
      local okta = client(r.url, {max_body = 64 * 1024})
      assert(okta:token())
      for _, path in ipairs({"/big-body", "/big-body-chunked"}) do
        local t0 = clock()
        local body, err = okta:get(path)
        assert.is_nil(body)
        assert.equal("network", err.kind)
        assert.matches("exceeds max_body (65536 bytes)", err.message, 1, true)
        assert.is_true(clock() - t0 < 3)
      end
    end)

    it("never asks for compression and never inflates a gzip bomb", function()
      local okta = client(r.url, {max_body = 1024 * 1024}) -- the bomb inflates to 16 MiB
      local n0 = #r:requests()
      local res = assert(okta:request("GET", "/gzip-bomb"))
      assert.equal(200, res.status)
      assert.equal("gzip", res.headers["content-encoding"])
      assert.is_string(res.body) -- the raw gzip bytes, untouched
      assert.equal("\31\139", res.body:sub(1, 2))
      assert.is_true(#res.body < 64 * 1024)
      assert.is_string(res.json_error)
      local body, err = okta:get("/gzip-bomb")
      assert.is_nil(body)
      assert.equal("json", err.kind)
      for _, req in ipairs(since(r, n0)) do
        assert.is_nil(req.raw:lower():find("accept%-encoding"))
        assert.is_nil(req.raw:lower():find("\nte:"))
      end
    end)

    it("holds the timeout against a server that trickles the body or the headers", function()
      local okta = client(r.url, {timeout = 1})
      assert(okta:token())
      for _, path in ipairs({"/trickle", "/trickle-head"}) do
        local t0 = clock()
        local body, err = okta:get(path)
        assert.is_nil(body)
        assert.equal("timeout", err.kind)
        assert.is_true(clock() - t0 < 3)
      end
    end)

    it("does not follow a redirect to another host, which sees no request", function()
      local okta = client(emu.url)
      assert(okta:token())
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "redirect", location = other.url .. "/steal", times = 2}}}
      local res = assert(okta:request("GET", "/api/v1/users"))
      assert.equal(302, res.status)
      assert.equal(other.url .. "/steal", res.headers.location)
      local body, err = okta:get("/api/v1/users")
      assert.is_nil(body)
      assert.equal(302, err.status)
      assert.equal(0, #other:requests())
    end)

    it("refuses a next link to another host, which sees no request", function()
      local okta = client(r.url)
      local items = {}
      local ok, err = pcall(function()
        for item in okta:paginate("/next-off-host", {other = other.port}) do items[#items + 1] = item end
      end)
      assert.is_false(ok)
      assert.equal("config", err.kind)
      assert.matches("next link was refused", err.message, 1, true)
      assert.is_true(#items <= 2) -- (the page that carries the link is refused whole)
      assert.equal(0, #other:requests())
    end)

    it("gives nil and a json error for non-JSON on a 200", function()
      local okta = client(emu.url)
      assert(okta:token())
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "not_json", times = 1}}}
      local body, err, res = okta:get("/api/v1/users")
      assert.is_nil(body)
      assert.equal("json", err.kind)
      assert.equal(200, err.status)
      assert.equal("<html>oops</html>", res.body)
      body, err = client(r.url):get("/not-json")
      assert.is_nil(body)
      assert.equal("json", err.kind)
    end)

    it("bounds deeply nested JSON: an error, not a crash", function()
      local okta = client(emu.url)
      assert(okta:token())
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "deep_json", times = 1}}}
      local body, err = okta:get("/api/v1/users")
      assert.is_nil(body)
      assert.equal("json", err.kind)
      body, err = client(r.url):get("/deep-object")
      assert.is_nil(body)
      assert.equal("json", err.kind)
    end)

    it("passes invalid UTF-8 in JSON strings through as bytes, and refuses a lone surrogate", function()
      local okta = client(r.url)
      local body = assert(okta:get("/bad-utf8"))
      assert.equal("\255\254\195\40\237\160\128", body.s)
      assert.is_true(body.ok)
      local b2, err = okta:get("/lone-surrogate")
      assert.is_nil(b2)
      assert.equal("json", err.kind)
    end)
  end)

  describe("TLS", function()
    local good, wrong_host, unknown_ca
    setup(function()
      good = responder.start{tls = "server"}
      wrong_host = responder.start{tls = "wrong-host"}
      unknown_ca = responder.start{tls = "unknown-ca"}
    end)
    teardown(function()
      for _, s in ipairs({good, wrong_host, unknown_ca}) do if s then s:stop() end end
    end)

    it("talks to a server whose certificate the CA vouches for (the control)", function()
      assert(client(good.url, {ca_file = good.ca_file}):token())
      assert.equal(1, #good:requests())
    end)

    for _, case in ipairs({{"for the wrong host", function() return wrong_host end},
                           {"from an unknown CA", function() return unknown_ca end}}) do
      it("refuses a certificate " .. case[1] .. " before sending a byte of the request", function()
        local srv = case[2]()
        local token, err = client(srv.url, {ca_file = srv.ca_file}):token()
        assert.is_nil(token)
        assert.equal("network", err.kind)
        assert.is_true(srv:connections() >= 1) -- it got as far as a handshake
        assert.equal(0, #srv:requests())     -- and not one byte of HTTP
      end)
    end
  end)
end)
