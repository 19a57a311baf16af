-- fuzz/key.lua: harness of the fuzz_key target (run by fuzz_lua.c). load_key on outside bytes:
-- PEM text, JWK/JWKS JSON text, or the table cjson makes of it (first byte % 3), with opts.alg
-- and opts.kid picked by the rest of that byte. load_key must answer key or nil, err and never
-- raise; a key it gives must be whole: its public JWK and PEM load back to the same
-- thumbprint, its public JWK has no private member, and a private key signs what its public
-- half verifies. Strings that are neither PEM nor JSON are made so (a prefix), never used as
-- file paths. No passphrase is given: the KDF cost of an encrypted PEM is the key owner's.
local o = oktadpop
local cjson = require "cjson.safe"
local ALGS = {false, "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "HS256"}
local PRIVATE = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}

local function finding(fmt, ...) error("property failed: " .. string.format(fmt, ...), 2) end

local function same(k, src, opts, what)
  local k2, err = o.load_key(src, opts)
  if not k2 then finding("%s does not load back: %s", what, tostring(err)) end
  if k2:thumbprint() ~= k:thumbprint() or k2.alg ~= k.alg then finding("%s loads back as another key", what) end
  return k2
end

return function(data)
  local b = data:byte(1) or 0
  local s = data:sub(2)
  local form, alg, kid = b % 3, ALGS[b // 3 % 8 + 1], (b // 24) % 2 == 1 and "fuzz-kid" or nil
  local src = s
  if form == 0 then
    if not s:find("^[ \t\r\n]*%-%-%-%-%-BEGIN") then src = "-----BEGIN " .. s end
  elseif form == 1 then
    if not s:find("^[ \t\r\n]*{") then src = "{" .. s end
  else
    src = cjson.decode(s)
    if type(src) ~= "table" then return end
  end
  local opts = (alg or kid) and {alg = alg or nil, kid = kid} or nil
  local k, err = o.load_key(src, opts)
  if not k then
    if getmetatable(err) == nil or err.kind == nil or type(err.message) ~= "string" then
      finding("a refusal without an error object: %s", tostring(err))
    end
    return
  end
  if alg and k.alg ~= alg then finding("asked for %s, got %s", alg, k.alg) end
  if kid and k.kid ~= kid then finding("asked for kid %s, got %s", kid, tostring(k.kid)) end
  local _ = tostring(k), k.kty, k.bits, k.private
  local jwk = k:public_jwk()
  for _, m in ipairs(PRIVATE) do if jwk[m] ~= nil then finding("public_jwk carries %s", m) end end
  same(k, jwk, nil, "public_jwk")
  same(k, assert(k:to_pem()), {alg = k.alg}, "to_pem")
  if k.private then
    same(k, assert(k:to_pem(true)), {alg = k.alg}, "to_pem(true)")
    local jwt = assert(o.sign_jwt(k, {sub = "fuzz"}))
    local claims, e2 = o.verify_jwt(jwt, jwk)
    if not claims then finding("its own JWT does not verify: %s", tostring(e2)) end
    local proof = assert(o.dpop_proof(k, {htm = "GET", htu = "https://h.example/p"}))
    claims, e2 = o.verify_dpop_proof(proof, {htm = "GET", htu = "https://h.example/p"})
    if not claims then finding("its own DPoP proof does not verify: %s", tostring(e2)) end
  end
end
