-- bench/callloop.lua BASE_URL ALG N: a client, its token, then N client:get calls; run under
-- callgrind twice (two values of N) so that start-up and the token exchange cancel out.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local base, alg, n = arg[1], arg[2], tonumber(arg[3])
local client = assert(oktadpop.new {
  org_url = base, client_id = "0oabench000000000000", scopes = "okta.users.read",
  private_key = lib.key(oktadpop, "RS256", "cc"), dpop_key = lib.key(oktadpop, alg),
})
assert(client:get("/api/v1/users"))
for i = 1, n do assert(client:get("/api/v1/users")) end
client:close()
