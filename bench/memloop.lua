-- bench/memloop.lua BASE_URL [PROOFS CALLS]: a short loop for valgrind --leak-check=full:
-- PROOFS proofs (every tenth with the RS256 key, the rest ES256), then CALLS client calls, then close.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local base, proofs, calls = arg[1], tonumber(arg[2] or 1000), tonumber(arg[3] or 100)
local keys = { lib.key(oktadpop, "ES256"), lib.key(oktadpop, "RS256") }
local token, htu = lib.access_token(), lib.HTU
for i = 1, proofs do
  assert(oktadpop.dpop_proof(keys[i % 10 == 0 and 2 or 1], { htm = "GET", htu = htu, access_token = token }))
end
local client = assert(oktadpop.new {
  org_url = base, client_id = "0oabench000000000000", scopes = "okta.users.read",
  private_key = lib.key(oktadpop, "RS256", "cc"), dpop_key = keys[1],
})
for i = 1, calls do assert(client:get("/api/v1/users")) end
client:close()
keys, client = nil, nil
collectgarbage() collectgarbage()
lib.out("done", proofs .. " proofs, " .. calls .. " calls")
