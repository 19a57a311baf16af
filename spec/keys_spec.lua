-- Keys: generation, loading from every source, validation errors, JWK/PEM export, tostring.
local oktadpop = require "oktadpop"

local util = require "spec.support.util"
local tmpfile, sh = util.tmpfile, util.sh

describe("generate_key", function()
  it("defaults to ES256 on P-256", function()
    local k = assert(oktadpop.generate_key())
    assert.equal("ES256", k.alg)
    assert.equal("EC", k.kty)
    assert.is_true(k.private)
    assert.is_nil(k.kid)
    local jwk = k:public_jwk()
    assert.equal("P-256", jwk.crv)
    assert.equal(43, #jwk.x)
    assert.equal(43, #jwk.y)
    assert.equal("sig", jwk.use)
    assert.equal("ES256", jwk.alg)
  end)

  for _, case in ipairs{{"ES384", "P-384", 64}, {"ES512", "P-521", 88}} do
    it("makes " .. case[1] .. " keys on " .. case[2], function()
      local jwk = assert(oktadpop.generate_key(case[1])):public_jwk()
      assert.equal(case[2], jwk.crv)
      assert.equal(case[3], #jwk.x)
    end)
  end

  it("makes RSA-2048 unless bits are given", function()
    local k = assert(oktadpop.generate_key("RS256"))
    assert.equal(2048, k.bits)
    assert.equal("AQAB", k:public_jwk().e)
    local k3 = assert(oktadpop.generate_key("RS512", {bits = 3072, kid = "k1"}))
    assert.equal(3072, k3.bits)
    assert.equal("RS512", k3.alg)
    assert.equal("k1", k3.kid)
  end)

  it("refuses unknown algs and bad sizes with an error object", function()
    local k, err = oktadpop.generate_key("HS256")
    assert.is_nil(k)
    assert.equal("config", err.kind)
    assert.matches("unsupported alg", tostring(err))
    k, err = oktadpop.generate_key("RS256", {bits = 1024})
    assert.is_nil(k)
    assert.matches("2048 to 4096", err.message)
  end)
end)

describe("load_key", function()
  local ec_pem, ec_sec1, rsa_pkcs1, rsa_pkcs8, enc_pkcs8
  setup(function()
    ec_sec1 = sh("openssl ecparam -name prime256v1 -genkey -noout")
    ec_pem = sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384")
    rsa_pkcs8 = sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048")
    local p = tmpfile(rsa_pkcs8)
    rsa_pkcs1 = sh("openssl rsa -traditional -in " .. p)
    enc_pkcs8 = sh("openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:s3cret -in " .. p)
    os.remove(p)
  end)

  it("reads SEC1, PKCS#8, PKCS#1 and encrypted PKCS#8 PEM", function()
    assert.matches("BEGIN EC PRIVATE KEY", ec_sec1)
    assert.matches("BEGIN RSA PRIVATE KEY", rsa_pkcs1)
    assert.matches("BEGIN ENCRYPTED PRIVATE KEY", enc_pkcs8)
    assert.equal("ES256", assert(oktadpop.load_key(ec_sec1)).alg)
    assert.equal("ES384", assert(oktadpop.load_key(ec_pem)).alg)
    local a = assert(oktadpop.load_key(rsa_pkcs1))
    local b = assert(oktadpop.load_key(rsa_pkcs8))
    local c = assert(oktadpop.load_key(enc_pkcs8, {passphrase = "s3cret"}))
    assert.equal(a:thumbprint(), b:thumbprint())
    assert.equal(a:thumbprint(), c:thumbprint())
    assert.is_true(c.private)
  end)

  it("names a missing or wrong passphrase", function()
    local k, err = oktadpop.load_key(enc_pkcs8)
    assert.is_nil(k)
    assert.equal("key", err.kind)
    assert.matches("passphrase", err.message)
    k, err = oktadpop.load_key(enc_pkcs8, {passphrase = "nope"})
    assert.is_nil(k)
    assert.matches("wrong passphrase", err.message)
  end)

  it("reads a file path, a JWK table, JWK JSON and a key object", function()
    local path = tmpfile(ec_sec1, "600")
    local k = assert(oktadpop.load_key(path, {kid = "file-key"}))
    os.remove(path)
    assert.equal("file-key", k.kid)
    local pub = k:public_jwk()
    local from_table = assert(oktadpop.load_key(pub))
    assert.is_false(from_table.private)
    assert.equal(k:thumbprint(), from_table:thumbprint())
    assert.equal("file-key", from_table.kid)
    local json = require("cjson").encode(pub)
    assert.equal(k:thumbprint(), assert(oktadpop.load_key(json)):thumbprint())
    assert.equal(k, oktadpop.load_key(k))
    local twin = assert(oktadpop.load_key(k, {kid = "other"}))
    assert.equal("other", twin.kid)
    assert.equal("file-key", k.kid)
  end)

  it("loads SPKI public PEM for verification and refuses to sign with it", function()
    local k = assert(oktadpop.load_key(ec_sec1))
    local pub = assert(oktadpop.load_key(k:to_pem()))
    assert.is_false(pub.private)
    assert.equal(k:thumbprint(), pub:thumbprint())
    local jwt, err = oktadpop.sign_jwt(pub, {a = 1})
    assert.is_nil(jwt)
    assert.equal("key", err.kind)
    assert.matches("public key", err.message)
    local proof, perr = oktadpop.dpop_proof(pub, {htm = "GET", htu = "https://x.example/"})
    assert.is_nil(proof)
    assert.matches("public key", perr.message)
  end)

  it("round-trips private JWKs through a JWKS with kid selection", function()
    local rsa = assert(oktadpop.load_key(rsa_pkcs8))
    local pem = rsa:to_pem(true)
    assert.matches("BEGIN PRIVATE KEY", pem)
    local again = assert(oktadpop.load_key(pem))
    assert.equal(rsa:thumbprint(), again:thumbprint())
    local jwks = {keys = {
      (function() local j = oktadpop.generate_key():public_jwk(); j.kid = "a"; return j end)(),
      (function() local j = rsa:public_jwk(); j.kid = "b"; return j end)(),
    }}
    assert.equal(rsa:thumbprint(), assert(oktadpop.load_key(jwks, {kid = "b"})):thumbprint())
    local k, err = oktadpop.load_key(jwks)
    assert.is_nil(k)
    assert.matches("2 keys", err.message)
  end)

  local bad = {
    {"an RSA key under 2048 bits", function() return sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024") end, "at least 2048"},
    {"another curve", function() return sh("openssl ecparam -name secp256k1 -genkey -noout") end, "unsupported EC curve"},
    {"an Ed25519 key", function() return sh("openssl genpkey -algorithm ed25519") end, "unsupported key type"},
    {"a symmetric JWK", function() return {kty = "oct", k = "c2VjcmV0"} end, "symmetric"},
    {"corrupt PEM", function() return "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" end, "corrupt PEM"},
    {"corrupt JSON", function() return '{"kty": "EC", ' end, "corrupt JWK JSON"},
    {"an EC JWK with a point off the curve", function()
      local j = oktadpop.generate_key():public_jwk(); j.y = j.x; return j end, "not on the curve"},
    {"a JWK whose alg does not fit", function()
      local j = oktadpop.generate_key():public_jwk(); j.alg = "RS256"; return j end, "does not fit"},
    {"a JWK with use=enc", function()
      local j = oktadpop.generate_key():public_jwk(); j.use = "enc"; return j end, "use"},
    {"a missing file", function() return "/nonexistent/key.pem" end, "cannot open key file"},
    {"a directory", function() return "/tmp" end, "not a regular file"},
  }
  for _, case in ipairs(bad) do
    it("rejects " .. case[1] .. " with a clear key error", function()
      local k, err = oktadpop.load_key(case[2]())
      assert.is_nil(k)
      assert.equal("key", err.kind)
      assert.matches(case[3], err.message, 1, true)
      assert.matches("^oktadpop key error: ", tostring(err))
    end)
  end

  it("refuses oversized RSA members before touching them (no overflow, even unsigned)", function()
    local jwk = assert(oktadpop.generate_key("RS256")):public_jwk()
    jwk.e = ("QUFB"):rep(300)
    local k, err = oktadpop.load_key(jwk)
    assert.is_nil(k)
    assert.equal("key", err.kind)
    local header = require("spec.support.util").b64url(require("cjson").encode{typ = "dpop+jwt", alg = "RS256", jwk = jwk})
    local claims, perr = oktadpop.verify_dpop_proof(header .. ".e30.AAAA", {htm = "GET", htu = "https://x.example/"})
    assert.is_nil(claims)
    assert.equal("jwk", perr.check)
  end)

  it("rejects an alg option that does not fit the key", function()
    local k, err = oktadpop.load_key(ec_sec1, {alg = "ES384"})
    assert.is_nil(k)
    assert.matches("does not fit", err.message)
  end)

  it("raises on argument types, the programmer's error; a bad option value is nil, err", function()
    assert.has_error(function() oktadpop.load_key(42) end)
    assert.has_error(function() oktadpop.load_key(ec_sec1, "kid") end)
    for _, opts in ipairs{{kid = 7}, {passphrase = true}, {alg = {}}, {kdi = "typo"}} do
      local k, err = oktadpop.load_key(ec_sec1, opts)
      assert.is_nil(k)
      assert.equal("config", err.kind)
    end
  end)

  it("generate_key answers a bad bits or kid with a config error, not a raise", function()
    for _, opts in ipairs{{bits = "x"}, {bits = 1024}, {bits = 8192}, {bits = 2048.5}, {kid = 1}, {size = 2048}} do
      local k, err = oktadpop.generate_key("RS256", opts)
      assert.is_nil(k)
      assert.equal("config", err.kind)
    end
    local k, err = oktadpop.generate_key("HS256")
    assert.is_nil(k)
    assert.equal("config", err.kind)
  end)

  it("names the path of a key file it cannot open", function()
    local k, err = oktadpop.load_key("/nonexistent/dir/cc_private_key.pem")
    assert.is_nil(k)
    assert.equal("key", err.kind)
    assert.matches("/nonexistent/dir/cc_private_key.pem", err.message, 1, true)
  end)
end)

describe("key output", function()
  it("tostring shows kind, alg, kid and thumbprint, never private members", function()
    local k = assert(oktadpop.generate_key("RS256", {kid = "kid-1"}))
    local s = tostring(k)
    assert.matches("RSA private RS256", s, 1, true)
    assert.matches("kid=kid-1", s, 1, true)
    assert.matches(k:thumbprint(), s, 1, true)
    local pem = k:to_pem(true)
    local body = pem:gsub("%-%-%-%-%-[^\n]*\n", ""):gsub("\n", "")
    assert.is_nil(s:find(body:sub(1, 40), 1, true))
    for _, member in ipairs{"d", "p", "q", "dp", "dq", "qi"} do
      assert.is_nil(k:public_jwk()[member])
    end
  end)

  it("to_pem gives SPKI by default and PKCS#8 only when asked", function()
    local k = assert(oktadpop.generate_key())
    assert.matches("^%-%-%-%-%-BEGIN PUBLIC KEY%-%-%-%-%-", k:to_pem())
    assert.matches("^%-%-%-%-%-BEGIN PRIVATE KEY%-%-%-%-%-", k:to_pem(true))
    local pub = assert(oktadpop.load_key(k:public_jwk()))
    local pem, err = pub:to_pem(true)
    assert.is_nil(pem)
    assert.equal("key", err.kind)
  end)
end)
