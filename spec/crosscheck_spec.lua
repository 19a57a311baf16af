-- Cross-checks against an independent implementation, the openssl CLI: oktadpop's signatures
-- verify with `openssl dgst -verify`, openssl's signatures verify with oktadpop, and
-- thumbprints match ones computed here from openssl's view of the key.
local oktadpop = require "oktadpop"
local util = require "spec.support.util"
local b64url, unb64url, parts = util.b64url, util.unb64url, util.parts
local tmpfile, cleanup, readfile, run, sh = util.tmpfile, util.cleanup, util.readfile, util.run, util.sh

local ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
local SHA = {RS256 = "sha256", RS384 = "sha384", RS512 = "sha512", ES256 = "sha256", ES384 = "sha384", ES512 = "sha512"}
local EC_SIZE = {ES256 = 32, ES384 = 48, ES512 = 66}
local CURVE = {ES256 = "P-256", ES384 = "P-384", ES512 = "P-521"}

-- ---- small helpers, all in plain Lua (5.1 and 5.4: no bit operators) ----

local function from_hex(h)
  h = h:gsub("[^%x]", "")
  if #h % 2 == 1 then h = "0" .. h end
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- DER length: short form below 128, else 0x81 nn (every length here is < 256).
local function der_len(n)
  if n < 128 then return string.char(n) end
  assert(n < 256)
  return "\129" .. string.char(n)
end

local function der_int(bytes)
  bytes = bytes:gsub("^%z+", "")
  if bytes == "" then bytes = "\0" end
  if bytes:byte(1) >= 128 then bytes = "\0" .. bytes end
  return "\2" .. der_len(#bytes) .. bytes
end

-- JOSE R||S to a DER ECDSA-Sig-Value.
local function raw_to_der(raw, size)
  assert(#raw == 2 * size, "raw signature has the wrong length")
  local body = der_int(raw:sub(1, size)) .. der_int(raw:sub(size + 1))
  return "\48" .. der_len(#body) .. body
end

-- DER ECDSA-Sig-Value to JOSE R||S, each left-padded to size.
local function der_to_raw(der, size)
  local pos = 1
  local function byte() local b = der:byte(pos); pos = pos + 1; return b end
  local function len()
    local l = byte()
    if l == 129 then return byte() end
    assert(l < 128, "unexpected DER length form")
    return l
  end
  assert(byte() == 48, "not a SEQUENCE")
  assert(len() == #der - pos + 1, "SEQUENCE length mismatch")
  local out = {}
  for i = 1, 2 do
    assert(byte() == 2, "not an INTEGER")
    local l = len()
    local v = der:sub(pos, pos + l - 1):gsub("^%z+", "")
    pos = pos + l
    assert(#v <= size, "integer too long")
    out[i] = string.rep("\0", size - #v) .. v
  end
  assert(pos == #der + 1, "trailing bytes")
  return out[1] .. out[2]
end

-- ---- files and commands ----

-- openssl dgst -verify over input with a JOSE signature (converted to DER for ES).
local function openssl_verifies(alg, pub_pem, input, jose_sig)
  local sig = EC_SIZE[alg] and raw_to_der(jose_sig, EC_SIZE[alg]) or jose_sig
  local pub, sigf, inf = tmpfile(pub_pem), tmpfile(sig), tmpfile(input)
  return run("openssl dgst -" .. SHA[alg] .. " -verify " .. pub .. " -signature " .. sigf .. " " .. inf)
end

-- RFC 7638 thumbprint from openssl's text dump of a public key PEM, computed with openssl dgst.
local function openssl_jwk(pub_path)
  local text = sh("openssl pkey -pubin -in " .. pub_path .. " -noout -text")
  if text:find("Modulus", 1, true) then
    local modulus = sh("openssl rsa -pubin -in " .. pub_path .. " -noout -modulus"):match("Modulus=(%x+)")
    local e = tonumber(text:match("Exponent: (%d+)"))
    local ebytes = ""
    while e > 0 do ebytes = string.char(e % 256) .. ebytes; e = math.floor(e / 256) end
    return {kty = "RSA", n = b64url(from_hex(modulus)), e = b64url(ebytes)}
  end
  local bits = tonumber(text:match("Public%-Key: %((%d+) bit%)"))
  local crv = ({[256] = "P-256", [384] = "P-384", [521] = "P-521"})[bits]
  local size = math.ceil(bits / 8)
  local point = from_hex(assert(text:match("\npub:\n(.-)\n%S"))) -- indented hex lines
  assert(#point == 1 + 2 * size and point:byte(1) == 4, "expected an uncompressed point")
  return {kty = "EC", crv = crv, x = b64url(point:sub(2, 1 + size)), y = b64url(point:sub(2 + size))}
end

local function canonical(jwk)
  if jwk.kty == "RSA" then
    return '{"e":"' .. jwk.e .. '","kty":"RSA","n":"' .. jwk.n .. '"}'
  end
  return '{"crv":"' .. jwk.crv .. '","kty":"EC","x":"' .. jwk.x .. '","y":"' .. jwk.y .. '"}'
end

local function openssl_thumbprint(jwk)
  local f = tmpfile(canonical(jwk))
  local digest = sh("openssl dgst -sha256 -binary " .. f)
  assert(#digest == 32)
  return b64url(digest)
end

-- ---------------------------------------------------------------------------------------

describe("helpers", function()
  after_each(cleanup)

  it("base64url round-trips every length and byte", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for n = 0, 70 do
      local s = all:sub(256 - n)
      assert.equal(s, unb64url(b64url(s)))
    end
    assert.equal("_--8", b64url("\255\239\188"))
    assert.equal(oktadpop.ath("x"), b64url(sh("printf x | openssl dgst -sha256 -binary")))
  end)

  it("DER and raw ECDSA forms convert both ways, with padding and long-form lengths", function()
    for _, size in ipairs{32, 48, 66} do
      local cases = {
        string.rep("\255", size) .. string.rep("\1", size),                      -- high bit: 0x00 pad
        string.rep("\0", size - 1) .. "\5" .. "\0\0\0\127" .. string.rep("\0", size - 4), -- leading zeros
      }
      for _, raw in ipairs(cases) do
        local der = raw_to_der(raw, size)
        assert.equal(raw, der_to_raw(der, size))
        local f = tmpfile(der)
        assert.is_true(run("openssl asn1parse -inform DER -in " .. f))
      end
    end
    local long = raw_to_der(string.rep("\1", 132), 66)
    assert.equal(48, long:byte(1))
    assert.equal(129, long:byte(2)) -- 0x81 nn: P-521 sequences exceed 127 bytes
    assert.equal(#long - 3, long:byte(3))
  end)
end)

describe("oktadpop signs, openssl verifies", function()
  local keys = {}
  setup(function()
    local rsa = assert(oktadpop.generate_key("RS256", {kid = "rsa"}))
    for _, alg in ipairs(ALGS) do
      if EC_SIZE[alg] then
        keys[alg] = assert(oktadpop.generate_key(alg))
      else
        keys[alg] = assert(oktadpop.load_key(rsa, {alg = alg}))
      end
    end
  end)
  after_each(cleanup)

  for _, alg in ipairs(ALGS) do
    it(alg .. ": JWT and DPoP proof signatures", function()
      local k = keys[alg]
      local pem = k:to_pem()
      assert.is_true(run("openssl pkey -pubin -in " .. tmpfile(pem) .. " -noout"))
      local tokens = {}
      for i = 1, EC_SIZE[alg] and 8 or 2 do -- several ECDSA signatures: R and S vary in size
        tokens[#tokens + 1] = assert(oktadpop.sign_jwt(k, {sub = "s", i = i, iss = "https://x.example"}))
      end
      tokens[#tokens + 1] = assert(oktadpop.dpop_proof(k, {htm = "GET", htu = "https://x.example/a"}))
      tokens[#tokens + 1] = assert(oktadpop.client_assertion(k, "cid", "https://x.example/token"))
      for _, jwt in ipairs(tokens) do
        local h, p, s = parts(jwt)
        local sig = unb64url(s)
        if EC_SIZE[alg] then
          assert.equal(2 * EC_SIZE[alg], #sig)
        else
          assert.equal(256, #sig)
        end
        assert.is_true(openssl_verifies(alg, pem, h .. "." .. p, sig), jwt)
        -- and the harness can fail: a changed input does not verify
        assert.is_false(openssl_verifies(alg, pem, h .. "." .. p .. "x", sig))
      end
    end)

    it(alg .. ": the public JWK and thumbprint match openssl's view of the key", function()
      local k = keys[alg]
      local jwk = openssl_jwk(tmpfile(k:to_pem()))
      local pub = k:public_jwk()
      if EC_SIZE[alg] then
        assert.equal(CURVE[alg], jwk.crv)
        assert.equal(jwk.x, pub.x)
        assert.equal(jwk.y, pub.y)
      else
        assert.equal(jwk.n, pub.n)
        assert.equal(jwk.e, pub.e)
      end
      assert.equal(openssl_thumbprint(jwk), k:thumbprint())
    end)
  end
end)

describe("openssl signs, oktadpop verifies", function()
  local pems = {} -- per alg: {priv = path, pub = path}
  local dir_files = {}
  setup(function()
    local function gen(args)
      local priv = os.tmpname()
      local pub = os.tmpname()
      dir_files[#dir_files + 1] = priv
      dir_files[#dir_files + 1] = pub
      assert(run("openssl genpkey " .. args .. " -out " .. priv))
      assert(run("openssl pkey -in " .. priv .. " -pubout -out " .. pub))
      return {priv = priv, pub = pub}
    end
    local rsa = gen("-algorithm RSA -pkeyopt rsa_keygen_bits:2048")
    pems.RS256, pems.RS384, pems.RS512 = rsa, rsa, rsa
    pems.ES256 = gen("-algorithm EC -pkeyopt ec_paramgen_curve:P-256")
    pems.ES384 = gen("-algorithm EC -pkeyopt ec_paramgen_curve:P-384")
    pems.ES512 = gen("-algorithm EC -pkeyopt ec_paramgen_curve:P-521")
  end)
  teardown(function()
    for _, f in ipairs(dir_files) do os.remove(f) end
  end)
  after_each(cleanup)

  -- JWT made entirely outside the module: JSON written by hand, signed by openssl.
  local function openssl_jwt(alg, claims_json)
    local input = b64url('{"alg":"' .. alg .. '","typ":"JWT"}') .. "." .. b64url(claims_json)
    local inf, sigf = tmpfile(input), tmpfile()
    assert(run("openssl dgst -" .. SHA[alg] .. " -sign " .. pems[alg].priv .. " -out " .. sigf .. " " .. inf))
    local sig = readfile(sigf)
    if EC_SIZE[alg] then sig = der_to_raw(sig, EC_SIZE[alg]) end
    return input .. "." .. b64url(sig)
  end

  for _, alg in ipairs(ALGS) do
    it(alg .. ": verify_jwt accepts openssl's signature", function()
      local pub_pem, priv_pem = readfile(pems[alg].pub), readfile(pems[alg].priv)
      local loaded_pub = assert(oktadpop.load_key(pub_pem, {alg = alg}))
      local loaded_priv = assert(oktadpop.load_key(pems[alg].priv, {alg = alg})) -- from the file path
      assert.is_true(loaded_priv.private)
      for i = 1, EC_SIZE[alg] and 8 or 1 do
        local jwt = openssl_jwt(alg, '{"iss":"openssl","i":' .. i .. ',"aud":["a","b"]}')
        for _, source in ipairs{loaded_pub, loaded_priv, loaded_pub:public_jwk()} do
          local claims, header = oktadpop.verify_jwt(jwt, source, {issuer = "openssl", audience = "b"})
          assert.is_table(claims, tostring(header))
          assert.equal(i, claims.i)
          assert.same({alg = alg, typ = "JWT"}, header)
        end
        if alg ~= "RS384" and alg ~= "RS512" then -- an RSA PEM alone means RS256
          assert.is_table(oktadpop.verify_jwt(jwt, pub_pem))
          assert.is_table(oktadpop.verify_jwt(jwt, priv_pem))
        end
        local h, _, s = parts(jwt)
        local v, err = oktadpop.verify_jwt(h .. "." .. b64url('{"iss":"openssl","i":0}') .. "." .. s, loaded_pub)
        assert.is_nil(v)
        assert.equal("signature", err.check)
      end
    end)

    it(alg .. ": thumbprint equals one computed from openssl's key dump", function()
      local jwk = openssl_jwk(pems[alg].pub)
      local expected = openssl_thumbprint(jwk)
      assert.equal(expected, assert(oktadpop.load_key(readfile(pems[alg].pub))):thumbprint())
      assert.equal(expected, assert(oktadpop.load_key(pems[alg].priv)):thumbprint())
      assert.equal(expected, assert(oktadpop.load_key(jwk)):thumbprint())
    end)
  end

  it("oktadpop verifies DPoP proofs whose key openssl made", function()
    for _, alg in ipairs{"RS256", "ES256", "ES512"} do
      local k = assert(oktadpop.load_key(pems[alg].priv, {alg = alg}))
      local proof = assert(oktadpop.dpop_proof(k, {htm = "GET", htu = "https://x.example/a"}))
      local _, header, jkt = oktadpop.verify_dpop_proof(proof, {htm = "GET", htu = "https://x.example/a"})
      assert.is_table(header)
      assert.equal(openssl_thumbprint(openssl_jwk(pems[alg].pub)), jkt)
    end
  end)
end)
