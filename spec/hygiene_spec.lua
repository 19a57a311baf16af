-- Credential hygiene: a warning for key files others can read, jti uniqueness, and no secret
-- (access token, client assertion, DPoP proof, private JWK member, passphrase) in any error
-- message, tostring or debug line, over every error path these specs can reach.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local responder = require "spec.support.responder"
local util = require "spec.support.util"
local cjson = require "cjson"

local ORG = "https://acme.okta.com"
local under_asan = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil

-- The private members of a key, base64url (as a JWK has them), through the openssl CLI.
local function private_members(key)
  local path = util.tmpfile(key:to_pem(true), "600")
  local text = util.sh("openssl pkey -in " .. path .. " -text -noout") .. "\nEND\n"
  local labels = key.kty == "EC" and {"priv"} or {"privateExponent", "prime1", "prime2", "exponent1", "exponent2", "coefficient"}
  local out = {}
  for _, label in ipairs(labels) do
    local hex = assert(text:match(label .. ":%s*\n(.-)\n%S"), label):gsub("[%s:]", "")
    local bin = hex:gsub("..", function(h) return string.char(tonumber(h, 16)) end)
    out[#out + 1] = util.b64url((bin:gsub("^%z+", "")))
    out[#out + 1] = util.b64url(bin)
  end
  return out
end

describe("key file permissions", function()
  local pem
  setup(function() pem = assert(oktadpop.generate_key("ES256")):to_pem(true) end)
  teardown(util.cleanup)

  local function create(extra)
    local lines = {}
    local cfg = {org_url = ORG, client_id = "0oa1", scopes = "okta.users.read", debug = function(l) lines[#lines + 1] = l end}
    for k, v in pairs(extra) do cfg[k] = v end
    local c, err = oktadpop.new(cfg)
    return c, err, lines
  end

  for _, mode in ipairs({"644", "640", "604", "660", "666"}) do
    it("warns through the debug log when a key file has mode " .. mode .. ", and still loads it", function()
      local path = util.tmpfile(pem, mode)
      local c, err, lines = create{private_key = path}
      assert.is_nil(err)
      assert.is_true(c.private_key.private)
      assert.equal(1, #lines)
      assert.matches("warning: private_key file " .. path .. " is open to its group or others (mode 0" .. mode .. ")",
        lines[1], 1, true)
    end)
  end

  it("says nothing for modes 600 and 400, for PEM text, or without a debug function", function()
    for _, mode in ipairs({"600", "400"}) do
      local _, err, lines = create{private_key = util.tmpfile(pem, mode)}
      assert.is_nil(err)
      assert.equal(0, #lines)
    end
    local _, err, lines = create{private_key = pem}
    assert.is_nil(err)
    assert.equal(0, #lines)
    assert(oktadpop.new{org_url = ORG, client_id = "0oa1", scopes = "a", private_key = util.tmpfile(pem, "644")})
  end)

  it("warns for a dpop_key file too, and through from_env", function()
    local dpop = util.tmpfile(assert(oktadpop.generate_key("ES256")):to_pem(true), "644")
    local _, err, lines = create{private_key = util.tmpfile(pem, "600"), dpop_key = dpop}
    assert.is_nil(err)
    assert.equal(1, #lines)
    assert.matches("dpop_key file", lines[1], 1, true)
    local key = util.tmpfile(pem, "640")
    local env = util.tmpfile("OKTA_ORG_URL=" .. ORG .. "\nOKTA_CLIENT_ID=0oa1\nOKTA_SCOPES=a\nOKTA_CC_PRIVATE_KEY_FILE=" .. key .. "\n")
    -- from_env has no debug option: OKTADPOP_DEBUG=1 sends the log to stderr (of a child, here)
    local script = util.tmpfile("package.cpath = " .. string.format("%q", package.cpath) ..
      "\npackage.path = " .. string.format("%q", package.path) ..
      "\nassert(require('oktadpop').from_env(" .. string.format("%q", env) .. "))\nprint('created')\n")
    local preload = under_asan and ("LD_PRELOAD=" .. os.getenv("LD_PRELOAD") .. " ASAN_OPTIONS=detect_leaks=0 ") or ""
    local out = util.sh("{ OKTADPOP_DEBUG=1 " .. preload .. (jit and "luajit " or "lua5.4 ") .. script .. " 2>&1; }")
    assert.matches("oktadpop: warning: private_key file " .. key .. " is open", out, 1, true)
    assert.matches("created", out, 1, true)
  end)
end)

describe("jti", function()
  -- The payload of a proof starts {"jti":"<22 characters>": exactly 30 bytes, so its first 40
  -- base64url characters are the jti and nothing else (checked below), a cheap key to dedupe.
  local function prefix(proof) return proof:match("^[^.]*%.(" .. ("."):rep(40) .. ")") end

  it("is the first claim, so a proof's first 40 payload characters are its jti", function()
    local k = assert(oktadpop.generate_key("ES256"))
    local p = assert(oktadpop.dpop_proof(k, {htm = "GET", htu = "https://a.example/x"}))
    local claims = oktadpop.decode_jwt(p)
    assert.equal(22, #claims.jti)
    assert.equal(util.b64url('{"jti":"' .. claims.jti), prefix(p))
    local again = assert(oktadpop.dpop_proof(k, {htm = "POST", htu = "https://b.example/y", jti = claims.jti, nonce = "n"}))
    assert.equal(prefix(p), prefix(again))
  end)

  if jit or under_asan then
    -- LuaJIT signs at a third of Lua 5.4's speed here and ASan slows the module: the million
    -- runs once, in the plain Lua 5.4 suite; these runs check 50,000 in process.
    it("never repeats over 50,000 DPoP proofs (in process; the 1,000,000 run is Lua 5.4's)", function()
      local k = assert(oktadpop.generate_key("ES256"))
      local seen, opts = {}, {htm = "GET", htu = "https://a.example/x"}
      for _ = 1, 50000 do
        local j = prefix(oktadpop.dpop_proof(k, opts))
        assert(not seen[j], "jti repeated")
        seen[j] = true
      end
    end)
  else
    it("never repeats over 1,000,000 DPoP proofs (dpop_proof in two worker processes)", function()
      local worker = util.tmpfile([[
        package.cpath = ]] .. string.format("%q", package.cpath) .. [[
        local o = require "oktadpop"
        local k = assert(o.generate_key("ES256"))
        local n, f = tonumber(arg[1]), assert(io.open(arg[2], "w"))
        local opts, find, sub, buf = {htm = "GET", htu = "https://a.example/x"}, string.find, string.sub, {}
        for i = 1, n do
          local p = o.dpop_proof(k, opts)
          local s = find(p, ".", 1, true)
          buf[#buf + 1] = sub(p, s + 1, s + 40)
          if #buf == 10000 or i == n then f:write(table.concat(buf, "\n"), "\n") buf = {} end
        end
        f:close()
      ]])
      local a, b = util.tmpfile(), util.tmpfile()
      assert.is_true(util.run("lua5.4 " .. worker .. " 500000 " .. a .. " & lua5.4 " .. worker .. " 500000 " .. b ..
        " & wait"))
      assert.equal("1000000", util.sh("cat " .. a .. " " .. b .. " | grep -c '^" .. ("."):rep(40) .. "$'"):match("%d+"))
      assert.equal("0", util.sh("sort -S 64M " .. a .. " " .. b .. " | uniq -d | wc -l"):match("%d+"))
    end)
  end
  teardown(util.cleanup)
end)

describe("no secret in an error, a tostring or a debug line", function()
  local CLIENT_ID, BEARER_ID, NARROW_ID = "0oahygiene00000000001", "0oahygiene00000000002", "0oahygiene00000000003"
  local emu, raw, cc, cc_path, other_key, enc_path
  local texts, secrets = {}, {}
  local PASSPHRASE = "correct horse battery staple"

  -- Every string an object shows: tostring, and each string inside a table (an error's fields).
  local function shows(x, seen)
    seen = seen or {}
    if type(x) == "table" then
      if seen[x] then return end
      seen[x] = true
      texts[#texts + 1] = tostring(x)
      for k, v in pairs(x) do shows(k, seen) shows(v, seen) end
    elseif x ~= nil then
      texts[#texts + 1] = tostring(x)
    end
  end
  local function secret(s) if type(s) == "string" and #s >= 8 then secrets[#secrets + 1] = s end end
  local lines = {}
  local function debug_line(l) lines[#lines + 1] = l end
  local function client(extra)
    local cfg = {org_url = emu.url, client_id = CLIENT_ID, scopes = "okta.users.read", private_key = cc_path,
                 max_retries = 0, retry_base = 0.01, timeout = 5, debug = debug_line}
    for k, v in pairs(extra or {}) do cfg[k] = v end
    local c, err = oktadpop.new(cfg)
    shows(err)
    if c then
      shows(c)
      for _, m in ipairs(private_members(c.dpop_key)) do secret(m) end
    end
    return c
  end
  -- Calls fn(...) under pcall; records whatever it answers or raises.
  local unpack_ = table.unpack or unpack -- luacheck: ignore
  local function try(fn, ...)
    local r
    local function keep(...) r = {n = select("#", ...), ...} end
    keep(pcall(fn, ...))
    for i = 2, r.n do shows(r[i]) end
    return unpack_(r, 2, r.n)
  end

  setup(function()
    cc = assert(oktadpop.generate_key("RS256", {kid = "hyg"}))
    other_key = assert(oktadpop.generate_key("RS256"))
    cc_path = util.tmpfile(cc:to_pem(true), "600")
    -- (not the private PEM's lines: PKCS#8 carries the public modulus too, and one of its lines
    -- can be a substring of the public JWK's n)
    for _, k in ipairs({cc, other_key}) do
      for _, m in ipairs(private_members(k)) do secret(m) end
    end
    enc_path = util.tmpfile()
    assert.is_true(util.run("openssl pkey -in " .. cc_path .. " -aes-128-cbc -passout pass:'" .. PASSPHRASE .. "' -out " .. enc_path))
    secret(PASSPHRASE)
    emu = emulator.start{tls = false, config = {users = 3, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {cc:public_jwk()}}, dpop_required = true, scopes = {"okta.users.read"}},
      {client_id = BEARER_ID, jwks = {keys = {cc:public_jwk()}}, dpop_required = false, scopes = {"okta.users.read"}},
      {client_id = NARROW_ID, jwks = {keys = {cc:public_jwk()}}, dpop_required = true, scopes = {"okta.groups.read"}}}}}
    raw = responder.start()
  end)
  teardown(function()
    if emu then emu:stop() end
    if raw then raw:stop() end
    util.cleanup()
  end)

  it("holds over bad configs and bad keys", function()
    local pem = cc:to_pem(true)
    local body = pem:gsub("%-%-%-%-%-[^\n]*\n?", "")
    local jwk = cc:public_jwk()
    local bad_configs = {
      {org = "x"}, {org_url = "http://acme.okta.com"}, {org_url = "https://acme.okta.com/x"}, {client_id = ""},
      {scopes = {}}, {private_key = jwk}, {private_key = pem, dpop_key = pem}, {timeout = -1},
      {ca_file = "/nonexistent"}, {private_key = pem:sub(1, math.floor(#pem / 2)) .. "-----END PRIVATE KEY-----\n"},
      {private_key = pem:gsub("\n(.)(.)", "\n%2%1", 3)}, {private_key = body}, {private_key = body:gsub("\n", "")},
      {private_key = enc_path}, {private_key = enc_path, passphrase = "wrong " .. PASSPHRASE},
      {private_key = {kty = "RSA", n = jwk.n, e = jwk.e, d = "!!" .. secrets[1]}},
      {private_key = {kty = "RSA", n = jwk.n, e = jwk.e, d = private_members(other_key)[1]}},
      {private_key = cjson.encode({kty = "EC", crv = "P-256", x = "AAAA", y = "AAAA", d = secrets[1]})},
      {dpop_key = other_key, debug = "yes"}, {max_body = 1},
    }
    for _, over in ipairs(bad_configs) do
      assert.is_nil(client(over))
    end
    assert(client{private_key = enc_path, passphrase = PASSPHRASE}) -- the control: it does load
    for _, src in ipairs({pem:sub(1, 200), body, enc_path, {keys = {jwk, jwk}}, {kty = "RSA", n = jwk.n}}) do
      try(oktadpop.load_key, src)
      try(oktadpop.load_key, src, {passphrase = "wrong " .. PASSPHRASE, alg = "ES256", kid = "k"})
    end
    local env = util.tmpfile("OKTA_ORG_URL=" .. ORG .. "\n" .. pem .. "\n") -- a PEM pasted raw: line 2 is bad
    try(oktadpop.from_env, env)
    env = util.tmpfile("OKTA_ORG_URL=" .. ORG .. "\nOKTA_CLIENT_ID=x\nOKTA_SCOPES=a\nOKTA_CLIENT_PRIVATEKEY=" ..
      body:gsub("\n", "\\n") .. "\n")
    try(oktadpop.from_env, env)
    shows(cc); shows(other_key)
  end)

  it("holds over network, OAuth, HTTP and JSON errors", function()
    local okta = assert(client())
    local token = assert(okta:token())
    secret(token)
    shows(okta)
    for _, path in ipairs({"/api/v1/users/nobody@example.com", "/api/v1/groups"}) do try(okta.get, okta, path) end
    for _, kind in ipairs({"html502", "rate_limit", "not_json", "deep_json", "truncated", "reset", "redirect"}) do
      okta = assert(client()) -- a 429 tells a client to pace that bucket until its reset: start afresh
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = kind, times = 1, reset_in = 30,
                             location = "http://127.0.0.1:9/steal"}}}
      try(okta.get, okta, "/api/v1/users")
      emu:control{faults = {{path_prefix = "/oauth2/v1/token", kind = kind, times = 3, reset_in = 30,
                             location = "http://127.0.0.1:9/steal"}}}
      try(okta.token, okta, true)
      emu:reset()
    end
    emu:control{expire_tokens = true}
    try(okta.get, okta, "/api/v1/users")
    try(client{client_id = "0oanotregistered0001"}.token)
    local wrong = client{private_key = other_key}
    try(wrong.token, wrong)
    local narrow = client{client_id = NARROW_ID}
    try(narrow.token, narrow)
    local bearer = client{client_id = BEARER_ID}
    try(bearer.token, bearer)
    local refused = client{org_url = "http://127.0.0.1:9"}
    try(refused.token, refused)
    for _, path in ipairs({"/trickle", "/big-body", "/big-headers", "/not-json", "/deep-object", "/gzip-bomb"}) do
      local r = client{org_url = raw.url, timeout = 1, max_body = 64 * 1024}
      try(r.get, r, path)
      shows(r)
    end
    okta:close()
    try(okta.get, okta, "/api/v1/users")
    try(function() for _ in okta:paginate("/api/v1/users") do end end)
    shows(okta)
  end)

  it("holds over proof and assertion failures", function()
    -- what oktadpop sent the raw responder: assertions, proofs, the responder's token
    local sent = {}
    for _, req in ipairs(raw:requests()) do
      sent[#sent + 1] = req.raw:match("client_assertion=([^&\r\n]+)")
      sent[#sent + 1] = req.raw:match("\r\nDPoP: ([^\r\n]+)")
      sent[#sent + 1] = req.raw:match("\r\nAuthorization: DPoP ([^\r\n]+)")
    end
    assert.is_true(#sent > 6)
    local proof = assert(oktadpop.dpop_proof(other_key, {htm = "GET", htu = ORG .. "/api/v1/users", nonce = "n1",
      access_token = "at-" .. secrets[1]}))
    local assertion = assert(oktadpop.client_assertion(cc, CLIENT_ID, ORG .. "/oauth2/v1/token"))
    sent[#sent + 1] = proof
    sent[#sent + 1] = assertion
    sent[#sent + 1] = "at-" .. secrets[1]
    for _, s in ipairs(sent) do
      secret(s)
      for part in s:gmatch("[^.]+") do secret(part) end
    end
    local checks = {
      {htm = "POST", htu = ORG .. "/api/v1/users"}, {htm = "GET", htu = ORG .. "/other"},
      {htm = "GET", htu = ORG .. "/api/v1/users", access_token = "other"},
      {htm = "GET", htu = ORG .. "/api/v1/users", nonce = "n2"},
      {htm = "GET", htu = ORG .. "/api/v1/users", jkt = cc:thumbprint()},
      {htm = "GET", htu = ORG .. "/api/v1/users", now = os.time() + 3600},
      {htm = "GET", htu = ORG .. "/api/v1/users", jti_seen = function() return true end},
      {htm = "GET", htu = ORG .. "/api/v1/users", jti_seen = function(jti) error("store down for " .. jti) end},
    }
    for _, opts in ipairs(checks) do try(oktadpop.verify_dpop_proof, proof, opts) end
    try(oktadpop.verify_dpop_proof, proof:sub(1, -3) .. "AA", checks[1])
    try(oktadpop.verify_dpop_proof, assertion, checks[1])
    for _, s in ipairs(sent) do
      try(oktadpop.verify_jwt, s, other_key)
      try(oktadpop.verify_jwt, s, cc, {audience = "x", issuer = "y", now = 0})
      try(oktadpop.decode_jwt, s .. ".")
    end
    -- the core, driven by hand: OAuth error answers to each request it makes
    local session = assert(oktadpop.core.session{org_url = ORG, client_id = CLIENT_ID, scopes = "okta.users.read",
      private_key = cc, debug = true})
    local store = oktadpop.core.memory_store()
    local function step(op, input)
      local a = op:step(input, os.time())
      while a.action == "store" do
        for _, line in ipairs(a.log or {}) do shows(line) end
        local v = a.op == "incr" and store:incr(a.key, a.value, 0, a.ttl) or store[a.op](store, a.key, a.value, a.ttl)
        a = op:step(v, os.time())
      end
      for _, line in ipairs(a.log or {}) do shows(line) end
      return a
    end
    for _, answer in ipairs({
      {status = 400, headers = {["dpop-nonce"] = "n"}, body = '{"error":"use_dpop_nonce"}'},
      {status = 401, headers = {["content-type"] = "application/json"}, body = '{"error":"invalid_client","error_description":"no"}'},
      {status = 200, headers = {["content-type"] = "application/json"}, body = '{"access_token":"tok.' .. secrets[2] .. '","token_type":"Bearer"}'},
      {error = oktadpop.core.error("network", "down")}}) do
      local op = assert(session:token_operation(true))
      local a = step(op)
      for _ = 1, 5 do
        if a.action ~= "send" then break end
        secret(a.body:match("client_assertion=([^&]+)"))
        secret(a.headers.DPoP)
        a = step(op, answer)
      end
      shows(a.error)
    end
    secret("tok." .. secrets[2])
  end)

  -- True when t holds a piece of a JWT: base64url that decodes to a JSON object's first member.
  -- Not just "eyJ": the ~10 KB of random base64url a run shows (nonces, request ids, the
  -- responder's bodies) contains it by chance in about one run of 25.
  local function jwt_piece(t)
    for run in t:gmatch("eyJ[%w_-]+") do
      local ok, json = pcall(util.unb64url, run:sub(1, #run - #run % 4))
      if ok and json:match('^{"[%w_]+":') then return true end
    end
  end

  -- The first text that holds a JWT or a secret, or nil.
  local function leak(list)
    for _, t in ipairs(list) do
      if jwt_piece(t) then return t end
      for _, s in ipairs(secrets) do if t:find(s, 1, true) then return t end end
    end
  end

  it("(the sweep) finds none of them in what was shown", function()
    for _, l in ipairs(lines) do texts[#texts + 1] = l end
    assert.is_true(#texts > 200)
    assert.is_true(#lines > 20)
    assert.is_true(#secrets > 40)
    assert.is_string(leak({"error: " .. secrets[#secrets] .. "."})) -- the controls: a planted secret,
    assert.is_string(leak({"x " .. util.b64url('{"alg":"ES256"}'):sub(1, 12)})) -- a cut JWT header
    assert.is_nil(leak({"id eyJ" .. util.b64url("\1\2\3\4\5\6")})) -- and random bytes after "eyJ"
    local found = leak(texts)
    assert.is_nil(found, "a secret in: " .. tostring(found and found:sub(1, 300)))
  end)
end)
