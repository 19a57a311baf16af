-- bench/memory.lua BASE_URL [PROOFS_FIRST PROOFS_TOTAL CALLS]: VmRSS (from /proc/self/status)
-- with a full GC before each reading, so the figures show memory the program still holds, not
-- collector slack. The client is made (and its token fetched) first, so the growth from the
-- 10k-proof reading to the end is steady state: 90k more proofs, then 10k calls.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local base = arg[1]
local first, total, calls = tonumber(arg[2] or 10000), tonumber(arg[3] or 100000), tonumber(arg[4] or 10000)
local token, htu = lib.access_token(), lib.HTU
local function rss()
  collectgarbage() collectgarbage()
  return lib.rss_kib()
end
lib.out("rss_start_kib", rss())
local key = lib.key(oktadpop, "ES256")
local client = assert(oktadpop.new {
  org_url = base, client_id = "0oabench000000000000", scopes = "okta.users.read",
  private_key = lib.key(oktadpop, "RS256", "cc"), dpop_key = key,
})
assert(client:get("/api/v1/users"))
lib.out("rss_client_kib", rss())
for i = 1, first do assert(oktadpop.dpop_proof(key, { htm = "GET", htu = htu, access_token = token })) end
lib.out("rss_proofs_first_kib", rss())
for i = first + 1, total do assert(oktadpop.dpop_proof(key, { htm = "GET", htu = htu, access_token = token })) end
lib.out("rss_proofs_total_kib", rss())
for i = 1, calls do assert(client:get("/api/v1/users")) end
lib.out("rss_calls_total_kib", rss())
client:close()
