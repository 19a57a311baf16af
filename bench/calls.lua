-- bench/calls.lua BASE_URL ALG [SECONDS]: sequential client:get("/api/v1/users") per wall second
-- with a cached token (one token request, to the bench nginx) and a fresh DPoP proof per call.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local base, alg, seconds = arg[1], arg[2] or "ES256", tonumber(arg[3] or "3")
local client = assert(oktadpop.new {
  org_url = base, client_id = "0oabench000000000000", scopes = "okta.users.read",
  private_key = lib.key(oktadpop, "RS256", "cc"), dpop_key = lib.key(oktadpop, alg),
})
local body = assert(client:get("/api/v1/users")) -- acquires the token, then the first call
assert(type(body) == "table" and body[1] and body[1].id, "unexpected body")
local function one()
  local b, err = client:get("/api/v1/users")
  if not b then error(tostring(err)) end
end
lib.timed(0.2, lib.wall, 8, one) -- warm-up
local c0 = lib.cpu()
local n, t = lib.timed(seconds, lib.wall, 8, one)
local cpu_s = lib.cpu() - c0
-- cjson decoding the same page alone, in this runtime: a part of every call no client avoids
local f = assert(io.open("bench/users.json", "rb"))
local page = f:read("*a")
f:close()
local cjson = require "cjson.safe"
local dn, dt = lib.timed(1, lib.cpu, 16, function() assert(cjson.decode(page)) end)
local stats = client.stats
lib.out("n", n)
lib.out("wall_s", string.format("%.3f", t))
lib.out("cpu_s", string.format("%.3f", cpu_s))
lib.out("rate", string.format("%.1f", n / t))
lib.out("decode_rate", string.format("%.1f", dn / dt))
lib.out("token_requests", stats.token_requests)
lib.out("api_requests", stats.api_requests)
client:close()
