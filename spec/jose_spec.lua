-- JOSE: RFC vectors (7638 thumbprint, 7515 A.2/A.3, 9449 ath), sign_jwt/decode_jwt/verify_jwt
-- for every alg, malformed tokens, and private_key_jwt client assertions.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local util = require "spec.support.util"
local b64url, parts, tmpfile, readfile, B64 = util.b64url, util.parts, util.tmpfile, util.readfile, util.B64

local ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
local ES_SIG_CHARS = {ES256 = 86, ES384 = 128, ES512 = 176} -- base64url of 64/96/132 bytes

local function expect_fail(check, v, err, kind)
  assert.is_nil(v)
  assert.is_table(err)
  assert.equal(kind or "verify", err.kind)
  if check then assert.equal(check, err.check) end
end

-- Flips one character in the middle of a base64url segment.
local function flip(seg)
  local i = math.floor(#seg / 2)
  local c = seg:sub(i, i)
  return seg:sub(1, i - 1) .. (c == "A" and "B" or "A") .. seg:sub(i + 1)
end

-- ---------------------------------------------------------------------------------------
-- RFC vectors
-- ---------------------------------------------------------------------------------------

-- RFC 7638 section 3.1 (the RSA key of RFC 7517 Appendix A.1).
local RFC7638_JWK = {
  kty = "RSA",
  n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
   .. "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
   .. "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
   .. "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
  e = "AQAB",
  alg = "RS256",
  kid = "2011-04-29",
}

-- RFC 7515 Appendix A.2: RS256.
local A2_JWK = {
  kty = "RSA",
  n = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4Ql"
   .. "L-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbB"
   .. "YUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-D"
   .. "WNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
  e = "AQAB",
  d = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe"
   .. "46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI"
   .. "9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9"
   .. "pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
  p = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJ"
   .. "NPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
  q = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_Yw"
   .. "D66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
  dp = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6Hs"
    .. "JeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
  dq = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-"
    .. "NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
  qi = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi"
    .. "87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U",
}
-- {"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}
local RFC_PAYLOAD = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
local A2_SIG = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbd"
            .. "s9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K"
            .. "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np"
            .. "6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
local A2_JWS = "eyJhbGciOiJSUzI1NiJ9." .. RFC_PAYLOAD .. "." .. A2_SIG

-- RFC 7515 Appendix A.3: ES256.
local A3_JWK = util.RFC7515_A3_JWK
local A3_JWS = "eyJhbGciOiJFUzI1NiJ9." .. RFC_PAYLOAD .. "."
            .. "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"

local RFC_NOW = 1300819000 -- before the tokens' exp of 1300819380

describe("RFC vectors", function()
  it("RFC 7638 section 3.1 thumbprint", function()
    local k = assert(oktadpop.load_key(RFC7638_JWK))
    assert.equal("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", k:thumbprint())
    assert.equal("2011-04-29", k.kid)
    -- Optional members do not change it; the JSON string form gives the same.
    local bare = {kty = "RSA", n = RFC7638_JWK.n, e = "AQAB"}
    assert.equal(k:thumbprint(), assert(oktadpop.load_key(bare)):thumbprint())
    assert.equal(k:thumbprint(), assert(oktadpop.load_key(cjson.encode(RFC7638_JWK))):thumbprint())
  end)

  it("RFC 9449 section 4.2 ath", function()
    assert.equal("fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo",
                 oktadpop.ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"))
  end)

  for _, case in ipairs{{"A.2 (RS256)", A2_JWK, A2_JWS, "RS256"}, {"A.3 (ES256)", A3_JWK, A3_JWS, "ES256"}} do
    local name, jwk, jws, alg = case[1], case[2], case[3], case[4]
    describe("RFC 7515 " .. name, function()
      it("loads the RFC's private key, which passes the pairwise check", function()
        local k = assert(oktadpop.load_key(jwk))
        assert.is_true(k.private)
        assert.equal(alg, k.alg)
      end)

      it("verifies the RFC's compact serialisation", function()
        local k = assert(oktadpop.load_key(jwk))
        for _, source in ipairs{k, jwk, k:public_jwk(), k:to_pem()} do
          local claims, header = oktadpop.verify_jwt(jws, source, {now = RFC_NOW})
          assert.is_table(claims)
          assert.same({alg = alg}, header)
          assert.equal("joe", claims.iss)
          assert.equal(1300819380, claims.exp)
          assert.is_true(claims["http://example.com/is_root"])
        end
      end)

      it("reports the past exp without opts.now", function()
        local claims, err = oktadpop.verify_jwt(jws, jwk)
        expect_fail("exp", claims, err)
        assert.equal("invalid_token", err.code)
        -- and leeway is not enough to cover a decade
        claims, err = oktadpop.verify_jwt(jws, jwk, {leeway = 3600})
        expect_fail("exp", claims, err)
      end)

      it("rejects the RFC token with a flipped signature or payload", function()
        local h, p, s = parts(jws)
        expect_fail("signature", oktadpop.verify_jwt(h .. "." .. p .. "." .. flip(s), jwk, {now = RFC_NOW}))
        local other = b64url('{"iss":"joe","exp":1300819380,"http://example.com/is_root":false}')
        expect_fail("signature", oktadpop.verify_jwt(h .. "." .. other .. "." .. s, jwk, {now = RFC_NOW}))
      end)
    end)
  end

  it("A.2's private key reproduces the RFC's RS256 signature byte for byte", function()
    -- sign_jwt writes its own header, so sign the RFC's exact signing input with the key as
    -- the module exports it, through the openssl CLI.
    local k = assert(oktadpop.load_key(A2_JWK))
    local keyfile = tmpfile(k:to_pem(true))
    local input = tmpfile("eyJhbGciOiJSUzI1NiJ9." .. RFC_PAYLOAD)
    local sigfile = os.tmpname()
    local ok = os.execute("openssl dgst -sha256 -sign " .. keyfile .. " -out " .. sigfile .. " " .. input
                          .. " 2>/dev/null")
    local sig = readfile(sigfile)
    os.remove(keyfile); os.remove(input); os.remove(sigfile)
    assert.truthy(ok == true or ok == 0)
    assert.equal(A2_SIG, b64url(sig))
  end)

  it("RS256 signing is deterministic with the A.2 key and the token verifies", function()
    local k = assert(oktadpop.load_key(A2_JWK))
    local claims = {iss = "joe", exp = 1300819380, ["http://example.com/is_root"] = true}
    local a = assert(oktadpop.sign_jwt(k, claims))
    local b = assert(oktadpop.sign_jwt(k, claims))
    assert.equal(a, b)
    local got = assert(oktadpop.verify_jwt(a, A2_JWK, {now = RFC_NOW}))
    assert.same(claims, got)
    assert.equal(342, #select(3, parts(a))) -- 256-byte RSA-2048 signature
  end)
end)

-- ---------------------------------------------------------------------------------------
-- sign / decode / verify for every alg
-- ---------------------------------------------------------------------------------------

describe("JWS for every alg", function()
  local keys, others = {}, {}
  setup(function()
    local rsa = assert(oktadpop.generate_key("RS256"))
    local rsa2 = assert(oktadpop.generate_key("RS256"))
    for _, alg in ipairs(ALGS) do
      if alg:sub(1, 2) == "RS" then
        keys[alg] = assert(oktadpop.load_key(rsa, {alg = alg, kid = "kid-" .. alg}))
        others[alg] = assert(oktadpop.load_key(rsa2, {alg = alg, kid = "kid-" .. alg}))
      else
        keys[alg] = assert(oktadpop.generate_key(alg, {kid = "kid-" .. alg}))
        others[alg] = assert(oktadpop.generate_key(alg, {kid = "kid-" .. alg}))
      end
    end
  end)

  local claims = {sub = "0oa1", n = 42, list = {1, 2, 3}, nested = {a = "b"}, name = "J\195\188rgen \"q\""}

  for _, alg in ipairs(ALGS) do
    describe(alg, function()
      it("sign_jwt -> decode_jwt gives the exact header and claims", function()
        local k = keys[alg]
        local jwt = assert(oktadpop.sign_jwt(k, claims))
        local got, header = oktadpop.decode_jwt(jwt)
        assert.same({alg = alg, typ = "JWT", kid = "kid-" .. alg}, header)
        assert.same(claims, got)
        -- without a kid, the header has none
        local nokid = assert(oktadpop.load_key(k:to_pem(true), {alg = alg}))
        assert.is_nil(nokid.kid)
        header = select(2, oktadpop.decode_jwt(assert(oktadpop.sign_jwt(nokid, claims))))
        assert.same({alg = alg, typ = "JWT"}, header)
      end)

      it("uses base64url without padding and the right signature size", function()
        local jwt = assert(oktadpop.sign_jwt(keys[alg], claims))
        assert.matches("^[%w_%-]+%.[%w_%-]+%.[%w_%-]+$", jwt)
        local _, _, s = parts(jwt)
        if ES_SIG_CHARS[alg] then
          assert.equal(ES_SIG_CHARS[alg], #s) -- raw R||S, not DER
        else
          assert.equal(342, #s)
        end
      end)

      it("verifies with the key, its public JWK, a JWKS by kid, and its SPKI PEM", function()
        local k = keys[alg]
        local jwt = assert(oktadpop.sign_jwt(k, claims))
        local other = others[alg]:public_jwk()
        other.kid = "someone-else"
        local jwks = {keys = {other, k:public_jwk()}}
        local pem_key = assert(oktadpop.load_key(k:to_pem(), {alg = alg}))
        assert.is_false(pem_key.private)
        for i, source in ipairs{k, k:public_jwk(), cjson.encode(k:public_jwk()), jwks, cjson.encode(jwks), pem_key} do
          local got, header = oktadpop.verify_jwt(jwt, source)
          assert.is_table(got, "source " .. i .. ": " .. tostring(header))
          assert.same(claims, got)
          assert.equal(alg, header.alg)
        end
        -- A bare SPKI PEM carries no alg: EC keys take it from the curve, RSA keys default to
        -- RS256 (the key, never the token, picks the alg), so RS384/RS512 need the label above.
        local got, err = oktadpop.verify_jwt(jwt, k:to_pem())
        if alg == "RS384" or alg == "RS512" then
          expect_fail("alg", got, err)
        else
          assert.is_table(got, tostring(err))
          assert.same(claims, got)
        end
      end)

      it("rejects a tampered payload, header or signature", function()
        local k = keys[alg]
        local jwt = assert(oktadpop.sign_jwt(k, claims))
        local h, p, s = parts(jwt)
        local forged = b64url(cjson.encode({sub = "admin"}))
        local v, err = oktadpop.verify_jwt(h .. "." .. forged .. "." .. s, k)
        expect_fail("signature", v, err)
        assert.equal("invalid_token", err.code)
        expect_fail("signature", oktadpop.verify_jwt(h .. "." .. p .. "." .. flip(s), k))
        expect_fail("signature", oktadpop.verify_jwt(h .. "." .. p .. "." .. s:sub(1, -5), k))
        expect_fail("signature", oktadpop.verify_jwt(h .. "." .. p .. ".", k))
        local h2 = b64url(cjson.encode({alg = alg, typ = "JWT", kid = "x"}))
        expect_fail("signature", oktadpop.verify_jwt(h2 .. "." .. p .. "." .. s, k))
      end)

      it("accepts only the canonical base64url of the signature", function()
        -- The last character of a short group carries unused low bits; setting one gives a
        -- different string for the same bytes, which must not verify.
        local k = keys[alg]
        local jwt = assert(oktadpop.sign_jwt(k, claims))
        local h, p, s = parts(jwt)
        if #s % 4 == 0 then return end -- ES384: 96 bytes, whole groups only
        local last = B64:find(s:sub(-1), 1, true) - 1
        local spare = #s % 4 == 2 and 15 or 3 -- 2 chars: 4 unused bits; 3 chars: 2
        assert.equal(0, last % (spare + 1))
        local odd = s:sub(1, -2) .. B64:sub(last + 2, last + 2)
        expect_fail("signature", oktadpop.verify_jwt(h .. "." .. p .. "." .. odd, k))
        assert.is_table(oktadpop.verify_jwt(h .. "." .. p .. "." .. s, k))
      end)

      it("rejects another key of the same alg", function()
        local jwt = assert(oktadpop.sign_jwt(keys[alg], claims))
        expect_fail("signature", oktadpop.verify_jwt(jwt, others[alg]))
        expect_fail("signature", oktadpop.verify_jwt(jwt, others[alg]:public_jwk()))
      end)

      it("rejects a token whose alg is not the key's alg", function()
        local k = keys[alg]
        local jwt = assert(oktadpop.sign_jwt(k, claims))
        local relabel = ({RS256 = "RS384", RS384 = "RS512", RS512 = "RS256"})[alg]
        if relabel then
          local twin = assert(oktadpop.load_key(k, {alg = relabel}))
          assert.equal(k:thumbprint(), twin:thumbprint())
          expect_fail("alg", oktadpop.verify_jwt(jwt, twin))
        end
        -- a header claiming another alg (or none) over the same bytes
        local _, p, s = parts(jwt)
        for _, fake in ipairs{"none", "HS256", alg == "ES256" and "ES384" or "ES256", alg == "RS256" and "RS512" or "RS256"} do
          local h = b64url(cjson.encode({alg = fake, typ = "JWT"}))
          expect_fail("alg", oktadpop.verify_jwt(h .. "." .. p .. "." .. s, k))
          expect_fail("alg", oktadpop.verify_jwt(h .. "." .. p .. ".", k))
        end
        local h = b64url(cjson.encode({typ = "JWT"}))
        expect_fail("alg", oktadpop.verify_jwt(h .. "." .. p .. "." .. s, k))
      end)
    end)
  end

  it("a JWKS without a matching kid is a key error", function()
    local jwt = assert(oktadpop.sign_jwt(keys.ES256, claims))
    local other = others.ES256:public_jwk()
    other.kid = "nope"
    local v, err = oktadpop.verify_jwt(jwt, {keys = {other}})
    assert.is_nil(v)
    assert.equal("key", err.kind)
    v, err = oktadpop.verify_jwt(jwt, '{"keys": [')
    assert.is_nil(v)
    assert.equal("key", err.kind)
  end)

  it("sign_jwt merges extra header members but keeps alg from the key", function()
    local k = keys.ES256
    local jwt = assert(oktadpop.sign_jwt(k, {a = 1}, {typ = "at+jwt", cty = "x", kid = "override"}))
    local header = select(2, oktadpop.decode_jwt(jwt))
    assert.same({alg = "ES256", typ = "at+jwt", cty = "x", kid = "override"}, header)
    local v, err = oktadpop.sign_jwt(k, {a = 1}, {alg = "RS256"})
    assert.is_nil(v)
    assert.equal("config", err.kind)
    assert.is_string(oktadpop.sign_jwt(k, {a = 1}, {alg = "ES256"}))
  end)

  describe("claim checks", function()
    local NOW = 1700000000
    local function token(c) return assert(oktadpop.sign_jwt(keys.ES256, c)) end
    local function verify(c, opts) return oktadpop.verify_jwt(token(c), keys.ES256, opts) end

    it("exp: valid up to and including exp, then within leeway", function()
      assert.is_table(verify({exp = NOW}, {now = NOW}))
      assert.is_table(verify({exp = NOW + 1}, {now = NOW}))
      expect_fail("exp", verify({exp = NOW - 1}, {now = NOW}))
      assert.is_table(verify({exp = NOW - 30}, {now = NOW, leeway = 30}))
      expect_fail("exp", verify({exp = NOW - 31}, {now = NOW, leeway = 30}))
      expect_fail("exp", verify({exp = "soon"}, {now = NOW}))
      -- the real clock is used without opts.now
      assert.is_table(verify({exp = os.time() + 60}))
      expect_fail("exp", verify({exp = os.time() - 60}))
    end)

    it("nbf: not before nbf unless within leeway", function()
      assert.is_table(verify({nbf = NOW}, {now = NOW}))
      expect_fail("nbf", verify({nbf = NOW + 1}, {now = NOW}))
      assert.is_table(verify({nbf = NOW + 30}, {now = NOW, leeway = 30}))
      expect_fail("nbf", verify({nbf = NOW + 31}, {now = NOW, leeway = 30}))
      expect_fail("nbf", verify({nbf = {}}, {now = NOW}))
      assert.is_table(verify({nbf = NOW - 10, exp = NOW + 10}, {now = NOW}))
    end)

    it("issuer, subject and audience (string or array)", function()
      local c = {iss = "https://x.okta.com", sub = "0oa1", aud = "https://x.okta.com/oauth2/v1/token"}
      assert.is_table(verify(c, {issuer = c.iss, subject = c.sub, audience = c.aud}))
      expect_fail("iss", verify(c, {issuer = "https://evil"}))
      expect_fail("sub", verify(c, {subject = "0oa2"}))
      expect_fail("aud", verify(c, {audience = "https://x.okta.com"}))
      expect_fail("iss", verify({sub = "0oa1"}, {issuer = "https://x.okta.com"}))
      local multi = {aud = {"api://a", "api://b"}}
      assert.is_table(verify(multi, {audience = "api://b"}))
      assert.is_table(verify(multi, {audience = "api://a"}))
      expect_fail("aud", verify(multi, {audience = "api://c"}))
      expect_fail("aud", verify({aud = {}}, {audience = "api://a"}))
      expect_fail("aud", verify({aud = 7}, {audience = "7"}))
    end)

    it("typ", function()
      local jwt = assert(oktadpop.sign_jwt(keys.ES256, {a = 1}, {typ = "at+jwt"}))
      assert.is_table(oktadpop.verify_jwt(jwt, keys.ES256, {typ = "at+jwt"}))
      expect_fail("typ", oktadpop.verify_jwt(jwt, keys.ES256, {typ = "JWT"}))
      expect_fail("typ", oktadpop.verify_jwt(token({a = 1}), keys.ES256, {typ = "dpop+jwt"}))
    end)
  end)
end)

-- ---------------------------------------------------------------------------------------
-- malformed tokens
-- ---------------------------------------------------------------------------------------

describe("decode_jwt on malformed input", function()
  local good_h = b64url('{"alg":"ES256"}')
  local good_p = b64url('{"a":1}')
  local cases = {
    {"no dots", "abc"},
    {"two parts", "a.b"},
    {"four parts", "a.b.c.d"},
    {"an empty string", ""},
    {"empty parts", ".."},
    {"a non-base64url header", "!!!." .. good_p .. ".sig"},
    {"standard base64 characters", good_h .. "." .. b64url('{"a":"???>>>"}'):gsub("_", "/"):gsub("%-", "+") .. ".sig"},
    {"padding", good_h .. "." .. good_p .. "==.sig"},
    {"an impossible length", good_h .. "A." .. good_p .. ".sig"},
    {"non-zero unused bits (2-char group)", good_h .. "." .. good_p:sub(1, -2) .. "R.sig"},
    {"non-zero unused bits (3-char group)", (function()
      local h = b64url('{"alg":"ES256","x":123}') -- 23 bytes: ends in a 3-character group
      local v = B64:find(h:sub(-1), 1, true)
      return h:sub(1, -2) .. B64:sub(v + 1, v + 1) .. "." .. good_p .. ".sig"
    end)()},
    {"a non-JSON header", b64url("not json") .. "." .. good_p .. ".sig"},
    {"a non-JSON payload", good_h .. "." .. b64url("{\"a\":") .. ".sig"},
    {"a JSON array header", b64url("[1,2]") .. "." .. good_p .. ".sig"},
    {"a JSON string payload", good_h .. "." .. b64url('"x"') .. ".sig"},
    {"a JSON number payload", good_h .. "." .. b64url("1") .. ".sig"},
    {"a JSON null payload", good_h .. "." .. b64url("null") .. ".sig"},
    {"an empty payload", good_h .. "..sig"},
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1] .. " with a json error", function()
      local h, err = oktadpop.decode_jwt(case[2])
      assert.is_nil(h)
      assert.is_table(err)
      assert.equal("json", err.kind)
      assert.matches("malformed JWT", err.message, 1, true)
    end)
  end

  it("sanity: the well-formed version decodes", function()
    local c, h = oktadpop.decode_jwt(good_h .. "." .. good_p .. ".sig")
    assert.same({alg = "ES256"}, h)
    assert.same({a = 1}, c)
  end)

  it("verify_jwt passes the json error through", function()
    local k = oktadpop.generate_key()
    local v, err = oktadpop.verify_jwt("a.b", k)
    assert.is_nil(v)
    assert.equal("json", err.kind)
    v, err = oktadpop.verify_jwt("a.b", {keys = {k:public_jwk()}})
    assert.is_nil(v)
    assert.equal("json", err.kind)
  end)
end)

-- ---------------------------------------------------------------------------------------
-- client assertions (RFC 7523 private_key_jwt)
-- ---------------------------------------------------------------------------------------

describe("client_assertion", function()
  local AUD = "https://example.okta.com/oauth2/v1/token"
  local CID = "0oa1234567890abcdef"

  for _, case in ipairs{{"ES256", "kid-1"}, {"ES384", nil}, {"ES512", "k"}, {"RS256", "rsa"}} do
    local alg, kid = case[1], case[2]
    it(alg .. (kid and " with" or " without") .. " a kid: exact header and claims", function()
      local k = assert(oktadpop.generate_key(alg, {kid = kid}))
      local before = os.time()
      local jwt = assert(oktadpop.client_assertion(k, CID, AUD))
      local after = os.time()
      local claims, header = oktadpop.decode_jwt(jwt)
      assert.same({alg = alg, kid = kid}, header)
      assert.is_true(claims.iat >= before and claims.iat <= after)
      assert.is_string(claims.jti)
      assert.same({iss = CID, sub = CID, aud = AUD, iat = claims.iat, exp = claims.iat + 300, jti = claims.jti}, claims)
      local got = assert(oktadpop.verify_jwt(jwt, k:public_jwk(), {issuer = CID, subject = CID, audience = AUD}))
      assert.same(claims, got)
    end)
  end

  it("respects lifetime and iat", function()
    local k = assert(oktadpop.generate_key())
    local c = oktadpop.decode_jwt(assert(oktadpop.client_assertion(k, CID, AUD, {lifetime = 60})))
    assert.equal(c.iat + 60, c.exp)
    c = oktadpop.decode_jwt(assert(oktadpop.client_assertion(k, CID, AUD, {lifetime = 3600, iat = 1700000000})))
    assert.equal(1700000000, c.iat)
    assert.equal(1700003600, c.exp)
    c = oktadpop.decode_jwt(assert(oktadpop.client_assertion(k, CID, AUD, {lifetime = 1})))
    assert.equal(c.iat + 1, c.exp)
  end)

  it("refuses lifetimes outside 1..3600 and an empty client_id", function()
    local k = assert(oktadpop.generate_key())
    for _, lifetime in ipairs{0, -5, 3601, 86400} do
      local v, err = oktadpop.client_assertion(k, CID, AUD, {lifetime = lifetime})
      assert.is_nil(v)
      assert.equal("config", err.kind)
    end
    local v, err = oktadpop.client_assertion(k, "", AUD)
    assert.is_nil(v)
    assert.equal("config", err.kind)
  end)

  it("refuses a public key", function()
    local pub = assert(oktadpop.load_key(oktadpop.generate_key():public_jwk()))
    local v, err = oktadpop.client_assertion(pub, CID, AUD)
    assert.is_nil(v)
    assert.equal("key", err.kind)
  end)

  it("escapes client_id and aud as JSON strings", function()
    local k = assert(oktadpop.generate_key())
    local odd = 'a"b\\c\n'
    local c = oktadpop.decode_jwt(assert(oktadpop.client_assertion(k, odd, odd)))
    assert.equal(odd, c.iss)
    assert.equal(odd, c.aud)
  end)

  it("jti has at least 128 bits of base64url and never repeats over 1000 assertions", function()
    local k = assert(oktadpop.generate_key())
    local seen = {}
    for _ = 1, 1000 do
      local c = oktadpop.decode_jwt(assert(oktadpop.client_assertion(k, CID, AUD)))
      assert.is_true(#c.jti >= 22)
      assert.matches("^[%w_%-]+$", c.jti)
      assert.is_nil(seen[c.jti])
      seen[c.jti] = true
    end
  end)
end)

-- ---------------------------------------------------------------------------------------
-- Strict JOSE: what a forged or odd token must not get through (security review, round two)
-- ---------------------------------------------------------------------------------------

describe("strict JOSE", function()
  local NOW, HTU = 1700000000, "https://org.example/api/v1/users"
  local key
  setup(function() key = assert(oktadpop.generate_key("ES256")) end)

  -- A proof signed over any header and claims, to see what verify_dpop_proof makes of it.
  local function proof(header, claims)
    local h = {typ = "dpop+jwt", jwk = key:public_jwk()}
    h.jwk.kid, h.jwk.alg, h.jwk.use = nil, nil, nil
    for k, v in pairs(header or {}) do h[k] = v end
    local c = {jti = "jti-0123456789abcdef", htm = "GET", htu = HTU, iat = NOW, ath = oktadpop.ath("tok")}
    for k, v in pairs(claims or {}) do c[k] = v end
    return assert(oktadpop.sign_jwt(key, c, h))
  end
  local function verify(p) return oktadpop.verify_dpop_proof(p, {htm = "GET", htu = HTU, now = NOW, access_token = "tok"}) end

  it("accepts the control proof", function()
    assert.is_table(verify(proof()))
  end)

  it("refuses a crit header parameter, and b64=false (RFC 7515 section 4.1.11, RFC 7797)", function()
    expect_fail("header", verify(proof{crit = {"exp"}}))
    expect_fail("header", verify(proof{crit = {"b64"}, b64 = false}))
    expect_fail("header", verify(proof{b64 = false}))
    local jwt = assert(oktadpop.sign_jwt(key, {sub = "s"}, {crit = {"x-unknown"}, ["x-unknown"] = 1}))
    expect_fail("header", oktadpop.verify_jwt(jwt, key))
  end)

  it("compares every byte: a NUL and junk after a right prefix never matches", function()
    local NUL = "\0junk"
    expect_fail("typ", verify(proof{typ = "dpop+jwt" .. NUL}))
    expect_fail("htm", verify(proof(nil, {htm = "GET" .. NUL})))
    expect_fail("ath", verify(proof(nil, {ath = oktadpop.ath("tok") .. NUL})))
    local jwt = assert(oktadpop.sign_jwt(key, {iss = "https://issuer" .. NUL, aud = {"api" .. NUL}, sub = "s"}))
    expect_fail("iss", oktadpop.verify_jwt(jwt, key, {issuer = "https://issuer"}))
    expect_fail("aud", oktadpop.verify_jwt(jwt, key, {audience = "api"}))
    local alg = util.b64url('{"alg":"ES256\\u0000x","typ":"dpop+jwt"}') .. "." .. util.b64url('{"a":1}') .. ".sig"
    expect_fail("alg", oktadpop.verify_jwt(alg, key))
  end)

  it("compares typ as a media type: case does not matter, application/ may be there", function()
    assert.is_table(verify(proof{typ = "DPoP+JWT"}))
    assert.is_table(verify(proof{typ = "application/dpop+jwt"}))
    expect_fail("typ", verify(proof{typ = "jwt"}))
  end)

  it("refuses an exp that JSON turns into infinity (a token that would never expire)", function()
    local rsa = assert(oktadpop.generate_key("RS256"))
    local pem = util.tmpfile(rsa:to_pem(true))
    local function signed(claims_json) -- signed by the openssl CLI: oktadpop's encoder refuses infinity
      local input = util.b64url('{"alg":"RS256"}') .. "." .. util.b64url(claims_json)
      local sig = util.sh("openssl dgst -sha256 -sign " .. pem .. " -binary " .. util.tmpfile(input) .. " | base64 -w0")
      return input .. "." .. sig:gsub("=", ""):gsub("+", "-"):gsub("/", "_")
    end
    expect_fail("exp", oktadpop.verify_jwt(signed('{"sub":"s","exp":1e309}'), rsa))
    assert.is_table(oktadpop.verify_jwt(signed('{"sub":"s","exp":4102444800}'), rsa)) -- the control
  end)

  it("refuses an RSA public key whose exponent is 1 (every 'signature' would verify)", function()
    local rsa = assert(oktadpop.generate_key("RS256")):public_jwk()
    rsa.e = "AQ"
    local k, err = oktadpop.load_key(rsa)
    assert.is_nil(k)
    assert.equal("key", err.kind)
    assert.matches("exponent", err.message, 1, true)
    rsa.e = "Ag" -- 2: even
    assert.is_nil((oktadpop.load_key(rsa)))
  end)

  it("refuses times past what a number can mean before any cast", function()
    for _, opts in ipairs{{htm = "GET", htu = HTU, iat = 1e300}, {htm = "GET", htu = HTU, iat = -1},
                          {htm = "GET", htu = HTU, iat = 0 / 0}} do
      local p, err = oktadpop.dpop_proof(key, opts)
      assert.is_nil(p)
      assert.equal("config", err.kind)
    end
    local a, err = oktadpop.client_assertion(key, "c", "a", {iat = 1e300})
    assert.is_nil(a)
    assert.equal("config", err.kind)
    a, err = oktadpop.verify_jwt(assert(oktadpop.sign_jwt(key, {sub = "s"})), key, {now = -math.huge})
    assert.is_nil(a)
    assert.equal("config", err.kind)
  end)
end)
