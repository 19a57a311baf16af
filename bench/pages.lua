-- bench/pages.lua BASE_URL [ITEMS]: VmRSS while client:paginate streams ITEMS (100k) items: a
-- static page of 200 users whose Link rel="next" always points at itself (bench/run's nginx), so
-- the walk goes on until the loop stops it. Readings after a full GC at 10k items and at the end.
package.path = "bench/?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local base, total = arg[1], tonumber(arg[2] or 100000)
local function rss()
  collectgarbage() collectgarbage()
  return lib.rss_kib()
end
local client = assert(oktadpop.new {
  org_url = base, client_id = "0oabench000000000000", scopes = "okta.users.read",
  private_key = lib.key(oktadpop, "RS256", "cc"), dpop_key = lib.key(oktadpop, "ES256"),
})
local n, t0 = 0, lib.wall()
for user in client:paginate("/api/v1/users/pages", {limit = 200}) do
  assert(user.id)
  n = n + 1
  if n == 10000 then lib.out("rss_first_kib", rss()) end
  if n == total then break end
end
lib.out("items", n)
lib.out("pages", math.ceil(n / 200))
lib.out("wall_s", ("%.2f"):format(lib.wall() - t0))
lib.out("rss_total_kib", rss())
client:close()
