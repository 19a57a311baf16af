-- One core: the same scripted conversation (a nonce challenge, a 429, a refused token, a 503,
-- pages, a resource nonce challenge) played to the libcurl driver and to the nginx driver
-- (oktadpop.resty in a real nginx). What each sent, request by request, what each answered
-- and the waits each reported to on_wait must be the same: the drivers move bytes, the core
-- decides.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local responder = require "spec.support.responder"
local nginx = require "spec.support.nginx"
local util = require "spec.support.util"

local CLIENT_ID = "0oaonecore0000000001"

local function conversation()
  local json = {["Content-Type"] = "application/json"}
  local rl = function(remaining) return {["X-Rate-Limit-Limit"] = "100", ["X-Rate-Limit-Remaining"] = tostring(remaining)} end
  return {
    {status = 400, headers = {["DPoP-Nonce"] = "n1"}, body = {error = "use_dpop_nonce",
      error_description = "Authorization server requires nonce in DPoP proof."}},
    {status = 200, headers = {["DPoP-Nonce"] = "n2"}, body = {token_type = "DPoP", access_token = "AT1", expires_in = 3600,
      scope = "okta.users.read"}},
    {status = 429, headers = {["X-Okta-Request-Id"] = "r429", ["X-Rate-Limit-Limit"] = "100", ["X-Rate-Limit-Remaining"] = "0"},
      reset_in = 0, body = {errorCode = "E0000047", errorSummary = "API call exceeded rate limit due to too many requests."}},
    {status = 401, headers = {["WWW-Authenticate"] = 'DPoP algs="ES256", error="invalid_token", error_description="The access token is invalid."'}},
    {status = 200, body = {token_type = "DPoP", access_token = "AT2", expires_in = 3600, scope = "okta.users.read"}},
    {status = 503, body = "<html>Service Unavailable</html>"},
    {status = 200, headers = {Link = '<$BASE/api/v1/users?after=u2&limit=2>; rel="next"'}, reset_in = 60,
      body = {{id = "u1"}, {id = "u2"}}, rl = 98},
    {status = 401, headers = {["WWW-Authenticate"] = 'DPoP algs="ES256", error="use_dpop_nonce", error_description="nonce"',
      ["DPoP-Nonce"] = "rs1"}},
    {status = 200, reset_in = 60, body = {}, rl = 96},
  }, json, rl
end

-- The script with the rate-limit headers filled in.
local function script()
  local answers, _, rl = conversation()
  for _, a in ipairs(answers) do
    if a.rl then
      a.headers = a.headers or {}
      for k, v in pairs(rl(a.rl)) do a.headers[k] = v end
      a.rl = nil
    end
  end
  return answers
end

-- What a request said, without what differs between runs (keys, jtis, times, hosts).
local function normalise(req)
  local head, body = req.raw:match("^(.-)\r\n\r\n(.*)$")
  local h = {}
  for line in head:gmatch("\r\n([^\r\n]+)") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    h[k:lower()] = v
  end
  local proof = h.dpop and oktadpop.decode_jwt(h.dpop) or {}
  local out = {
    method = req.method, target = req.target, scheme = h.authorization and h.authorization:match("^(%S+)"),
    token = h.authorization and h.authorization:match("%S+$"), retry_count = h["x-okta-retry-count"],
    retry_for = h["x-okta-retry-for"], htm = proof.htm, htu = proof.htu and proof.htu:gsub("^https?://[^/]+", ""),
    nonce = proof.nonce, ath = proof.ath and (proof.ath == oktadpop.ath(h.authorization:match("%S+$")) and "matches" or "wrong"),
    content_length = h["content-length"],
  }
  if req.method == "POST" then
    out.form = {}
    for k in body:gmatch("([^&=]+)=[^&]*") do out.form[#out.form + 1] = k end
  end
  return out
end

describe("one core under both drivers", function()
  local dir, key_path

  setup(function()
    dir = util.sh("mktemp -d"):gsub("%s+$", "")
    key_path = dir .. "/cc.pem"
    assert(assert(oktadpop.generate_key("RS256")):save_pem(key_path, true))
  end)
  teardown(function() if dir then os.execute("rm -rf " .. dir) end end)

  local CONFIG = [[{org_url = %q, client_id = %q, scopes = "okta.users.read", private_key = %q, retry_base = 0.01,
    max_retries = 2, max_retry_wait = 5}]]

  it("sends the same requests and answers the same, request by request", function()
    local results = {}
    for _, driver in ipairs({"libcurl", "nginx"}) do
      local r = responder.start{script = script()}
      local config = CONFIG:format(r.url, CLIENT_ID, key_path)
      local items, err, waits
      if driver == "libcurl" then
        local cfg = assert(load("return " .. config))()
        waits = {}
        cfg.on_wait = function(w) -- a hook that fails must not break the call
          waits[#waits + 1] = w.reason
          error("a broken progress display")
        end
        local okta = assert(oktadpop.new(cfg))
        items = {}
        local ok, e = pcall(function() for u in okta:paginate("/api/v1/users", {limit = 2}) do items[#items + 1] = u.id end end)
        err = not ok and tostring(e) or nil
      else
        local server = nginx.start{dir = dir, server = ([[
          location = /run { content_by_lua_block {
            local cfg, waits = %s, {}
            cfg.on_wait = function(w) waits[#waits + 1] = w.reason error("a broken progress display") end
            local okta = assert(require("oktadpop.resty").new(cfg))
            local items = {}
            local ok, e = pcall(function() for u in okta:paginate("/api/v1/users", {limit = 2}) do items[#items + 1] = u.id end end)
            ngx.say(require("cjson").encode{items = items, err = not ok and tostring(e) or nil, waits = waits})
          } }
        ]]):format(config)}
        local out = util.sh("curl -s --max-time 30 " .. server.url .. "/run")
        server:stop()
        local decoded = cjson.decode(out)
        items, err, waits = decoded.items, decoded.err, decoded.waits
      end
      local requests = {}
      for _, req in ipairs(r:requests()) do requests[#requests + 1] = normalise(req) end
      r:stop()
      results[driver] = {items = items, err = err, requests = requests, waits = waits}
    end
    local c, n = results.libcurl, results.nginx
    if os.getenv("ONECORE_SHOW") then print(cjson.encode(c)) print(cjson.encode(n)) end
    assert.is_nil(c.err)
    assert.same({"u1", "u2"}, c.items)
    assert.equal(9, #c.requests) -- every answer of the script was asked for
    assert.same(c, n)
    assert.same({"retry", "server_error"}, c.waits) -- on_wait saw the 429's wait and the 503's backoff
    -- and what the core decided, as the script meant it:
    assert.is_nil(c.requests[1].nonce)
    assert.equal("n1", c.requests[2].nonce)
    assert.equal("1", c.requests[4].retry_count)
    assert.equal("r429", c.requests[4].retry_for)
    assert.equal("AT1", c.requests[4].token)
    assert.is_nil(c.requests[5].retry_for) -- the token request is not the retry of that 429
    assert.equal("AT2", c.requests[6].token)
    assert.equal("/api/v1/users?after=u2&limit=2", c.requests[8].target)
    assert.equal("rs1", c.requests[9].nonce)
    for _, req in ipairs(c.requests) do
      if req.scheme then assert.equal("DPoP", req.scheme) assert.equal("matches", req.ath) end
    end
  end)
end)
