-- Okta as it really answers, and what the client makes of it: DPoP and scope errors on /api/v1
-- with an empty body and everything in the WWW-Authenticate challenge (okta-sdk-golang #554,
-- terraform-provider-okta #2375, #2392), E0000006 where the admin role lacks a permission,
-- fewer scopes granted than asked, a clock 10 minutes off, and Okta's 5xx policy: 502, 503 and
-- 504 retried on idempotent methods, a 500 (E0000009, a query timeout) answered at once.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local util = require "spec.support.util"

local FULL, READONLY, PARTIAL = "0oafidelity000000001", "0oafidelity000000002", "0oafidelity000000003"

describe("Okta's answers", function()
  local emu, key

  local function client(id, extra)
    local lines = {}
    local cfg = {org_url = emu.url, client_id = id or FULL, scopes = "okta.users.read okta.users.manage okta.groups.read",
                 private_key = key, retry_base = 0.02, debug = function(l) lines[#lines + 1] = l end}
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return assert(oktadpop.new(cfg)), lines
  end

  setup(function()
    key = assert(oktadpop.generate_key("RS256", {kid = "fidelity"}))
    local jwks = {keys = {key:public_jwk()}}
    local scopes = {"okta.users.read", "okta.users.manage", "okta.groups.read", "okta.logs.read"}
    emu = emulator.start{tls = false, config = {users = 30, log_events = 5, clients = {
      {client_id = FULL, jwks = jwks, scopes = scopes},
      {client_id = READONLY, jwks = jwks, scopes = scopes, admin_role = "READ_ONLY_ADMIN"},
      {client_id = PARTIAL, jwks = jwks, scopes = scopes, grant_scopes = {"okta.users.read"}},
    }}}
  end)
  teardown(function() if emu then emu:stop() end end)
  before_each(function() emu:reset() emu:control{clock_skew = 0} end)

  describe("errors", function()
    it("names the scope to grant from an empty-bodied 403 insufficient_scope", function()
      local okta = client(FULL, {scopes = "okta.users.read"})
      local body, err = okta:get("/api/v1/groups")
      assert.is_nil(body)
      assert.equal(403, err.status)
      assert.equal("oauth", err.kind)
      assert.equal("insufficient_scope", err.code)
      assert.equal("okta.groups.read", err.scope)
      assert.equal("The access token provided does not contain the required scopes.", err.description)
      assert.matches('error="insufficient_scope"', err.www_authenticate, 1, true)
      assert.matches("scope okta.groups.read", err.message, 1, true)
      assert.matches("grant the app that scope", err.message, 1, true)
    end)

    it("tells E0000006 (the admin role lacks the permission) apart, keeping errorId and errorLink", function()
      local okta = client(READONLY)
      local body, err = okta:post("/api/v1/users/00u000000000000001/lifecycle/suspend")
      assert.is_nil(body)
      assert.equal(403, err.status)
      assert.equal("http", err.kind)
      assert.equal("E0000006", err.code)
      assert.equal("E0000006", err.error_link)
      assert.matches("^oae", err.error_id)
      assert.matches("admin role", err.message, 1, true)
      assert.is_nil(err.scope)
    end)

    it("answers a refused proof on /api/v1 with 400, an empty body and the challenge", function()
      local okta = client(FULL)
      local token = assert(okta:token())
      local url = emu.url .. "/api/v1/users"
      local forged = assert(oktadpop.dpop_proof(okta.dpop_key, {htm = "GET", htu = emu.url .. "/api/v1/other",
        access_token = token}))
      local out = util.sh(("curl -s -D - -H 'Authorization: DPoP %s' -H 'DPoP: %s' '%s'"):format(token, forged, url))
      assert.matches("^HTTP/1.1 400", out)
      assert.matches("\r\n\r\n$", out) -- an empty body
      local www = out:lower():match("\r\nwww%-authenticate: ([^\r\n]+)")
      assert.matches('error="invalid_dpop_proof"', www, 1, true)
      assert.matches('resource="/api/v1/users"', www, 1, true)
      assert.matches("^dpop algs=", www)
    end)

    it("never resends a proof after a 429 (Okta would call it already used)", function()
      local okta = client(FULL, {max_retry_wait = 3})
      assert(okta:token())
      emu:reset()
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "rate_limit", reset_in = 1, times = 1}}}
      assert(okta:get("/api/v1/users", {limit = 1}))
      local log = emu:log()
      assert.equal(429, log[1].status)
      assert.equal(200, log[2].status)
      assert.are_not.equal(log[1].proof_jti, log[2].proof_jti)
    end)
  end)

  describe("scopes", function()
    it("says which requested scopes were not granted, in token() info and once in the debug log", function()
      local okta, lines = client(PARTIAL)
      local _, info = assert(okta:token())
      assert.equal("okta.users.read", info.scope)
      assert.same({"okta.users.manage", "okta.groups.read"}, info.missing_scopes)
      local said = 0
      for _, l in ipairs(lines) do if l:find("did not grant", 1, true) then said = said + 1 end end
      assert.equal(1, said)
      okta:token(true) -- a second token with the same grants: not said again
      said = 0
      for _, l in ipairs(lines) do if l:find("did not grant", 1, true) then said = said + 1 end end
      assert.equal(1, said)
    end)
  end)

  describe("clock skew", function()
    for _, minutes in ipairs({10, -10}) do
      it(("gets a token and makes calls with a local clock 10 minutes %s"):format(minutes > 0 and "slow" or "fast"), function()
        emu:control{clock_skew = minutes * 60} -- the server is ahead: ours is slow (and the other way)
        local okta, lines = client(FULL)
        local token, info = okta:token()
        assert.is_string(token, tostring(info))
        assert.is_true(math.abs(okta.stats.clock_offset - minutes * 60) < 5)
        assert(okta:get("/api/v1/users", {limit = 1}))
        assert(okta:get("/api/v1/users", {limit = 1})) -- later proofs use the offset: no retry
        local retried = 0
        for _, l in ipairs(lines) do if l:find("clock is", 1, true) then retried = retried + 1 end end
        assert.equal(1, retried)
        local tokens = 0
        for _, e in ipairs(emu:log()) do if e.kind == "token" then tokens = tokens + 1 end end
        assert.is_true(tokens <= 3) -- the refused first try (maybe a nonce challenge), then the retry
      end)
    end
  end)

  describe("5xx", function()
    it("retries 502, 503 and 504 on a GET, and answers after max_retries", function()
      local okta = client(FULL, {max_retries = 3})
      assert(okta:token())
      emu:reset()
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html502"}, {path_prefix = "/api/v1/users", kind = "html503"},
                            {path_prefix = "/api/v1/users", kind = "html504"}}}
      assert(okta:get("/api/v1/users", {limit = 1}))
      assert.equal(4, #emu:log())
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html503", times = 5}}}
      local body, err = okta:get("/api/v1/users", {limit = 1})
      assert.is_nil(body)
      assert.equal(503, err.status)
    end)

    it("answers a 500 E0000009 at once, with what to do about it", function()
      local okta = client(FULL)
      assert(okta:token())
      emu:reset()
      emu:control{faults = {{path_prefix = "/api/v1/logs", kind = "query_timeout", times = 3}}}
      local body, err = okta:get("/api/v1/logs", {since = "2026-01-01T00:00:00Z"})
      assert.is_nil(body)
      assert.equal(500, err.status)
      assert.equal("E0000009", err.code)
      assert.matches("narrow the query", err.hint, 1, true)
      assert.equal(1, #emu:log()) -- not repeated
    end)

    it("does not retry a POST on a 503", function()
      local okta = client(FULL)
      assert(okta:token())
      emu:reset()
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html503", method = "POST"}}}
      local body, err = okta:post("/api/v1/users", {profile = {login = "p@example.com", email = "p@example.com"}})
      assert.is_nil(body)
      assert.equal(503, err.status)
      assert.equal(1, #emu:log())
    end)

    it("waits longer than Okta's own 30 s query timeout by default", function()
      local okta = client(FULL)
      assert.is_true(okta.timeout > 30)
    end)
  end)
end)
