-- bench/guardpool.lua DIR setup | DIR proofs N [PATH]: the inputs of the guard's bench rows. "setup"
-- writes DIR/jwks.json (the authorization server's RS256 key), DIR/token (an Okta-shaped
-- DPoP-bound access token it signed) and DIR/dpop.pem (the client's ES256 key); "proofs" writes,
-- right before they are sent, DIR/proofs (N fresh proofs for GET http://api.bench/PATH, one a
-- line, each with its own jti), DIR/replay (one more: sent again and again) and DIR/bad (a proof
-- whose signature belongs to other bytes). Prints "key value" lines.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local lib = require "lib"
local util = require "spec.support.util"
local dir, mode, n = arg[1], arg[2], tonumber(arg[3] or "1000")
local HTU, ISSUER = "http://api.bench" .. (arg[4] or "/guarded"), "https://issuer.bench/oauth2/default"

local function write(name, text) util.write(dir .. "/" .. name, text) end

if mode == "setup" then
  local as = assert(oktadpop.generate_key("RS256", {kid = "bench-as"}))
  local dpop = lib.key(oktadpop, "ES256")
  assert(dpop:save_pem(dir .. "/dpop.pem", true))
  write("jwks.json", cjson.encode({keys = {as:public_jwk()}}))
  local now = os.time()
  -- the claims an Okta org authorization server puts in a client-credentials token
  local token = assert(oktadpop.sign_jwt(as, {ver = 1, jti = "AT." .. oktadpop.random(32), iss = ISSUER, aud = "api://bench",
    iat = now, exp = now + 3600, cid = "0oabench000000000000", scp = {"items.read", "items.manage"},
    sub = "0oabench000000000000", cnf = {jkt = dpop:thumbprint()}}))
  write("token", token .. "\n")
  lib.out("token_chars", #token)
  return
end

local f = assert(io.open(dir .. "/token"))
local token = f:read("*l")
f:close()
local dpop = assert(oktadpop.load_key(dir .. "/dpop.pem"))
local t0 = lib.wall()
local lines = {}
for i = 1, n do lines[i] = assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = HTU, access_token = token})) end
write("proofs", table.concat(lines, "\n") .. "\n")
write("replay", assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = HTU, access_token = token})) .. "\n")
local head, claims = lines[1]:match("^([^.]+)%.([^.]+)%.")
local other = assert(oktadpop.dpop_proof(dpop, {htm = "GET", htu = HTU, access_token = token}))
write("bad", head .. "." .. claims .. "." .. other:match("([^.]+)$") .. "\n") -- another proof's signature
lib.out("proofs", n)
lib.out("make_s", string.format("%.2f", lib.wall() - t0))
lib.out("proof_chars", #lines[1])
