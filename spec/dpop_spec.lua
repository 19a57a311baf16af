-- DPoP (RFC 9449): proof shape for every alg, htu normalisation, and verify_dpop_proof with
-- every check it makes.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local util = require "spec.support.util"
local b64url, parts = util.b64url, util.parts


local NOW = 1700000000
local HTU = "https://example.okta.com/api/v1/users"
local TOKEN = "eyJraWQiOiJhIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

-- RFC 7515 Appendix A.3's P-256 key, private member d included.
local A3_JWK = util.RFC7515_A3_JWK

describe("dpop_proof", function()
  local keys = {}
  setup(function()
    local rsa = assert(oktadpop.generate_key("RS256", {kid = "rsa-kid"}))
    keys.RS256 = rsa
    keys.RS384 = assert(oktadpop.load_key(rsa, {alg = "RS384"}))
    keys.RS512 = assert(oktadpop.load_key(rsa, {alg = "RS512"}))
    keys.ES256 = assert(oktadpop.generate_key("ES256", {kid = "ec-kid"}))
    keys.ES384 = assert(oktadpop.generate_key("ES384"))
    keys.ES512 = assert(oktadpop.generate_key("ES512"))
  end)

  for _, alg in ipairs{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"} do
    it(alg .. ": exact header with a public-only jwk, exact claims", function()
      local k = keys[alg]
      local proof = assert(oktadpop.dpop_proof(k, {htm = "POST", htu = HTU, iat = NOW}))
      local claims, header = oktadpop.decode_jwt(proof)
      local pub = k:public_jwk()
      local jwk = alg:sub(1, 2) == "RS" and {kty = "RSA", n = pub.n, e = pub.e}
                  or {kty = "EC", crv = pub.crv, x = pub.x, y = pub.y}
      assert.same({typ = "dpop+jwt", alg = alg, jwk = jwk}, header) -- no kid, even when the key has one
      assert.is_string(claims.jti)
      assert.same({jti = claims.jti, htm = "POST", htu = HTU, iat = NOW}, claims)
      assert.equal(k:thumbprint(), assert(oktadpop.load_key(header.jwk)):thumbprint())
      local got, hdr, jkt = oktadpop.verify_dpop_proof(proof, {htm = "POST", htu = HTU, now = NOW})
      assert.same(claims, got)
      assert.same(header, hdr)
      assert.equal(k:thumbprint(), jkt)
    end)
  end

  it("adds nonce and ath only when given", function()
    local k = keys.ES256
    local proof = assert(oktadpop.dpop_proof(k, {htm = "GET", htu = HTU, iat = NOW, nonce = "n-1",
                                                 access_token = TOKEN}))
    local c = oktadpop.decode_jwt(proof)
    assert.same({jti = c.jti, htm = "GET", htu = HTU, iat = NOW, nonce = "n-1", ath = oktadpop.ath(TOKEN)}, c)
    c = oktadpop.decode_jwt(assert(oktadpop.dpop_proof(k, {htm = "GET", htu = HTU, iat = NOW, nonce = "n-2"})))
    assert.same({jti = c.jti, htm = "GET", htu = HTU, iat = NOW, nonce = "n-2"}, c)
    c = oktadpop.decode_jwt(assert(oktadpop.dpop_proof(k, {htm = "GET", htu = HTU, iat = NOW, ath = "abc"})))
    assert.same({jti = c.jti, htm = "GET", htu = HTU, iat = NOW, ath = "abc"}, c)
    c = oktadpop.decode_jwt(assert(oktadpop.dpop_proof(k, {htm = "GET", htu = HTU, access_token = TOKEN})))
    assert.equal(oktadpop.ath(TOKEN), c.ath)
    assert.is_nil(c.nonce)
  end)

  it("ath is base64url(SHA-256(token)), 43 characters", function()
    for _, t in ipairs{TOKEN, "", "x", string.rep("a", 5000)} do
      local ath = oktadpop.ath(t)
      assert.equal(43, #ath)
      assert.matches("^[%w_%-]+$", ath)
    end
    assert.are_not.equal(oktadpop.ath("a"), oktadpop.ath("b"))
  end)

  it("normalises htu in the claim and takes iat from the clock by default", function()
    local before = os.time()
    local proof = assert(oktadpop.dpop_proof(keys.ES256, {htm = "DELETE", htu = "HTTPS://Example.OKTA.com:443/api/v1/users/a%40b.com?x=1#f"}))
    local after = os.time()
    local c = oktadpop.decode_jwt(proof)
    assert.equal("https://example.okta.com/api/v1/users/a@b.com", c.htu)
    assert.is_true(c.iat >= before and c.iat <= after)
  end)

  it("uses a given jti verbatim and makes a fresh 128-bit one otherwise", function()
    local c = oktadpop.decode_jwt(assert(oktadpop.dpop_proof(keys.ES256, {htm = "GET", htu = HTU, jti = "my-jti-0123456789"})))
    assert.equal("my-jti-0123456789", c.jti)
    c = oktadpop.decode_jwt(assert(oktadpop.dpop_proof(keys.ES256, {htm = "GET", htu = HTU})))
    assert.is_true(#c.jti >= 22)
    assert.matches("^[%w_%-]+$", c.jti)
  end)

  it("jti is unique over 10000 proofs", function()
    local seen, k = {}, keys.ES256
    for _ = 1, 10000 do
      local c = oktadpop.decode_jwt(assert(oktadpop.dpop_proof(k, {htm = "GET", htu = HTU})))
      assert.is_nil(seen[c.jti])
      seen[c.jti] = true
    end
  end)

  it("refuses a bad htm or htu with a config error", function()
    for _, opts in ipairs{{htu = HTU}, {htm = "get", htu = HTU}, {htm = "", htu = HTU}, {htm = "GET"},
                          {htm = "GET", htu = "ftp://x/"}, {htm = "GET", htu = "https://u:p@x/"}} do
      local v, err = oktadpop.dpop_proof(keys.ES256, opts)
      assert.is_nil(v)
      assert.equal("config", err.kind)
    end
  end)
end)

describe("htu", function()
  local ok_cases = {
    {"https://example.com/path?query=1#frag", "https://example.com/path"},
    {"https://example.com/path#frag", "https://example.com/path"},
    {"https://example.com/?", "https://example.com/"},
    {"HTTPS://EXAMPLE.com/Path", "https://example.com/Path"},
    {"HtTp://Example.COM/a", "http://example.com/a"},
    {"https://example.com:443/a", "https://example.com/a"},
    {"http://example.com:80/a", "http://example.com/a"},
    {"https://example.com:8443/a", "https://example.com:8443/a"},
    {"http://example.com:443/a", "http://example.com:443/a"},
    {"https://example.com:80/a", "https://example.com:80/a"},
    {"https://example.com", "https://example.com/"},
    {"https://example.com?x=1", "https://example.com/"},
    {"https://example.com#f", "https://example.com/"},
    {"https://example.com:443", "https://example.com/"},
    {"https://example.com:8443", "https://example.com:8443/"},
    {"https://x.okta.com/api/v1/users/a%40b.com", "https://x.okta.com/api/v1/users/a@b.com"},
    {"https://x.okta.com/%7Euser", "https://x.okta.com/~user"},
    {"https://x.okta.com/%7euser", "https://x.okta.com/~user"},
    {"https://x.okta.com/%41%62%2D%2E%5F", "https://x.okta.com/Ab-._"},
    {"https://x.okta.com/a%2Fb", "https://x.okta.com/a%2Fb"},
    {"https://x.okta.com/a%2fb", "https://x.okta.com/a%2Fb"},
    {"https://x.okta.com/a%20b", "https://x.okta.com/a%20b"},
    {"https://x.okta.com/a%3fb", "https://x.okta.com/a%3Fb"},
    {"https://x.okta.com/a%25b", "https://x.okta.com/a%25b"},
    {"https://x.okta.com/%e2%82%ac", "https://x.okta.com/%E2%82%AC"},
    {"https://x.okta.com/a@b:c", "https://x.okta.com/a@b:c"},
    {"https://x.okta.com/api/v1/users?search=profile.email%20eq%20%22a%22", "https://x.okta.com/api/v1/users"},
    {"https://[::1]:8443/x", "https://[::1]:8443/x"},
    {"http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"},
  }
  for _, case in ipairs(ok_cases) do
    it(case[1] .. " -> " .. case[2], function()
      local got, err = oktadpop.htu(case[1])
      assert.equal(case[2], got, tostring(err))
      assert.equal(case[2], oktadpop.htu(case[2])) -- idempotent
    end)
  end

  local bad_cases = {
    {"https://x.okta.com/a%4", "truncated escape"},
    {"https://x.okta.com/a%4?x", "truncated escape before the query"},
    {"https://x.okta.com/a%", "lone percent"},
    {"https://x.okta.com/a%zz", "non-hex escape"},
    {"https://x.okta.com/a%g1b", "non-hex escape"},
    {"ftp://x.okta.com/", "non-http scheme"},
    {"wss://x.okta.com/", "non-http scheme"},
    {"x.okta.com/api", "no scheme"},
    {"/api/v1/users", "relative URL"},
    {"", "empty"},
    {"https://", "no host"},
    {"https:///path", "no host"},
    {"https://u:p@x.okta.com/", "credentials"},
    {"https://u@x.okta.com/", "user name"},
    {"https://x.okta.com/a b", "space"},
    {"https://x.okta.com/a\rb", "CR"},
    {"https://x.okta.com/a\nb", "LF"},
    {"https://x.okta.com/a\tb", "tab"},
    {" https://x.okta.com/", "leading space"},
    {"https://x.okta.com:/a", "empty port"},
    {"https://x.okta.com:44a/a", "non-numeric port"},
  }
  for _, case in ipairs(bad_cases) do
    it("refuses " .. case[2] .. ": " .. case[1]:gsub("[\r\n\t]", "?"), function()
      local got, err = oktadpop.htu(case[1])
      assert.is_nil(got)
      assert.is_table(err)
      assert.equal("config", err.kind)
    end)
  end
end)

-- Every check twice: as it is, and with a key cache that already holds the keys (a cached key
-- must never let through a proof its import would have refused).
for _, cached in ipairs{false, true} do
describe("verify_dpop_proof" .. (cached and ", with a warm key_cache" or ""), function()
  local key, other, cache
  setup(function()
    key = assert(oktadpop.generate_key("ES256", {kid = "k1"}))
    other = assert(oktadpop.generate_key("ES256"))
    cache = cached and oktadpop.key_cache(8) or nil
  end)

  local function proof(extra, k)
    local opts = {htm = "GET", htu = HTU, iat = NOW}
    for name, v in pairs(extra or {}) do opts[name] = v end
    return assert(oktadpop.dpop_proof(k or key, opts))
  end
  local function verify(p, extra)
    if cache then -- warm: both keys' good proofs first
      for _, k in ipairs{key, other} do
        assert(oktadpop.verify_dpop_proof(proof({}, k), {htm = "GET", htu = HTU, now = NOW, key_cache = cache}))
      end
    end
    local opts = {htm = "GET", htu = HTU, now = NOW, key_cache = cache}
    for name, v in pairs(extra or {}) do opts[name] = v end
    return oktadpop.verify_dpop_proof(p, opts)
  end
  local function rejected(check, code, v, err)
    assert.is_nil(v)
    assert.is_table(err)
    assert.equal("verify", err.kind)
    assert.equal(code or "invalid_dpop_proof", err.code)
    assert.equal(check, err.check)
    assert.matches(err.code, tostring(err), 1, true)
  end

  it("returns claims, header and jkt on success", function()
    local p = proof({nonce = "n1", access_token = TOKEN})
    local claims, header, jkt = verify(p, {nonce = "n1", access_token = TOKEN, jkt = key:thumbprint()})
    assert.is_table(claims)
    assert.equal("n1", claims.nonce)
    assert.equal("dpop+jwt", header.typ)
    assert.equal(key:thumbprint(), jkt)
    assert.equal("k1", key.kid)
  end)

  it("accepts a proof for an equivalent URL in either direction", function()
    local p = proof({htu = "https://EX.com:443/a%40b?q=1"})
    assert.is_table(verify(p, {htu = "https://ex.com/a@b"}))
    p = proof({htu = "https://ex.com/a@b"})
    assert.is_table(verify(p, {htu = "https://EX.com:443/a%40b?q=1#x"}))
  end)

  it("rejects a malformed proof (check format)", function()
    rejected("format", nil, verify("a.b"))
    rejected("format", nil, verify("not a jwt at all"))
    rejected("format", nil, verify(b64url("[1]") .. "." .. b64url("{}") .. ".x"))
  end)

  it("rejects typ other than dpop+jwt", function()
    local jwt = assert(oktadpop.sign_jwt(key, {jti = "0123456789abcdefghij", htm = "GET", htu = HTU, iat = NOW},
                                         {typ = "JWT", jwk = key:public_jwk()}))
    rejected("typ", nil, verify(jwt))
    jwt = assert(oktadpop.sign_jwt(key, {jti = "0123456789abcdefghij", htm = "GET", htu = HTU, iat = NOW},
                                   {jwk = key:public_jwk()}))
    rejected("typ", nil, verify(jwt))
  end)

  it("rejects an unsupported or missing alg", function()
    local _, p = parts(proof())
    local pub = key:public_jwk()
    for _, alg in ipairs{"none", "HS256", "EdDSA"} do
      local h = b64url(cjson.encode({typ = "dpop+jwt", alg = alg, jwk = pub}))
      rejected("alg", nil, verify(h .. "." .. p .. "."))
    end
    local h = b64url(cjson.encode({typ = "dpop+jwt", jwk = pub}))
    rejected("alg", nil, verify(h .. "." .. p .. ".sig"))
  end)

  it("rejects a jwk with private members, a missing jwk and a broken jwk", function()
    local claims = {jti = "0123456789abcdefghij", htm = "GET", htu = HTU, iat = NOW}
    local a3 = assert(oktadpop.load_key(A3_JWK))
    local jwt = assert(oktadpop.sign_jwt(a3, claims, {typ = "dpop+jwt", jwk = A3_JWK}))
    rejected("jwk", nil, verify(jwt))
    for _, member in ipairs{"d", "p", "q", "dp", "dq", "qi", "k"} do
      local jwk = key:public_jwk()
      jwk[member] = "AAAA"
      rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = jwk}))))
    end
    -- a one-key JWK Set in place of the jwk, hiding the private member one level down
    rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(a3, claims, {typ = "dpop+jwt", jwk = {keys = {A3_JWK}}}))))
    rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = {keys = {key:public_jwk()}}}))))
    rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt"}))))
    rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = {kty = "EC"}}))))
    rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = "x"}))))
    -- oversized members from the untrusted header are refused before decoding
    for _, len in ipairs{1462, 1463, 1466, 1467, 1470, 4000} do
      local huge = {kty = "RSA", e = "AQAB", n = string.rep("A", len - 1) .. "Q"}
      rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = huge}))))
    end
    -- a P-256 jwk under an ES384 header does not fit
    local h = b64url(cjson.encode({typ = "dpop+jwt", alg = "ES384", jwk = key:public_jwk()}))
    local _, p, s = parts(jwt)
    rejected("jwk", nil, verify(h .. "." .. p .. "." .. s))
  end)

  it("rejects a bad signature", function()
    local h, _, s = parts(proof())
    local forged = b64url(cjson.encode({jti = "0123456789abcdefghij", htm = "GET", htu = HTU, iat = NOW}))
    rejected("signature", nil, verify(h .. "." .. forged .. "." .. s))
    -- a proof signed by another key but carrying our jwk
    local _, p2, s2 = parts(proof({}, other))
    rejected("signature", nil, verify(h .. "." .. p2 .. "." .. s2))
    rejected("signature", nil, verify(h .. "." .. p2 .. "."))
  end)

  it("rejects htm and htu mismatches", function()
    rejected("htm", nil, verify(proof(), {htm = "POST"}))
    rejected("htm", nil, verify(proof({htm = "POST"})))
    rejected("htu", nil, verify(proof(), {htu = HTU .. "/00u1"}))
    rejected("htu", nil, verify(proof({htu = "https://example.okta.com/api/v1/groups"})))
    rejected("htu", nil, verify(proof({htu = "https://other.okta.com/api/v1/users"})))
    rejected("htu", nil, verify(proof({htu = "http://example.okta.com/api/v1/users"})))
    rejected("htu", nil, verify(proof({htu = "https://example.okta.com:8443/api/v1/users"})))
    rejected("htu", nil, verify(proof({htu = "https://ex.com/a%2Fb"}), {htu = "https://ex.com/a/b"}))
    -- the query is not part of htu
    assert.is_table(verify(proof({htu = HTU .. "?limit=1"}), {htu = HTU .. "?limit=2"}))
  end)

  it("rejects a proof whose claims carry a bad htu", function()
    local claims = {jti = "0123456789abcdefghij", htm = "GET", iat = NOW}
    local hdr = {typ = "dpop+jwt", jwk = key:public_jwk()}
    rejected("htu", nil, verify(assert(oktadpop.sign_jwt(key, claims, hdr))))
    claims.htu = 7
    rejected("htu", nil, verify(assert(oktadpop.sign_jwt(key, claims, hdr))))
    claims.htu = "ftp://example.okta.com/api/v1/users"
    local v, err = verify(assert(oktadpop.sign_jwt(key, claims, hdr)))
    assert.is_nil(v)
    assert.is_table(err)
  end)

  it("rejects an old or future iat, within max_age and leeway", function()
    rejected("iat", nil, verify(proof({iat = NOW - 1000})))
    rejected("iat", nil, verify(proof({iat = NOW + 1000})))
    -- defaults: max_age 60, leeway 10
    assert.is_table(verify(proof({iat = NOW - 70})))
    rejected("iat", nil, verify(proof({iat = NOW - 71})))
    assert.is_table(verify(proof({iat = NOW + 10})))
    rejected("iat", nil, verify(proof({iat = NOW + 11})))
    assert.is_table(verify(proof({iat = NOW - 300}), {max_age = 300}))
    rejected("iat", nil, verify(proof({iat = NOW + 5}), {leeway = 0}))
    local claims = {jti = "0123456789abcdefghij", htm = "GET", htu = HTU, iat = "now"}
    rejected("iat", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = key:public_jwk()}))))
  end)

  it("rejects a missing or short jti", function()
    rejected("jti", nil, verify(proof({jti = "short"})))
    local claims = {htm = "GET", htu = HTU, iat = NOW}
    rejected("jti", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = key:public_jwk()}))))
  end)

  it("asks for the nonce with use_dpop_nonce", function()
    rejected("nonce", "use_dpop_nonce", verify(proof(), {nonce = "srv-1"}))
    rejected("nonce", "use_dpop_nonce", verify(proof({nonce = "old"}), {nonce = "srv-1"}))
    assert.is_table(verify(proof({nonce = "srv-1"}), {nonce = "srv-1"}))
    assert.is_table(verify(proof({nonce = "srv-1"}))) -- no nonce required
  end)

  it("checks ath when the access token is given", function()
    rejected("ath", nil, verify(proof(), {access_token = TOKEN}))
    rejected("ath", nil, verify(proof({access_token = TOKEN .. "x"}), {access_token = TOKEN}))
    rejected("ath", nil, verify(proof({ath = "bogus"}), {access_token = TOKEN}))
    assert.is_table(verify(proof({access_token = TOKEN}), {access_token = TOKEN}))
    assert.is_table(verify(proof({ath = oktadpop.ath(TOKEN)}), {access_token = TOKEN}))
  end)

  it("checks the key against the token's cnf.jkt", function()
    rejected("jkt", nil, verify(proof(), {jkt = other:thumbprint()}))
    rejected("jkt", nil, verify(proof(), {jkt = ""}))
    assert.is_table(verify(proof(), {jkt = key:thumbprint()}))
  end)

  it("leaves the replay check to the caller: the claims carry jti and iat; jti_seen is refused", function()
    local claims = assert(verify(proof()))
    assert.is_string(claims.jti)
    assert.equal(NOW, claims.iat)
    local v, err = verify(proof(), {jti_seen = function() return false end})
    assert.is_nil(v)
    assert.equal("config", err.kind)
    assert.matches("no longer takes jti_seen", err.message, 1, true)
  end)

  it("refuses unknown options and out-of-range numbers with a config error", function()
    for _, extra in ipairs{{max_age = -math.huge}, {max_age = 0}, {leeway = -1}, {now = 1e300}, {now = 0 / 0},
                           {max_age = "60"}, {jti_seen_typo = true}} do
      local v, err = verify(proof(), extra)
      assert.is_nil(v)
      assert.equal("config", err.kind)
    end
  end)

  it("verifies RSA proofs of every RS alg", function()
    local rsa = assert(oktadpop.generate_key("RS512"))
    local p = assert(oktadpop.dpop_proof(rsa, {htm = "PUT", htu = HTU, iat = NOW}))
    local _, header, jkt = verify(p, {htm = "PUT"})
    assert.equal("RS512", header.alg)
    assert.equal(rsa:thumbprint(), jkt)
    local twin = assert(oktadpop.load_key(rsa, {alg = "RS256"}))
    p = assert(oktadpop.dpop_proof(twin, {htm = "PUT", htu = HTU, iat = NOW}))
    _, header, jkt = verify(p, {htm = "PUT"})
    assert.equal("RS256", header.alg)
    assert.equal(rsa:thumbprint(), jkt)
  end)

  it("answers a config error when htm or htu is not given, and raises on argument types", function()
    for _, opts in ipairs{{htm = "GET"}, {htu = HTU}} do
      local v, err = oktadpop.verify_dpop_proof(proof(), opts)
      assert.is_nil(v)
      assert.equal("config", err.kind)
    end
    assert.has_error(function() oktadpop.verify_dpop_proof(proof(), "GET") end)
    assert.has_error(function() oktadpop.verify_dpop_proof(nil, {htm = "GET", htu = HTU}) end)
  end)

  it("takes the access token's ath in place of the token, not both", function()
    local ath = oktadpop.ath(TOKEN)
    assert.is_table(verify(proof({access_token = TOKEN}), {ath = ath}))
    rejected("ath", nil, verify(proof({access_token = TOKEN .. "x"}), {ath = ath}))
    rejected("ath", nil, verify(proof(), {ath = ath}))
    local v, err = verify(proof({access_token = TOKEN}), {ath = ath, access_token = TOKEN})
    assert.is_nil(v)
    assert.equal("config", err.kind)
  end)

  it("refuses a cached key's JWK when a member load_key checks is wrong", function()
    local claims = {jti = "0123456789abcdefghij", htm = "GET", htu = HTU, iat = NOW}
    for _, over in ipairs{{use = "enc"}, {alg = 7}, {kid = {}}, {n = 1}} do
      local jwk = key:public_jwk()
      for k, v in pairs(over) do jwk[k] = v end
      rejected("jwk", nil, verify(assert(oktadpop.sign_jwt(key, claims, {typ = "dpop+jwt", jwk = jwk}))))
    end
  end)
end)
end

describe("key_cache", function()
  local function proof(k) return assert(oktadpop.dpop_proof(k, {htm = "GET", htu = HTU, iat = NOW})) end
  local function verify(p, cache, extra)
    local opts = {htm = "GET", htu = HTU, now = NOW, key_cache = cache}
    for name, v in pairs(extra or {}) do opts[name] = v end
    return oktadpop.verify_dpop_proof(p, opts)
  end

  it("imports a returning client's key once, under its thumbprint and alg", function()
    local cache, k = oktadpop.key_cache(4), assert(oktadpop.generate_key("ES256"))
    for _ = 1, 5 do
      local claims, _, jkt = verify(proof(k), cache)
      assert.is_table(claims)
      assert.equal(k:thumbprint(), jkt)
    end
    assert.equal(1, cache:count())
    assert.same({k:thumbprint() .. ":ES256"}, cache:keys())
    local twin = assert(oktadpop.load_key(assert(oktadpop.generate_key("RS256")), {alg = "RS384"}))
    assert.is_table(verify(proof(twin), cache))
    assert.is_table(verify(proof(assert(oktadpop.load_key(twin, {alg = "RS512"}))), cache)) -- one key, two algs
    assert.same({twin:thumbprint() .. ":RS512", twin:thumbprint() .. ":RS384", k:thumbprint() .. ":ES256"}, cache:keys())
  end)

  it("is bounded: the least recently used key goes first", function()
    local cache, keys = oktadpop.key_cache(3), {}
    for i = 1, 4 do keys[i] = assert(oktadpop.generate_key("ES256")) end
    for i = 1, 3 do assert(verify(proof(keys[i]), cache)) end
    assert(verify(proof(keys[1]), cache)) -- 1 is used again: 2 is now the oldest
    assert(verify(proof(keys[4]), cache))
    assert.equal(3, cache:count())
    assert.equal(3, cache:size())
    assert.same({keys[4]:thumbprint() .. ":ES256", keys[1]:thumbprint() .. ":ES256", keys[3]:thumbprint() .. ":ES256"},
      cache:keys())
    for i = 5, 40 do assert(verify(proof(assert(oktadpop.generate_key("ES256"))), cache)) end
    assert.equal(3, cache:count())
  end)

  it("refuses a key other than cnf.jkt before importing it", function()
    local cache, k = oktadpop.key_cache(4), assert(oktadpop.generate_key("ES256"))
    local v, err = verify(proof(k), cache, {jkt = assert(oktadpop.generate_key("ES256")):thumbprint()})
    assert.is_nil(v)
    assert.equal("jkt", err.check)
    assert.equal(0, cache:count())
    assert.is_table(verify(proof(k), cache, {jkt = k:thumbprint()}))
    assert.equal(1, cache:count())
  end)

  it("takes a size from 1 to 65536 and is only a key_cache where one is expected", function()
    assert.has_error(function() oktadpop.key_cache(0) end)
    assert.has_error(function() oktadpop.key_cache(65537) end)
    assert.equal(256, oktadpop.key_cache():size())
    local v, err = verify(proof(assert(oktadpop.generate_key("ES256"))), {})
    assert.is_nil(v)
    assert.equal("config", err.kind)
  end)
end)
