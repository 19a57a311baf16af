-- fuzz/jwt.lua: harness of the fuzz_jwt target (run by fuzz_lua.c). decode_jwt, verify_jwt
-- and verify_dpop_proof on outside bytes. None of them may raise on a string token (a raise
-- is a finding); and when one accepts a token, what it accepted must hold up: the checks
-- below restate RFC 7519/9449's rules independently of the C code. Modes (first byte % 7;
-- the rest of that byte, b // 7, picks verify_dpop_proof's options):
--   0 decode_jwt(s)          1 verify_jwt(s, ...)    2 verify_dpop_proof(s, ...)
--   3 header "\0" claims: signed with the fixed ES256 key, then verify_jwt
--   4 claims: signed under a valid DPoP header, then verify_dpop_proof
--   5 header: signed over valid DPoP claims, then verify_dpop_proof
--   6 header "\0" claims "\0" signature: the JSON base64url-encoded here (so the fuzzer works
--     on JSON, not on base64), then as modes 1 and 2
-- The keys are fixed (test keys, here only) so that seeds can carry their public JWK.
local o = oktadpop
local cjson = require "cjson.safe"

local ES_PEM = [[
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVq19kIwk/VU4ffeY
E/TVNHQYpRjNhBmus7yL0m/j8lOhRANCAAS0Ol7SplycbiekUguXleXN2hU68CfI
EtxfhiKe4GLx07OzQ/BGzOuaTgM/A4vxXKdBXfIT1nCbTYk6FqwZhKcs
-----END PRIVATE KEY-----
]]
local RS_PEM = [[
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDPmVDMz0LTWq5X
Jh19t+hK6IOdneIsKwFm8i33Gp22M3i1q2ZzZy9HKyRk8jjHEk/Rs0SL+nKktnw1
4mWbIeFcJnZJ9Ry3NLB3Rvl2ekvSa8iqVdKl1NDyf8rJ153vju8N5i4OMgYAeWR+
87Y7f3ZBOi94vToKs752SYaI7Oe3Lg1/9VFsPP+me0hEUe58BqLJjY351Ilnh5CU
xoqoPBvt4mrZsa4Ps0opwVFf2dTJZFgQytGwobDeUUuijGA/uxPr4gUAzW/iwiMl
IGscXAonicDT/RhCyMb+CVQya1FflhziGBFPVaBVFC98pKylhthqtXdAk7rgi7Cb
NOOXsNkxAgMBAAECggEAEZUEDVyOZdUbx+DABapCP7nij8JT6fa4dy4Sq4dzDP/d
/NDn6+U00Vu7iNsk6ONJpFKA/zP2arHT4kJq5ZEgg4v0X74lMPUC7w8xSJICAu/C
/n4nSYk1KxycoayjwSrDX1N72hLthDPDyaa9a9uXOd4CMEEifc6MVntSrB0YYOCc
AuS5SwD4aVM4xszUHbqlYzR6krOHG9B0F7MwWkKCvcLrF05auhbmslV5QdOLNkIY
tnLp8kjUiiZZsGQiRt/gz4yQKlXnHnxI/ZvEa+6mjiTPe5mp26QATz77F5KCXV8K
F93u+oT5uiSIKHwhzP+3XBi+gW5r1hpbBOZ205L0KwKBgQDzwFVs5adnb7i+hyAm
S0ylBewti+rszPV0VqfJxr1HaozbtuLijHS0AL0qztZw/VH6n87DVwzeHZonkGKv
WiPjTu/fpJMmkM/73p2ZIMrKGkDMBcK93Xrmdbm3mSgiKkDnjk/AQQkgzBJLtQRM
1Mru/kDnGDEUO9xlvvP836GzXwKBgQDaB+jw99kHYJYeLnz82+Vo46sSkTDyuIYr
RXauu/VdEVA3PX3rJ6nUe7R+ajvdSqOmiuY43YAfYqea8G7MCgr4doJQNlXYrB5o
lswnHVkwhK2K3hZPiwPyI8Bu+0o+dQgd+IdoNhTFfyvkm/Vo9uwXvR4sBNQlEABw
Ov0jOq/NbwKBgQDektquVEn3XoHgoDyQGyQCcBUIRgIfdswPDm2qBuqhQr8ahbZJ
Th3mm+IgK7yOchIgezpvDpb2Xyt7QxGJsxKgJl1M5tdjWMpB4DYiNFpYD37pjb0U
aCAoPol2B8ko4VJg3oceM4SlSRLPxJwHmCsx7kLPgjyWkE6hLatXVdEumwKBgHPu
JscSEj0g91E/CMhuqBHYlJr/xpYY1YZmng+U84cz8IIe2ThTU7Mev79D/2bQDCo+
yuFLrZeCnnn9A/zMDj9EzE+YRJc8FcMpA458xXLN6XTgV96dnVCAAA9C4JxLIDDH
eEBKGUtWLmGVJ61TNf/9V/Cx9JdsZb9HLlgwGVBTAoGAZ+qZVeXij0AWwF8ByRFD
JoD7V2pQ4qNYHwjq1GNpP9S1WgWQbLKAD95lLywlhcib0XysFF2Q6Wk3YDGOCpQD
m8+lzg8X4aPpu4IaNNaROsuiOCJnR1g/C8qPjj31IE4d03NpQRDuQ3xkdJdbrDlf
FMYitMfgQUJZCOx7EpKS/o0=
-----END PRIVATE KEY-----
]]

local es = assert(o.load_key(ES_PEM, {kid = "fuzz-es"}))
local rs = assert(o.load_key(RS_PEM, {kid = "fuzz-rs"}))
local es_pub = es:public_jwk()
local jwks_text = cjson.encode({keys = {es_pub, rs:public_jwk()}})
local NOW, MAX_AGE, LEEWAY = 1700000000, 60, 10
local HTU = "https://org.example.com/api/v1/users"
local TOKEN = "fuzz-access-token"
local NONCE = "fuzz-nonce-1"
local DPOP_HEADER = cjson.encode({typ = "dpop+jwt", alg = "ES256", jwk = es_pub})
local DPOP_CLAIMS = cjson.encode({jti = "fuzz-jti-0123456789", htm = "GET", htu = HTU, iat = NOW,
                                  ath = o.ath(TOKEN), nonce = NONCE})

local function finding(fmt, ...) error("property failed: " .. string.format(fmt, ...), 2) end

local function is_err(err)
  if getmetatable(err) == nil or type(err.kind) ~= "string" or type(err.message) ~= "string" then
    finding("a refusal without an error object: %s", tostring(err))
  end
  tostring(err)
end

local function check_jwt(claims, header, now, leeway)
  if type(claims) ~= "table" or type(header) ~= "table" then finding("verify_jwt answered %s, %s", type(claims), type(header)) end
  local exp, nbf = claims.exp, claims.nbf
  if exp ~= nil and not (type(exp) == "number" and exp == exp and exp < math.huge and now <= exp + leeway) then finding("accepted exp %s at %d", tostring(exp), now) end
  if nbf ~= nil and not (type(nbf) == "number" and now + leeway >= nbf) then finding("accepted nbf %s at %d", tostring(nbf), now) end
end

-- What verify_dpop_proof must have checked when it answers claims, header, jkt.
local function check_proof(claims, header, jkt, opts, signer)
  if type(claims) ~= "table" or type(header) ~= "table" then finding("verify_dpop_proof answered %s", type(claims)) end
  if type(header.typ) ~= "string" or header.typ:lower():gsub("^application/", "") ~= "dpop+jwt" then
    finding("accepted typ %s", tostring(header.typ))
  end
  if signer and jkt ~= signer:thumbprint() then finding("accepted a proof whose key is not the signer's") end
  if opts.jkt and jkt ~= opts.jkt then finding("accepted a proof whose key is not cnf.jkt") end
  if claims.htm ~= "GET" then finding("accepted htm %s", tostring(claims.htm)) end
  if type(claims.htu) ~= "string" or o.htu(claims.htu) ~= o.htu(HTU) then finding("accepted htu %s", tostring(claims.htu)) end
  local iat = claims.iat
  if not (type(iat) == "number" and iat >= NOW - MAX_AGE - LEEWAY and iat <= NOW + LEEWAY) then
    finding("accepted iat %s", tostring(iat))
  end
  if type(claims.jti) ~= "string" or #claims.jti < 16 then finding("accepted jti %s", tostring(claims.jti)) end
  if opts.access_token and claims.ath ~= o.ath(TOKEN) then finding("accepted ath %s", tostring(claims.ath)) end
  if opts.nonce and claims.nonce ~= NONCE then finding("accepted nonce %s", tostring(claims.nonce)) end
  if header.crit ~= nil then finding("accepted a crit header") end
  if type(header.alg) ~= "string" or header.alg:find("%z") then finding("accepted alg %s", tostring(header.alg)) end
end

local function proof_opts(flags)
  local opts = {htm = "GET", htu = HTU, now = NOW, max_age = MAX_AGE, leeway = LEEWAY}
  if flags % 2 == 1 then opts.access_token = TOKEN end
  if flags // 2 % 2 == 1 then opts.nonce = NONCE end
  if flags // 4 % 2 == 1 then opts.jkt = es:thumbprint() end
  return opts
end

local function verify_proof(proof, flags, signer)
  local opts = proof_opts(flags)
  local claims, header, jkt = o.verify_dpop_proof(proof, opts)
  if claims == nil then is_err(header) else check_proof(claims, header, jkt, opts, signer) end
end

local function verify_all(s, flags)
  local c, h = o.verify_jwt(s, es)
  if c == nil then is_err(h) else check_jwt(c, h, os.time(), 0) end
  c, h = o.verify_jwt(s, jwks_text, {now = NOW})
  if c == nil then is_err(h) else check_jwt(c, h, NOW, 0) end
  c, h = o.verify_jwt(s, rs, {issuer = "i", audience = "a", subject = "s", typ = "JWT", now = NOW, leeway = 5})
  if c == nil then is_err(h)
  else
    check_jwt(c, h, NOW, 5)
    if c.iss ~= "i" or c.sub ~= "s" or h.typ ~= "JWT" then finding("accepted iss/sub/typ") end
  end
  verify_proof(s, flags)
end

return function(data)
  local b = data:byte(1) or 0
  local s = data:sub(2)
  local mode, flags = b % 7, b // 7
  if mode == 0 then
    local c, h = o.decode_jwt(s)
    if c == nil then is_err(h)
    elseif type(h) ~= "table" or type(c) ~= "table" then finding("decode_jwt answered %s, %s", type(c), type(h)) end
  elseif mode == 1 then
    verify_all(s, 0)
  elseif mode == 2 then
    verify_proof(s, flags)
  elseif mode == 3 then
    local hdr, claims = s:match("^(.-)%z(.*)$")
    if not hdr then hdr, claims = s, "{}" end
    local jwt, err = fuzz_sign(es, hdr, claims)
    if not jwt then is_err(err) return end
    local leeway = flags % 4 * 10
    local c, h = o.verify_jwt(jwt, es_pub, {now = NOW, leeway = leeway})
    if c == nil then is_err(h)
    else
      check_jwt(c, h, NOW, leeway)
      if h.alg ~= "ES256" then finding("accepted alg %s", tostring(h.alg)) end
    end
  elseif mode == 4 then
    verify_proof(assert(fuzz_sign(es, DPOP_HEADER, s)), flags, es)
  elseif mode == 5 then
    verify_proof(assert(fuzz_sign(es, s, DPOP_CLAIMS)), flags, es)
  else
    local hdr, claims, sig = s:match("^(.-)%z(.-)%z(.*)$")
    if not hdr then hdr, claims, sig = s, "{}", "" end
    verify_all(fuzz_b64(hdr) .. "." .. fuzz_b64(claims) .. "." .. sig, flags)
  end
end
