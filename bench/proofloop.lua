-- bench/proofloop.lua ALG N: N proofs with a key loaded from a PEM file; run under callgrind
-- twice (two values of N) so that start-up and key loading cancel out.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local alg, n = arg[1], tonumber(arg[2])
local key = lib.key(oktadpop, alg)
local token, htu = lib.access_token(), lib.HTU
for i = 1, n do oktadpop.dpop_proof(key, { htm = "GET", htu = htu, access_token = token }) end
