-- bench/proofs.lua ALG [SECONDS]: DPoP proofs per CPU-second with a cached key.
-- Prints "rate N", "cpu_s", "wall_s", "n" and the proof length.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local alg, seconds = arg[1] or "ES256", tonumber(arg[2] or "2.5")
local key = lib.key(oktadpop, alg)
local token, htu = lib.access_token(), lib.HTU
local function one()
  return oktadpop.dpop_proof(key, { htm = "GET", htu = htu, access_token = token })
end
local proof = assert(one())
assert(oktadpop.verify_dpop_proof(proof, { htm = "GET", htu = htu, access_token = token }))
lib.timed(0.2, lib.cpu, 16, one) -- warm-up (LuaJIT traces, allocator, OpenSSL caches)
local w0 = lib.wall()
local n, t = lib.timed(seconds, lib.cpu, 16, one)
lib.out("n", n)
lib.out("cpu_s", string.format("%.3f", t))
lib.out("wall_s", string.format("%.3f", lib.wall() - w0))
lib.out("rate", string.format("%.1f", n / t))
lib.out("proof_bytes", #proof)
