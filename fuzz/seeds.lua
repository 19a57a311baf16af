-- fuzz/seeds.lua: writes the seed corpora under fuzz/corpus/<target>/ (valid examples and edge
-- cases). Run from the repository root: lua5.4 fuzz/seeds.lua (needs build/5.4/oktadpop.so
-- and the openssl CLI). Seeds of fuzz_key/fuzz_jwt start with the harness's mode byte (see
-- fuzz/key.lua, fuzz/jwt.lua); JWT seeds are signed with the harness's fixed test keys.
package.cpath = "build/5.4/?.so;" .. package.cpath
local o = require "oktadpop"
local cjson = require "cjson"

local function write(target, name, data)
  os.execute("mkdir -p fuzz/corpus/" .. target)
  local f = assert(io.open("fuzz/corpus/" .. target .. "/" .. name, "wb"))
  f:write(data)
  f:close()
end
local function slurp(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("a")
  p:close()
  return s
end

-- url, link, www_auth, dotenv, b64url
local urls = {
  "https://acme.okta.com/api/v1/users?limit=200&after=00u1", "https://ACME.okta.com:443/api/v1/users/a%40b.com",
  "http://127.0.0.1:8080/oauth2/v1/token", "https://[::1]:0443/x/%2F/%7e/%e2%82%ac#frag", "http://localhost",
  "https://user:pw@acme.okta.com/", "https://acme.okta.com:99999/", "https://acme.okta.com/a%zz", "ftp://x/",
  "https://acme.okta.com/api/v1/users/%C3%A9t%C3%A9?q=%00", "https://acme.okta.com/a%00/b",
}
for i, u in ipairs(urls) do write("url", "seed" .. i, u) end
local links = {
  '<https://acme.okta.com/api/v1/users?limit=200>; rel="self", <https://acme.okta.com/api/v1/users?after=00u2&limit=200>; rel="next"',
  '<https://a/x>; rel="prev next"', "<https://a/x>;rel=next", '<https://a/x>; rel="self"', "<unterminated; rel=next", "",
}
for i, l in ipairs(links) do write("link", "seed" .. i, l) end
local challenges = {
  'DPoP algs="ES256 RS256", error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"',
  'DPoP error="invalid_token", error_description="The access token is invalid \\"quoted\\"."', 'Bearer realm="okta"',
  'DPoP error=invalid_dpop_proof,algs=ES256', 'DPoP error="unterminated', "error=",
}
for i, c in ipairs(challenges) do write("www_auth", "seed" .. i, c) end
write("dotenv", "seed1", "# the seed's file\nexport OKTA_ORG_URL=https://acme.okta.com\nOKTA_CLIENT_ID='0oa1'\n" ..
  'OKTA_SCOPES="okta.users.read okta.groups.read"  # two\nOKTA_CC_PRIVATE_KEY_FILE=./assets/cc.pem\n')
write("dotenv", "seed2", 'KEY="-----BEGIN PRIVATE KEY-----\nMIGH\\nAgEA\n-----END PRIVATE KEY-----"\nA=1 #c\nB=x#y\r\n')
write("dotenv", "seed3", "1BAD=x\n")
write("dotenv", "seed4", 'A="unterminated\n')
write("dotenv", "seed5", "export\tA.B_C = 'v' # c\n\n   # only\nC=")
for i, b in ipairs({"", "AQAB", "_-_-", "AQ", "AR", "AAA", "A", "eyJhbGciOiJFUzI1NiJ9", "a+b/", "AA==", "AA\n"}) do
  write("b64url", "seed" .. i, b)
end

-- fuzz_key: mode byte = form (0 PEM, 1 JSON text, 2 table) + 3 * alg index + 24 * kid
local function key_seed(name, form, data, alg_index, kid)
  write("key", name, string.char(form + 3 * (alg_index or 0) + 24 * (kid and 1 or 0)) .. data)
end
local tmp = os.tmpname()
local pems = {
  {"ec256-pkcs8", "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null"},
  {"ec384-sec1", "openssl ecparam -name secp384r1 -genkey -noout 2>/dev/null"},
  {"ec521-pkcs8", "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 2>/dev/null"},
  {"rsa2048-pkcs1", "openssl genrsa -traditional 2048 2>/dev/null"},
  {"rsa1024-weak", "openssl genrsa 1024 2>/dev/null"},
  {"ed25519", "openssl genpkey -algorithm ED25519 2>/dev/null"},
  {"ec-secp256k1", "openssl ecparam -name secp256k1 -genkey -noout 2>/dev/null"},
  {"ec256-encrypted", "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes-128-cbc -pass pass:x 2>/dev/null"},
}
for _, p in ipairs(pems) do key_seed(p[1], 0, slurp(p[2])) end
key_seed("rsa-spki", 0, slurp("openssl genrsa 2048 2>/dev/null | openssl rsa -pubout 2>/dev/null"))
key_seed("ec256-pkcs8-alg-es384", 0, slurp(pems[1][2]), 5) -- a mismatched alg
key_seed("truncated", 0, "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n")
os.remove(tmp)
local ec = o.generate_key("ES256", {kid = "k1"})
local rs = o.generate_key("RS256", {kid = "k2"})
local function private_jwk(k) -- the private JWK, from the PEM through the openssl CLI's numbers
  local pem = k:to_pem(true)
  local f = assert(io.open(tmp, "w")); f:write(pem); f:close()
  local jwk = k:public_jwk()
  local text = slurp("openssl pkey -in " .. tmp .. " -text -noout 2>/dev/null")
  os.remove(tmp)
  local function member(label)
    local hex = text:match(label .. ":%s*\n(.-)\n%a") or text:match(label .. ":%s*\n(.-)$")
    hex = hex:gsub("[%s:]", "")
    local bin = hex:gsub("..", function(h) return string.char(tonumber(h, 16)) end)
    bin = bin:gsub("^%z+", "")
    local enc = require("mime").b64(bin):gsub("%+", "-"):gsub("/", "_"):gsub("=", "")
    return enc
  end
  if k.kty == "EC" then
    jwk.d = member("priv")
  else
    jwk.d, jwk.p, jwk.q = member("privateExponent"), member("prime1"), member("prime2")
    jwk.dp, jwk.dq, jwk.qi = member("exponent1"), member("exponent2"), member("coefficient")
  end
  return jwk
end
local ecp, rsp = private_jwk(ec), private_jwk(rs)
assert(o.load_key(ecp).private and o.load_key(rsp).private, "private JWKs do not load")
key_seed("ec-private-jwk", 1, cjson.encode(ecp))
key_seed("ec-public-jwk", 1, cjson.encode(ec:public_jwk()))
key_seed("rsa-private-jwk", 1, cjson.encode(rsp))
key_seed("rsa-public-jwk-table", 2, cjson.encode(rs:public_jwk()))
key_seed("jwks-one", 2, cjson.encode({keys = {ec:public_jwk()}}))
key_seed("jwks-two-kid", 1, cjson.encode({keys = {ec:public_jwk(), rsp}}), 0, true)
local function variant(base, changes)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(changes) do t[k] = v end
  return cjson.encode(t)
end
key_seed("jwk-oct", 1, '{"kty":"oct","k":"AAAA"}')
key_seed("jwk-no-kty", 1, variant(ec:public_jwk(), {kty = false}))
key_seed("jwk-x-short", 1, variant(ec:public_jwk(), {x = "AAAA"}))
key_seed("jwk-off-curve", 1, variant(ec:public_jwk(), {y = ec:public_jwk().x}))
key_seed("jwk-d-mismatch", 1, variant(ecp, {d = private_jwk(o.generate_key("ES256")).d}))
key_seed("jwk-rsa-partial-crt", 1, variant(rsp, {dq = false, qi = false}))
key_seed("jwk-use-enc", 1, variant(ec:public_jwk(), {use = "enc"}))
key_seed("jwk-kid-number", 2, '{"keys":[1,{"kid":7}]}', 0, true)

-- fuzz_jwt: mode byte = mode (0..6) + 7 * flags (1 ath, 2 nonce, 4 jkt, 8 unused since jti_seen left verify_dpop_proof)
local harness = assert(io.open("fuzz/jwt.lua")):read("a")
local es = assert(o.load_key(harness:match("local ES_PEM = %[%[\n(.-)%]%]"), {kid = "fuzz-es"}))
local rsk = assert(o.load_key(harness:match("local RS_PEM = %[%[\n(.-)%]%]"), {kid = "fuzz-rs"}))
local NOW, HTU, TOKEN, NONCE = 1700000000, "https://org.example.com/api/v1/users", "fuzz-access-token", "fuzz-nonce-1"
local function jwt_seed(name, mode, flags, data) write("jwt", name, string.char(mode + 7 * flags) .. data) end
local good = assert(o.sign_jwt(es, {sub = "s", exp = NOW + 100, nbf = NOW - 100}))
jwt_seed("decode-valid", 0, 0, good)
jwt_seed("decode-empty-parts", 0, 0, "..")
jwt_seed("decode-four-parts", 0, 0, "e30.e30.e30.")
jwt_seed("decode-array", 0, 0, "W10.e30.")
jwt_seed("verify-es", 1, 0, good)
jwt_seed("verify-rs-claims", 1, 0, assert(o.sign_jwt(rsk, {iss = "i", aud = {"x", "a"}, sub = "s", exp = NOW + 60})))
jwt_seed("verify-alg-none", 1, 0, "eyJhbGciOiJub25lIn0.e30.")
local proof = assert(o.dpop_proof(es, {htm = "GET", htu = HTU .. "?q=1", iat = NOW, nonce = NONCE, access_token = TOKEN,
  jti = "fuzz-jti-0123456789"}))
jwt_seed("proof-all-checks", 2, 15, proof)
jwt_seed("proof-no-options", 2, 0, assert(o.dpop_proof(es, {htm = "GET", htu = HTU, iat = NOW})))
jwt_seed("proof-rs", 2, 0, assert(o.dpop_proof(rsk, {htm = "GET", htu = HTU, iat = NOW})))
jwt_seed("signed-header-claims", 3, 1, '{"alg":"ES256","typ":"JWT"}\0{"exp":1700000100,"nbf":1699999000,"sub":"s"}')
jwt_seed("signed-claims-exp-float", 3, 0, '{"alg":"ES256"}\0{"exp":1.7e9}')
jwt_seed("proof-claims", 4, 15, cjson.encode({jti = "fuzz-jti-0123456789", htm = "GET", htu = HTU, iat = NOW,
  ath = o.ath(TOKEN), nonce = NONCE}))
jwt_seed("proof-claims-old", 4, 0, '{"jti":"fuzz-jti-0123456789","htm":"GET","htu":"' .. HTU .. '","iat":1}')
jwt_seed("proof-header", 5, 15, cjson.encode({typ = "dpop+jwt", alg = "ES256", jwk = es:public_jwk()}))
jwt_seed("proof-header-jwks", 5, 0, cjson.encode({typ = "dpop+jwt", alg = "ES256", jwk = {keys = {es:public_jwk()}}}))
jwt_seed("assembled-kid-number", 6, 0, '{"alg":"ES256","kid":5}\0{}\0AAAA')
jwt_seed("assembled-proof-header", 6, 0, cjson.encode({typ = "dpop+jwt", alg = "ES256", jwk = es:public_jwk()}) ..
  "\0" .. cjson.encode({jti = "fuzz-jti-0123456789", htm = "GET", htu = HTU, iat = NOW}) .. "\0" .. proof:match("[^.]+$"))
print("seeds written under fuzz/corpus/")
