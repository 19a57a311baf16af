-- The client against the bundled emulator: token exchange, nonces, retries, pagination,
-- errors, config validation and secret hygiene. The emulator verifies with jose, not with us.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local cjson = require "cjson"
local util = require "spec.support.util"

local CLIENT_ID = "0oaspec0000000000001"
local BEARER_CLIENT = "0oaspec0000000000002"

local function now() return os.time() end

describe("client against the emulator", function()
  local emu, cc_key, cc_pem_path, lines

  local function new_client(extra)
    lines = {}
    local cfg = {
      org_url = emu.url, client_id = CLIENT_ID, scopes = {"okta.users.read", "okta.users.manage", "okta.groups.read"},
      private_key = cc_pem_path, kid = "spec-cc", ca_file = emu.ca_file, retry_base = 0.05,
      debug = function(line) lines[#lines + 1] = line end,
    }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return assert(oktadpop.new(cfg))
  end

  local function count(kind, status) return util.log_count(emu, kind, status) end

  setup(function()
    cc_key = assert(oktadpop.generate_key("RS256", {kid = "spec-cc"}))
    cc_pem_path = util.tmpfile()
    assert(cc_key:save_pem(cc_pem_path, true))
    local bearer_key = assert(oktadpop.generate_key("ES256", {kid = "spec-bearer"}))
    emu = emulator.start{tls = true, config = {
      users = 450,
      clients = {
        {client_id = CLIENT_ID, jwks = {keys = {cc_key:public_jwk()}}, dpop_required = true,
         scopes = {"okta.users.read", "okta.users.manage", "okta.groups.read"}},
        {client_id = BEARER_CLIENT, jwks = {keys = {bearer_key:public_jwk()}}, dpop_required = false,
         scopes = {"okta.users.read"}},
      },
    }}
    emu.bearer_key = bearer_key
  end)

  teardown(function()
    if emu then emu:stop() end
    util.cleanup()
  end)

  before_each(function() emu:reset() end)

  it("gets a DPoP token with the nonce retry, a fresh assertion and proof per attempt", function()
    local okta = new_client()
    local token, info = okta:token()
    assert.is_string(token)
    assert.equal("DPoP", info.token_type)
    assert.is_true(info.expires_in > 3500)
    assert.equal("okta.users.read okta.users.manage okta.groups.read", info.scope)
    local log = emu:log()
    assert.equal(2, #log)
    assert.equal(400, log[1].status)
    assert.is_true(log[1].has_dpop) -- never a proofless first try
    assert.is_true(log[1].proof_nonce == nil or log[1].proof_nonce == cjson.null)
    assert.equal(200, log[2].status)
    assert.is_string(log[2].proof_nonce)
    assert.are_not.equal(log[1].proof_jti, log[2].proof_jti)
    assert.is_nil(tostring(okta):find(token, 1, true))
    assert.matches("dpop=on %(ES256 key", tostring(okta))
  end)

  it("accepts a first-try success and renews in one round trip with the remembered nonce", function()
    local okta = new_client()
    assert(okta:token())
    emu:reset()
    local token2 = assert(okta:token(true))
    assert.equal(1, #emu:log())
    assert.equal(200, emu:log()[1].status)
    assert.equal(token2, (okta:token()))
    assert.equal(1, #emu:log()) -- cached: no request at all
  end)

  it("makes 100 calls with one token and a fresh proof each", function()
    local okta = new_client()
    for i = 1, 100 do
      local user = assert(okta:get("/api/v1/users/user" .. i .. "@example.com"))
      assert.equal("user" .. i .. "@example.com", user.profile.login)
    end
    assert.equal(1, count("token", 200))
    assert.equal(100, count("api", 200))
    local jtis = {}
    for _, e in ipairs(emu:log()) do
      if e.kind == "api" then
        assert.is_nil(jtis[e.proof_jti])
        jtis[e.proof_jti] = true
        assert.equal("DPoP", e.auth_scheme)
      end
    end
  end)

  it("paginates 450 users exactly once each, with htu free of the cursor", function()
    local okta = new_client()
    local seen, n = {}, 0
    for user in okta:paginate("/api/v1/users", {limit = 200}) do
      assert.is_nil(seen[user.id])
      seen[user.id] = true
      n = n + 1
    end
    assert.equal(450, n)
    assert.equal(3, count("api", 200))
  end)

  it("retries a resource-server nonce challenge once and then remembers the nonce", function()
    emu:control{rs_nonce = true}
    local okta = new_client()
    assert(okta:get("/api/v1/users", {limit = 1}))
    assert.equal(1, count("api", 401))
    assert.equal(1, count("api", 200))
    assert(okta:get("/api/v1/users", {limit = 1}))
    assert.equal(1, count("api", 401)) -- the second call used the remembered RS nonce
    emu:control{rs_nonce = false}
  end)

  it("fetches a new token once on 401 invalid_token", function()
    local okta = new_client()
    assert(okta:get("/api/v1/users", {limit = 1}))
    emu:control{expire_tokens = true}
    local body = assert(okta:get("/api/v1/users", {limit = 1}))
    assert.equal(1, #body)
    assert.equal(1, count("api", 401))
    assert.equal(2, count("token", 200))
  end)

  it("honours 429 with a bounded wait on the server's clock and Okta's retry headers", function()
    local okta = new_client{max_retry_wait = 3}
    assert(okta:token())
    emu:reset()
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "rate_limit", reset_in = 1, times = 1}}}
    local t0 = now()
    assert(okta:get("/api/v1/users", {limit = 1}))
    assert.is_true(now() - t0 <= 3.5)
    local log = emu:log()
    assert.equal(429, log[1].status)
    assert.equal(200, log[2].status)
    assert.equal("1", tostring(log[2].retry_count))
    assert.is_string(log[2].retry_for)
    assert.are_not.equal(log[1].proof_jti, log[2].proof_jti)
  end)

  it("gives up on 429 after max_retries with retry_after in the error", function()
    local okta = new_client{max_retries = 1, max_retry_wait = 0.1}
    assert(okta:token())
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "rate_limit", reset_in = 30, times = 5}}}
    local body, err = okta:get("/api/v1/users")
    assert.is_nil(body)
    assert.equal("http", err.kind)
    assert.equal(429, err.status)
    assert.equal("E0000047", err.code)
    assert.is_true(err.retry_after >= 1)
    assert.is_string(err.request_id)
  end)

  it("retries a 5xx HTML page on GET, then reports it", function()
    local okta = new_client{max_retries = 2}
    assert(okta:token())
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html502", times = 1}}}
    assert(okta:get("/api/v1/users", {limit = 1}))
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html502", times = 10}}}
    local body, err, res = okta:get("/api/v1/users", {limit = 1})
    assert.is_nil(body)
    assert.equal("http", err.kind)
    assert.equal(502, err.status)
    assert.is_string(res.body) -- HTML stays a string
  end)

  it("does not retry a POST on 5xx (not idempotent)", function()
    local okta = new_client()
    assert(okta:token())
    emu:reset()
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html502", times = 1}}}
    local body, err = okta:post("/api/v1/users", {profile = {login = "x@example.com"}})
    assert.is_nil(body)
    assert.equal(502, err.status)
    assert.equal(1, count("api"))
  end)

  it("reports truncated JSON, a reset connection and a timeout with the right kind, quickly", function()
    local okta = new_client{max_retries = 0, timeout = 1}
    assert(okta:token())
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "truncated", times = 1}}}
    local _, err = okta:get("/api/v1/users")
    assert.equal("network", err.kind)
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "reset", times = 1}}}
    _, err = okta:get("/api/v1/users")
    assert.equal("network", err.kind)
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "delay", delay_ms = 3000, times = 1}}}
    local t0 = now()
    _, err = okta:get("/api/v1/users")
    assert.equal("timeout", err.kind)
    assert.is_true(now() - t0 <= 2)
  end)

  it("reports a refused connection as a network error", function()
    local okta = assert(oktadpop.new{org_url = "http://127.0.0.1:9", client_id = CLIENT_ID,
      scopes = "okta.users.read", private_key = cc_pem_path, max_retries = 0})
    local token, err = okta:token()
    assert.is_nil(token)
    assert.equal("network", err.kind)
  end)

  it("does not follow a redirect", function()
    local okta = new_client()
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "redirect", location = "https://evil.example.com/steal", times = 1}}}
    local res = assert(okta:request("GET", "/api/v1/users"))
    assert.equal(302, res.status)
    assert.equal("https://evil.example.com/steal", res.headers.location)
  end)

  it("refuses a next link to another origin", function()
    local okta = new_client()
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "next_off_origin", times = 1}}}
    local ok, err = pcall(function()
      for _ in okta:paginate("/api/v1/users", {limit = 200}) do end
    end)
    assert.is_false(ok)
    assert.equal("config", err.kind)
    assert.matches("evil.example.com", err.message, 1, true)
    assert.equal(1, count("api"))
  end)

  it("refuses an absolute URL on another origin before any request", function()
    local okta = new_client()
    local res, err = okta:request("GET", "https://evil.example.com/api/v1/users")
    assert.is_nil(res)
    assert.equal("config", err.kind)
    assert.equal(0, #emu:log())
  end)

  it("creates, deactivates and deletes a user; 204 gives true", function()
    local okta = new_client()
    local user = assert(okta:post("/api/v1/users", {profile = {login = "new.user@example.com",
      email = "new.user@example.com", firstName = "New", lastName = "User"}}))
    assert.equal("PROVISIONED", user.status) -- activated without a password: Okta waits for the user to set one
    local _, dup = okta:post("/api/v1/users", {profile = {login = "new.user@example.com"}})
    assert.equal("E0000001", dup.code)
    assert.is_table(dup.causes)
    assert.is_string(dup.causes[1])
    assert(okta:post("/api/v1/users/" .. user.id .. "/lifecycle/deactivate"))
    assert.is_true((okta:delete("/api/v1/users/" .. user.id)))
    local gone, err = okta:get("/api/v1/users/" .. user.id)
    assert.is_nil(gone)
    assert.equal(404, err.status)
    assert.equal("E0000007", err.code)
  end)

  it("encodes a login in the path and signs the decoded htu Okta checks", function()
    local okta = new_client()
    local user = assert(okta:get("/api/v1/users/user7%40example.com"))
    assert.equal("user7@example.com", user.profile.login)
  end)

  -- A client of the Bearer app, its key read from a PEM file; dpop as in oktadpop.new.
  local function bearer_client(dpop)
    local path = util.tmpfile()
    assert(emu.bearer_key:save_pem(path, true))
    return assert(oktadpop.new{org_url = emu.url, client_id = BEARER_CLIENT, scopes = "okta.users.read",
      private_key = path, kid = "spec-bearer", ca_file = emu.ca_file, dpop = dpop})
  end

  it("says the app does not require DPoP when the token is Bearer", function()
    local okta = bearer_client()
    local token, err = okta:token()
    assert.is_nil(token)
    assert.equal("oauth", err.kind)
    assert.matches("set the Okta app to require DPoP", err.message, 1, true)
  end)

  it("works with dpop=false for a Bearer app", function()
    local okta = bearer_client(false)
    local body = assert(okta:get("/api/v1/users", {limit = 2}))
    assert.equal(2, #body)
    assert.equal("Bearer", emu:log()[#emu:log()].auth_scheme)
  end)

  it("never shows a token, assertion or proof in errors, debug lines or tostring", function()
    local okta = new_client()
    local token = assert(okta:token())
    emu:control{faults = {{path_prefix = "/api/v1/users", kind = "html502", times = 10}}}
    local _, err = okta:get("/api/v1/users")
    local texts = {tostring(err), tostring(okta)}
    for _, l in ipairs(lines) do texts[#texts + 1] = l end
    assert.is_true(#lines > 3)
    for _, t in ipairs(texts) do
      assert.is_nil(t:find(token, 1, true))
      assert.is_nil(t:find("eyJ", 1, true)) -- no JWT of any kind
    end
  end)

  it("closes: later calls give a clear error", function()
    local okta = new_client()
    assert(okta:get("/api/v1/users", {limit = 1}))
    okta:close()
    okta:close()
    local body, err = okta:get("/api/v1/users")
    assert.is_nil(body)
    assert.equal("config", err.kind)
    assert.matches("closed", err.message)
    assert.equal("oktadpop.client (closed)", tostring(okta))
  end)

  it("refuses TLS from an unknown CA", function()
    local okta = new_client{ca_file = emu.tls_dir .. "/unknown-ca.pem", max_retries = 0}
    local token, err = okta:token()
    assert.is_nil(token)
    assert.equal("network", err.kind)
  end)

  it("reads the seed's .env with from_env, and the SDK names", function()
    local env = util.tmpfile(table.concat{"# the seed's file\n",
      "export OKTA_ORG_URL=", emu.url, "\n",
      "OKTA_CLIENT_ID='", CLIENT_ID, "'\n",
      'OKTA_SCOPES="okta.users.read okta.groups.read"  # two scopes\n',
      "OKTA_CC_PRIVATE_KEY_FILE=", cc_pem_path, "\n",
      "OKTA_CLIENT_KEYID=spec-cc\n",
      "OKTA_DPOP_PUBLIC_KEY_FILE=./not/needed.json\n",
      "OKTADPOP_CA_FILE=", emu.ca_file, "\n"})
    local okta = assert(oktadpop.from_env(env))
    assert.equal("okta.users.read okta.groups.read", okta.scopes)
    assert(okta:get("/api/v1/groups", {limit = 1}))
  end)
end)

describe("client config validation", function()
  local key_path
  setup(function()
    key_path = util.tmpfile()
    assert(assert(oktadpop.generate_key("RS256")):save_pem(key_path, true))
  end)
  teardown(util.cleanup)

  local base = {org_url = "https://acme.okta.com", client_id = "0oa1", scopes = "okta.users.read"}
  local function cfg(over)
    local c = {private_key = key_path}
    for k, v in pairs(base) do c[k] = v end
    for k, v in pairs(over) do c[k] = v end
    return c
  end

  local cases = {
    {"plain http to a remote host", {org_url = "http://acme.okta.com"}, "https"},
    {"an org_url with a path", {org_url = "https://acme.okta.com/oauth2/default"}, "without a path"},
    {"a missing client_id", {client_id = ""}, "client_id"},
    {"missing scopes", {scopes = false}, "scopes"},
    {"a scope list with a non-string", {scopes = {"okta.users.read", 7}}, "scopes"},
    {"a public private_key", {private_key = assert(oktadpop.generate_key()):public_jwk()}, "public key"},
    {"an unreadable private_key", {private_key = "/nonexistent.pem"}, "private_key"},
    {"a dpop_key equal to the assertion key", {dpop_key = "SAME"}, "must not be the client assertion key"},
    {"a negative timeout", {timeout = -1}, "timeout"},
    {"an unknown option", {org = "x"}, "unknown client option 'org'"},
    {"an unreadable ca_file", {ca_file = "/nonexistent/ca.pem"}, "ca_file"},
    {"a non-boolean dpop", {dpop = "yes"}, "dpop"},
    {"an URL with credentials", {org_url = "https://user:pw@acme.okta.com"}, "credentials"},
  }
  for _, case in ipairs(cases) do
    it("rejects " .. case[1], function()
      local over = case[2]
      if over.dpop_key == "SAME" then over = {dpop_key = key_path} end
      if over.scopes == false then over = {scopes = {}} end
      local client, err = oktadpop.new(cfg(over))
      assert.is_nil(client)
      assert.equal("config", err.kind)
      assert.matches(case[3], err.message, 1, true)
    end)
  end

  it("accepts http on loopback, scopes as a list, and defaults", function()
    local c = assert(oktadpop.new(cfg{org_url = "http://127.0.0.1:8080/", scopes = {"a.b", "c.d"}}))
    assert.equal("http://127.0.0.1:8080", c.org_url)
    assert.equal("a.b c.d", c.scopes)
    assert.equal("http://127.0.0.1:8080/oauth2/v1/token", c.token_url)
    assert.equal("ES256", c.dpop_key.alg)
  end)

  it("from_env names what is missing", function()
    local client, err = oktadpop.from_env(util.tmpfile("OKTA_CLIENT_ORGURL=https://acme.okta.com\n"))
    assert.is_nil(client)
    assert.matches("OKTA_CLIENT_ID", err.message, 1, true)
  end)

  it("from_env reports a malformed .env line", function()
    local client, err = oktadpop.from_env(util.tmpfile("OKTA_ORG_URL=https://acme.okta.com\nthis is not a pair\n"))
    assert.is_nil(client)
    assert.matches("line 2", err.message, 1, true)
  end)
end)

describe("oktadpop.pretty", function()
  it("prints nested tables with sorted keys and JSON null", function()
    local s = oktadpop.pretty{b = 1, a = {"x", oktadpop.null}}
    assert.equal('{\n  a = {\n    "x",\n    null,\n  },\n  b = 1,\n}', s)
  end)
end)
