-- bench/report.lua RESULTS_FILE OUT.md: turns bench/run's "key value" lines into one table
-- (printed) and bench/RESULTS.md (the table, the machine, the method, the profiles).
local results_file, md_file = arg[1], arg[2]
-- A results file's "key value" lines as a table.
local function read_results(path)
  local T = {}
  for line in io.lines(path) do
    local k, v = line:match("^(%S+) ?(.*)$")
    if k then T[k] = v end
  end
  return T
end
local R = read_results(results_file)
local function num(k) return tonumber(R[k] or "") end

local function fmt(n)
  if not n then return "–" end
  local s = n >= 100 and string.format("%.0f", n) or string.format("%.1f", n)
  local int, frac = s:match("^(%d+)(.*)$")
  int = int:reverse():gsub("(%d%d%d)", "%1 "):reverse():gsub("^ ", "")
  return int .. frac
end
local function pct(a, b)
  if not a or not b or b == 0 then return "–" end
  return string.format("%.1f %%", 100 * a / b)
end
local function verdict(ok) return ok and "met" or "**MISSED**" end

local rows, misses = {}, {}
local function row(part, what, result, reference, ratio, target)
  rows[#rows + 1] = { part, what, result, reference, ratio, target or "" }
end

local ALGS = { { "es256", "ES256" }, { "rs256", "RS256" } }

-- 1. proofs per second
local PROOF_TARGET = { es256 = 90, rs256 = 95 }
local proof_rows = {
  { "lua54", "oktadpop, Lua 5.4" },
  { "luajit", "oktadpop, LuaJIT" },
  { "seed-file", "Node: the seed as written (reads both key files per proof)" },
  { "seed-mem", "Node: the seed, key bytes in its cache fields (PEM parsed per proof)" },
  { "jwt-key", "Node: jsonwebtoken, parsed KeyObject (its best case)" },
  { "jose", "Node: jose SignJWT (WebCrypto)" },
}
for _, A in ipairs(ALGS) do
  local a, ALG = A[1], A[2]
  for _, p in ipairs(proof_rows) do
    local limit = num("speed." .. a .. "." .. p[1]) or num("speed." .. a)
    local rate = num("proof." .. p[1] .. "." .. a .. ".rate")
    local target = ""
    if p[1] == "lua54" or p[1] == "luajit" then
      local ok = rate and limit and rate / limit * 100 >= PROOF_TARGET[a]
      target = "≥ " .. PROOF_TARGET[a] .. " %: " .. verdict(ok)
      if not ok then misses[#misses + 1] = ALG .. " proofs/s, " .. p[2] end
    end
    local result = rate and fmt(rate) or ("failed: " .. (R["proof." .. p[1] .. "." .. a .. ".error"] or "?"))
    row("1", ALG .. " proofs/s, " .. p[2], result, "openssl speed " .. fmt(limit) .. " sign/s", pct(rate, limit), target)
  end
end

-- 2. calls per second
local CALL_TARGET = { es256 = 70, rs256 = 90 }
local wrk = num("wrk.rps")
local function mean2(a, b) return (a and b) and (a + b) / 2 or a or b end
local curl_alone = mean2(num("floor.before.rate"), num("floor.after.rate"))
local call_rows = {
  { "lua54", "oktadpop, Lua 5.4" },
  { "luajit", "oktadpop, LuaJIT" },
  { "seed", "Node: the seed (fetch + jsonwebtoken, key in memory)" },
  { "sdk", "Node: @okta/okta-sdk-nodejs (DPoP mode, its one key)" },
}
for _, A in ipairs(ALGS) do
  local a, ALG = A[1], A[2]
  local sign = num("speed." .. a)
  local limit = (wrk and sign) and 1 / (1 / wrk + 1 / sign) or nil
  row("2", ALG .. " calls/s limit = 1 / (wrk time per request + openssl sign time)", fmt(limit),
    "wrk " .. fmt(wrk) .. " req/s, openssl " .. fmt(sign) .. " sign/s", "", "")
  for _, c in ipairs(call_rows) do
    local rate = num("calls." .. c[1] .. "." .. a .. ".rate")
    local target = ""
    if c[1] == "lua54" or c[1] == "luajit" then
      local ok = rate and limit and rate / limit * 100 >= CALL_TARGET[a]
      target = "≥ " .. CALL_TARGET[a] .. " %: " .. verdict(ok)
      if not ok then misses[#misses + 1] = ALG .. " calls/s, " .. c[2] end
    end
    local result
    if rate then
      result = fmt(rate)
    elseif R["calls." .. c[1] .. "." .. a .. ".error"] then
      local e = R["calls." .. c[1] .. "." .. a .. ".error"]:gsub('^"', ""):gsub('"$', ""):gsub("|", "/")
      result = c[1] == "sdk" and ("n/a: its proofs are RS256 only; with an EC key: \"" .. e .. "\"") or ("n/a: " .. e)
    else
      result = "–"
    end
    row("2", ALG .. " calls/s, " .. c[2], result, "limit " .. fmt(limit), pct(rate, limit), target)
  end
  -- the same calls against the floor of their own stack, each part measured in this run:
  -- libcurl alone making the same request, the signature, cjson decoding the page
  for _, rt in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local p = "calls." .. rt[1] .. "." .. a .. "."
    local rate, decode = num(p .. "rate"), num(p .. "decode_rate")
    local floor = (curl_alone and sign and decode) and 1 / (1 / curl_alone + 1 / sign + 1 / decode) or nil
    row("2", ALG .. " calls/s, oktadpop, " .. rt[2] .. ", against its stack: 1 / (libcurl alone + sign + cjson decode)",
      fmt(rate), "libcurl alone " .. fmt(curl_alone) .. " req/s, decode " .. fmt(decode) .. "/s: " .. fmt(floor),
      pct(rate, floor), "")
  end
end

-- 3. round trips per token acquisition
local renew = num("rt.oktadpop_renewal1")
local renew_all = {}
for i = 1, 3 do renew_all[#renew_all + 1] = R["rt.oktadpop_renewal" .. i] or "?" end
row("3", "token round trips, oktadpop, cold", R["rt.oktadpop_cold"] or "–", "emulator log", "", "2 (nonce challenge)")
local ok_rt = true
for _, v in ipairs(renew_all) do ok_rt = ok_rt and v == "1" end
row("3", "token round trips, oktadpop, renewal (`client:token(true)`, ×3)", table.concat(renew_all, ", "),
  "emulator log", "", "1: " .. verdict(ok_rt))
if not ok_rt then misses[#misses + 1] = "one round trip per renewal" end
row("3", "token round trips, the seed, cold / again", (R["rt.seed_cold_token_requests"] or "?") .. " / " ..
  (R["rt.seed_renewal_token_requests"] or "?"), "emulator log", "", "")
row("3", "token round trips, Okta SDK, cold / after its 401 reset", (R["rt.sdk_cold_token_requests"] or "?") .. " / " ..
  (R["rt.sdk_renewal_token_requests"] or "?"), "emulator log", "", "")

-- 4. memory
-- A row for VmRSS growth between two readings (target: under 1 MiB), per runtime.
local function rss_rows(prefix, first, last, what, at, miss)
  for _, rt in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local p = prefix .. "." .. rt[1] .. "."
    local a, b = num(p .. first), num(p .. last)
    local growth = (a and b) and (b - a) or nil
    local ok = growth and growth < 1024
    if not ok then misses[#misses + 1] = miss .. " " .. rt[2] end
    row("4", what(p) .. ", " .. rt[2], growth and string.format("%+d KiB", growth) or ("failed: " .. (R[p .. "error"] or "?")),
      a and ("VmRSS at " .. at .. " " .. fmt(a) .. " KiB") or "", "", "< 1024 KiB: " .. verdict(ok))
  end
end
rss_rows("mem", "rss_proofs_first_kib", "rss_calls_total_kib",
  function() return "VmRSS growth from 10k proofs to 100k proofs + 10k calls" end, "10k proofs", "RSS growth")
rss_rows("pages", "rss_first_kib", "rss_total_kib", function(p)
  return "VmRSS growth from item 10k to item " .. fmt(num(p .. "items")) .. " of `client:paginate` (200 a page)"
end, "item 10k", "paginate RSS growth")
if R["valgrind.definitely_lost"] then
  row("4", "valgrind definitely lost (1000 proofs + 100 calls, Lua 5.4)", R["valgrind.definitely_lost"],
    "errors " .. (R["valgrind.errors"] or "?"), "", "0")
end

-- 5. instructions per proof outside the signature
for _, A in ipairs(ALGS) do
  local a, ALG = A[1], A[2]
  local total, sign, over = num("ir." .. a .. ".total_ir"), num("ir." .. a .. ".sign_ir"), num("ir." .. a .. ".overhead_ir")
  if total then
    row("5", ALG .. " instructions per proof outside " .. (a == "es256" and "ECDSA_sign_ex" or "RSA_sign"),
      fmt(over), "total " .. fmt(total) .. " Ir/proof, signing " .. fmt(sign), pct(over, total) .. " of total", "")
  end
end

if num("ir.call.rest_ir") then
  local parts = {}
  for _, p in ipairs { { "ok_dpop_make", "proof" }, { "ok_json_decode", "JSON decode" }, { "curl_easy_perform", "libcurl" } } do
    local v = num("ir.call.named." .. p[1])
    if v then parts[#parts + 1] = p[2] .. " " .. fmt(v) end
  end
  row("5", "ES256 instructions per `client:get` outside ECDSA_sign_ex", fmt(num("ir.call.rest_ir")),
    #parts > 0 and ("of which " .. table.concat(parts, ", ")) or "", "", "")
end

-- 6. bulk
if num("bulk.conc.wall_s") then
  local lat, cap = num("bulk.latency_ms"), num("bulk.max_capacity")
  local c = math.min(num("bulk.max_concurrency"), num("bulk.org_concurrency"))
  local function bulk_row(k, what, floor_text)
    local wall, floor = num("bulk." .. k .. ".wall_s"), num("bulk." .. k .. ".floor_s")
    local ok = wall and floor and floor / wall >= 0.9 and num("bulk." .. k .. ".count_429") == 0
    if not ok then misses[#misses + 1] = "bulk " .. k end
    row("6", what, string.format("%.2f s", wall), floor_text .. string.format(" = %.2f s", floor), pct(floor, wall),
      "≥ 90 % of the floor, 0 429s: " .. verdict(ok))
    local limit, peak, inflight = num("bulk." .. k .. ".bucket_limit"), num("bulk." .. k .. ".bucket_peak"),
      num("bulk." .. k .. ".in_flight_peak")
    local within = peak <= math.floor(limit * cap) and inflight <= num("bulk.max_concurrency")
    if not within then misses[#misses + 1] = "bulk " .. k .. " limits" end
    row("6", "… requests sent, 429s, peak in flight, peak bucket use in a window", string.format("%d, %d, %d, %d of %d (%.0f %%)",
      num("bulk." .. k .. ".requests") or 0, num("bulk." .. k .. ".count_429"), inflight, peak, limit, 100 * peak / limit),
      "the emulator's log and stats", "",
      string.format("in flight ≤ %d, use ≤ %.0f %%: %s", num("bulk.max_concurrency"), 100 * cap, verdict(within)))
  end
  bulk_row("conc", string.format("bulk: %d user reads (`client:batch`), %d ms each, defaults (%d in flight)",
    num("bulk.conc.n"), lat, num("bulk.max_concurrency")),
    string.format("floor N × latency / C = %d × %d ms / %d", num("bulk.conc.n"), lat, c))
  bulk_row("budget", string.format("bulk: %d reads against a bucket of %d a minute (%d allowed at %.0f %%)",
    num("bulk.budget.n"), num("bulk.budget.bucket_limit"), num("bulk.budget.allowed_per_window"), 100 * cap),
    "floor: to the window's end + the rest at C")
  row("6", string.format("bulk reference: the seed's way, one call at a time (%d measured, scaled to %d)",
    num("bulk.seq.n"), num("bulk.conc.n")), string.format("%.1f s", num("bulk.seq.scaled_wall_s")),
    string.format("%.1f ms a call", num("bulk.seq.per_call_ms")),
    string.format("%.1f× the batch", num("bulk.seq.scaled_wall_s") / num("bulk.conc.wall_s")), "")
end

-- 7. the guard (bench/reportguard.lua); 8. pacing and 9. the fleet (bench/reportpacing.lua)
local guard, pacing = dofile("bench/reportguard.lua"), dofile("bench/reportpacing.lua")
local helpers = { R = R, num = num, fmt = fmt, pct = pct, verdict = verdict, row = row, misses = misses, mean2 = mean2 }
guard.rows(helpers)
pacing.rows(helpers)

local function table_md()
  local t = { "| part | measurement | result | reference | ratio | target |", "|---|---|---:|---|---:|---|" }
  for _, r in ipairs(rows) do t[#t + 1] = "| " .. table.concat(r, " | ") .. " |" end
  return table.concat(t, "\n") .. "\n"
end

io.write(table_md())

-- RESULTS.md
local out = {}
local function w(s) out[#out + 1] = s or "" end
w("# oktadpop benchmarks (`make bench`)")
w()
w("Generated by `bench/run` (`make bench`); every ratio compares two figures measured in the same")
w("run, one right after the other. The run measures how much CPU other processes took (Machine,")
w("below) and warns when the machine was not idle. Raw figures of the last run: `bench/RESULTS.tmp`.")
w()
w("## Machine")
w()
for _, k in ipairs { "cpu", "cores", "kernel", "openssl", "libcurl", "lua", "luajit", "node", "npm", "nginx", "wrk", "valgrind", "oktadpop", "perf" } do
  if R["machine." .. k] then w("- " .. k .. ": " .. R["machine." .. k]) end
end
local others = { num("machine.others_start"), num("machine.others_run"), num("machine.others_end") }
if others[1] then
  w(string.format("- other processes' share of all CPUs: %s %% before the run, %s %% during it (busy time minus the bench's own), %s %% after",
    others[1], others[2] or "?", others[3] or "?"))
end
local function spread(a, b)
  if not a or not b then return "?" end
  return string.format("%s → %s (%+.1f %%)", fmt(a), fmt(b), 100 * (b - a) / a)
end
local function runs(k)
  local v = {}
  for x in (R[k] or ""):gmatch("%S+") do v[#v + 1] = fmt(tonumber(x)) end
  return #v > 0 and table.concat(v, " → ") or "?"
end
w("- steadiness: the references, measured around the runs they are compared with: openssl speed ES256 sign/s " ..
  runs("speed.es256.runs") .. "; RS256 " .. runs("speed.rs256.runs") .. "; wrk req/s " ..
  spread(num("wrk.before"), num("wrk.after")))
local busy = false
for i = 1, 3 do busy = busy or (others[i] or 0) > 10 end
w()
if busy then
  w("**Warning: the machine was not idle during this run** (see the line above): the figures,")
  w("wall-clock ones most of all, are low and noisy. Run `make bench` again on an idle machine.")
  w()
end
w("## Results")
w()
w(table_md())
if #misses > 0 then
  w("Targets missed: " .. table.concat(misses, "; ") .. ". Profile below.")
else
  w("All targets met.")
end
w()
dofile("bench/reportbefore.lua")(R, fmt, w, read_results) -- BENCH_BEFORE: an older build's figures beside these
w("## Method")
w()
w("1. **Proofs/s**: `oktadpop.dpop_proof(key, {htm=\"GET\", htu=..., access_token=...})` in a tight")
w("   loop with a key loaded once (a " .. (R["bench.token_chars"] or "?") ..
  "-character access token, so `ath` is hashed per proof), rate per CPU second")
w("   (`os.clock`, user + system) because `openssl speed` divides by CPU user time by default;")
w("   Node peers use `process.cpuUsage()` (all threads). The reference is `openssl speed -seconds 3")
w("   ecdsap256` / `rsa2048`, \"sign/s\", run before, between and after oktadpop's two runs (each")
w("   run is compared with the mean of the two around it, the Node peers with the mean of all")
w("   three): the bare `ECDSA_sign` / `RSA_sign` on a pre-hashed digest,")
w("   so it is an upper bound no JWS signer can reach. The seed's `generateDpopToken` re-reads")
w("   both key files on every proof (`this.dpopPrivateKey || fs.readFileSync(...)`; its cache fields")
w("   are never filled): \"as written\" measures that, \"cache fields\" fills them with the file bytes")
w("   (jsonwebtoken then parses the PEM on every call), \"KeyObject\" is jsonwebtoken's best case.")
w("   The seed hard-codes RS256; here the algorithm is a parameter, nothing else changes.")
w("2. **Calls/s**: `client:get(\"/api/v1/users\")` in a loop for " .. (R["calls.lua54.es256.wall_s"] or "3") ..
  " s wall time, against nginx " .. (R["machine.nginx"] or "") .. " on 127.0.0.1")
w("   (one worker, keep-alive, `keepalive_requests` raised so no connection is closed) serving a")
w("   static " .. (R["calls.body_bytes"] or "?") .. "-byte JSON page of three Okta users (`bench/users.json`), decoded")
w("   by every client. The token is cached: oktadpop gets it with one request to a static")
w("   `/oauth2/v1/token` location in the same nginx; the seed's token field is set (its")
w("   `authenticate()` treats a first-try 200 as a failure); the SDK's state is set as after a DPoP")
w("   token exchange (see below). Every call signs a fresh proof. The transport limit comes from")
w("   `wrk -t1 -c1` on the same URL with the same `Authorization` and `DPoP` header sizes, run")
w("   before and after the clients (mean): limit = 1 / (1 / wrk req/s + 1 / openssl sign/s), wrk's")
w("   mean time per request being 1 / its req/s on one connection. The clients, wrk and nginx run")
w("   on the same CPU (see Machine): they take turns, so the figures do not depend on how fast this")
w("   VM wakes a sleeping vCPU (across vCPUs, wrk's rate swung between 9k and 31k req/s from run to run).")
w("   The stack's own floor: `bench/curlfloor.c` (built here with cc) makes the same request with the")
w("   same libcurl options and header sizes in a C loop, before and after the clients (mean), and")
w("   `bench/calls.lua` times cjson decoding the page in its runtime; floor = 1 / (1 / libcurl req/s")
w("   + 1 / openssl sign/s + 1 / decodes/s). wrk needs neither libcurl nor a JSON decoder.")
w("3. **Round trips**: the Okta emulator (`test/emulator/server.mjs`, DPoP required, a nonce")
w("   required on every token call) started from `spec/support/emulator.lua`; counts of `token`")
w("   entries in `GET /__emulator/log` per acquisition.")
w("4. **Memory**: VmRSS from `/proc/self/status` after a full `collectgarbage()`: a client and its")
w("   first call, 10k then 90k more ES256 proofs, then 10k `client:get` calls against the nginx")
w("   above; valgrind memcheck (`--leak-check=full`) on `bench/memloop.lua`. `bench/pages.lua`")
w("   walks `client:paginate` over a static 200-user page whose `Link rel=\"next\"` points at itself")
w("   (the same nginx), reading at item 10k and at item 100k.")
w("5. **Instructions**: callgrind on `bench/proofloop.lua` with two run lengths (ES256 100/600")
w("   proofs, RS256 20/120); every figure is (run 2 − run 1) / (N2 − N1), so start-up and key")
w("   loading cancel. Signing = inclusive Ir of `ECDSA_sign_ex` / `RSA_sign` (what `openssl speed`")
w("   times). Under valgrind OpenSSL sees no SHA-NI/AVX-512 CPU features, so hashing costs more")
w("   instructions here than natively.")
w("6. **Bulk**: `bench/bulk.lua` against the Okta emulator over TLS (HTTP/2), every request held")
w("   " .. (R["bulk.latency_ms"] or "?") .. " ms, an org concurrency limit of " .. (R["bulk.org_concurrency"] or "?") ..
  ", the app's 50 % share of each bucket, the client's defaults")
w("   (`max_concurrency` " .. (R["bulk.max_concurrency"] or "?") .. ", `max_capacity` " .. (R["bulk.max_capacity"] or "?") ..
  "), its token fetched before the clock starts. The concurrency run's")
w("   bucket holds every request in one window, so its floor is N × latency / C. The budget run's")
w("   bucket allows fewer than it sends, and the emulator's clock is set so that its minute ends a")
w("   few seconds after the start: the floor is the time to the window's end (which no client can")
w("   beat without going over) plus the rest at C in flight. 429s, the peak in flight and the peak")
w("   use of the bucket by this app in any one window come from `GET /__emulator/stats`.")
guard.method { R = R, w = w }
pacing.method { R = R, w = w }
w()

-- where the time goes (every figure from this run)
w("## Where the time goes")
w()
w("Per operation, in µs (1 / rate), against the budget a target leaves:")
w()
w("| operation | measured | the reference's part | the rest | the target allows for the rest |")
w("|---|---:|---:|---:|---:|")
local function us(rate) return rate and rate > 0 and 1e6 / rate or nil end
local function f1(v) return v and string.format("%.1f", v) or "–" end
for _, A in ipairs(ALGS) do
  local a, ALG = A[1], A[2]
  for _, rt in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local sign = us(num("speed." .. a .. "." .. rt[1]) or num("speed." .. a))
    local t = us(num("proof." .. rt[1] .. "." .. a .. ".rate"))
    local allow = sign and sign * (100 / PROOF_TARGET[a] - 1)
    w(string.format("| %s proof, %s | %s | sign %s | %s | %s |", ALG, rt[2], f1(t), f1(sign),
      f1(t and sign and t - sign), f1(allow)))
  end
end
for _, A in ipairs(ALGS) do
  local a, ALG = A[1], A[2]
  local sign, req = us(num("speed." .. a)), us(wrk)
  for _, rt in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local p = "calls." .. rt[1] .. "." .. a .. "."
    local t = us(num(p .. "rate"))
    local limit = sign and req and sign + req
    local allow = limit and limit * (100 / CALL_TARGET[a] - 1)
    w(string.format("| %s call, %s | %s | wrk request %s + sign %s | %s | %s |", ALG, rt[2], f1(t), f1(req), f1(sign),
      f1(t and limit and t - limit), f1(allow)))
  end
end
w()
w("Calls against the parts of their own stack, in µs per call (1 / rate): libcurl alone making the same")
w("request with the same headers (`bench/curlfloor.c`, wall time, nginx included), the signature")
w("(`openssl speed`) and cjson decoding the page (CPU time, in the same runtime); what is left is")
w("oktadpop's own work: building the request, the response tables, the state machine, the GC.")
w()
w("| call | measured | libcurl alone | sign | cjson decode | oktadpop's own | wrk request |")
w("|---|---:|---:|---:|---:|---:|---:|")
local curl_us = us(curl_alone)
for _, A in ipairs(ALGS) do
  local a, ALG = A[1], A[2]
  local sign = us(num("speed." .. a))
  for _, rt in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local p = "calls." .. rt[1] .. "." .. a .. "."
    local t, dec = us(num(p .. "rate")), us(num(p .. "decode_rate"))
    local own = (t and curl_us and sign and dec) and t - curl_us - sign - dec or nil
    w(string.format("| %s, %s | %s | %s | %s | %s | %s | %s |", ALG, rt[2], f1(t), f1(curl_us), f1(sign), f1(dec),
      f1(own), f1(us(wrk))))
  end
end
w()
local cpu_lines = {}
for _, A in ipairs(ALGS) do
  for _, rt in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local p = "calls." .. rt[1] .. "." .. A[1] .. "."
    local n, c, wl = num(p .. "n"), num(p .. "cpu_s"), num(p .. "wall_s")
    if n and c and wl then
      cpu_lines[#cpu_lines + 1] = string.format("%s %s %.0f µs CPU of %.0f µs", A[2], rt[2], 1e6 * c / n, 1e6 * wl / n)
    end
  end
end
if #cpu_lines > 0 then
  w("CPU time of the client process per call (the rest of the wall time it waits for nginx): " ..
    table.concat(cpu_lines, "; ") .. ". wrk's whole request cycle, both processes, is " .. f1(us(wrk)) .. " µs.")
  w()
end
if num("ir.call.rest_ir") then
  w(string.format("Instructions per call outside the signature (callgrind): %s Ir, of which the proof's own work %s, JSON decoding of the %s-byte body %s, libcurl %s; per bare proof outside the signature %s (ES256) / %s (RS256), against %s for the ECDSA signature itself.",
    fmt(num("ir.call.rest_ir")), fmt(num("ir.call.named.ok_dpop_make")), R["calls.body_bytes"] or "?",
    fmt(num("ir.call.named.ok_json_decode")), fmt(num("ir.call.named.curl_easy_perform")),
    fmt(num("ir.es256.overhead_ir")), fmt(num("ir.rs256.overhead_ir")), fmt(num("ir.es256.sign_ir"))))
  w()
end

-- memory details
w("## Memory")
w()
w("VmRSS after a full GC. The client (libcurl handle, connection, token) is made before the 10k-proof")
w("reading, so the growth in the table above is steady state; the client's one-time cost is the")
w("second column minus the first.")
w()
w("| runtime | Lua + module loaded | + client and first call | + 10k proofs | + 90k proofs | + 10k calls |")
w("|---|---:|---:|---:|---:|---:|")
for _, rt in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
  local p = "mem." .. rt[1] .. "."
  local cells = {}
  for _, k in ipairs { "rss_start_kib", "rss_client_kib", "rss_proofs_first_kib", "rss_proofs_total_kib", "rss_calls_total_kib" } do
    cells[#cells + 1] = R[p .. k] and (fmt(num(p .. k)) .. " KiB") or "–"
  end
  w("| " .. rt[2] .. " | " .. table.concat(cells, " | ") .. " |")
end
w()
if R["valgrind.definitely_lost"] then
  w(string.format("valgrind (1000 proofs, every tenth RS256, the rest ES256, then 100 calls): definitely lost %s, indirectly lost %s bytes, possibly lost %s bytes, %s errors.",
    R["valgrind.definitely_lost"], R["valgrind.indirectly_lost"] or "0", R["valgrind.possibly_lost"] or "0", R["valgrind.errors"] or "?"))
  w()
  for i = 1, 3 do
    if R["valgrind.leak." .. i .. ".0"] then
      w("```")
      for j = 0, 8 do
        if R["valgrind.leak." .. i .. "." .. j] then w(R["valgrind.leak." .. i .. "." .. j]) end
      end
      w("```")
      w()
    end
  end
end

-- peers
w("## The Node peers")
w()
w("- **Round trips**: the seed asks twice for every token (its `authenticate()` always expects")
w("  `use_dpop_nonce` first and keeps no nonce): cold " .. (R["rt.seed_cold_token_requests"] or "?") ..
  ", again " .. (R["rt.seed_renewal_token_requests"] or "?") .. ". It has no expiry handling.")
w("- **@okta/okta-sdk-nodejs** " .. ((R["machine.npm"] or ""):match("okta%-sdk%-nodejs@(%S+)") or "") ..
  " has no `dpop` option: it switches to DPoP when the token endpoint answers `use_dpop_nonce`")
w("  (`src/oauth.js`). Against the emulator that works (cold: " .. (R["rt.sdk_cold_token_requests"] or "?") ..
  " token requests, DPoP mode " .. (R["rt.sdk_is_dpop"] == "1" and "on" or "off") ..
  ", list call " .. (R["rt.sdk_api_statuses"] or "?"):gsub('"', "") .. "). The 400 reaches that check only because")
w("  `oauth.js` calls `Http.errorFilter` on the module object (`require('./http')` exports `{ Http }`),")
w("  so `.then(undefined)` passes every token response through unfiltered. It keeps no nonce and no")
w("  expiry: a new token (after a 401) costs " .. (R["rt.sdk_renewal_token_requests"] or "?") .. " round trips.")
w("- Against the static nginx the SDK's token request succeeds on the first try, so it would stay in")
w("  Bearer mode and send no proof; the calls/s row sets `client.oauth.accessToken` and")
w("  `client.oauth.isDPoP = true` (the state after a DPoP exchange) and checks that every request")
w("  carries `Authorization: DPoP` and a `DPoP` header. Its proofs use its one private key (the")
w("  client-assertion key: no separate DPoP key), re-import it from PEM on every proof")
w("  (`getPemAndJwk` + `node-jose`), and always say `alg: RS256` (`src/dpop.js`).")
local sdk_es = R["calls.sdk.es256.error"]
if sdk_es then
  w("  With an EC key (ES256) the first call fails: " .. sdk_es:gsub('^"', ""):gsub('"$', "") .. ".")
end
w()

guard.section { R = R, w = w }

-- profile
w("## Profiles (callgrind, Lua 5.4)")
w()
if R["machine.perf"] then w(R["machine.perf"]) w() end
-- One callgrind table: the "ir.<a>.<list>.<i>" lines ("<Ir> <tag> <function>"), ranked when top.
local function profile_table(a, unit, list, tag, count, title)
  local ranked = list == "top"
  w(title .. ", Ir per " .. unit .. ":")
  w()
  w((ranked and "| # " or "") .. "| Ir/" .. unit .. " | function |")
  w((ranked and "|---:" or "") .. "|---:|---|")
  for i = 1, count do
    local v = R["ir." .. a .. "." .. list .. "." .. i]
    if v then
      local ir, fn = v:match("^(%S+) " .. tag .. " (.*)$")
      w((ranked and ("| " .. i .. " ") or "") .. "| " .. fmt(tonumber(ir)) .. " | " .. fn .. " |")
    end
  end
  w()
end
local PROFILES = {
  { "es256", "ES256" }, { "rs256", "RS256" },
  { "call", "ES256 `client:get` calls", "call" },
}
for _, A in ipairs(PROFILES) do
  local a, ALG, unit = A[1], A[2], A[3] or "proof"
  if R["ir." .. a .. ".top.1"] then
    if unit == "call" then
      w(string.format("### %s: %s Ir per call outside ECDSA_sign_ex (bench/callloop.lua, 50 and 250 calls)", ALG,
        fmt(num("ir." .. a .. ".rest_ir"))))
    else
      w(string.format("### %s: %s Ir per proof outside the signature (whole program minus %s: %s)", ALG,
        fmt(num("ir." .. a .. ".rest_ir")), a == "es256" and "ECDSA_sign_ex" or "RSA_sign", fmt(num("ir." .. a .. ".overhead_ir"))))
    end
    w()
    profile_table(a, unit, "top", "self", 10, "Top functions by self cost, signature excluded (`--toggle-collect`)")
    profile_table(a, unit, "incl", "incl", 20,
      "Inclusive cost of the module's functions and the library entry points under them")
  end
end

if busy then
  io.stderr:write("bench: WARNING: other processes used the CPUs during this run; see bench/RESULTS.md\n")
end
local f = assert(io.open(md_file, "wb"))
f:write(table.concat(out, "\n"), "\n")
f:close()
