-- bench/lib.lua: shared helpers for the Lua bench scripts (Lua 5.4 and LuaJIT).
-- Scripts print their results as "key value" lines on stdout; bench/run collects them.
local M = {}

M.HTU = "https://example.okta.com/api/v1/users"

-- The access token every bench uses (bench/run makes one Okta-sized string for the whole run).
function M.access_token()
  return os.getenv("BENCH_ACCESS_TOKEN") or ("eyJ" .. ("x"):rep(880))
end

-- The number a pattern captures in a /proc file.
local function proc_number(path, pattern)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(pattern))
end

-- Wall clock from /proc/uptime (10 ms resolution; runs last seconds, so under 0.5 % error).
function M.wall() return proc_number("/proc/uptime", "^(%S+)") end

-- CPU time of this process (user + system), like openssl speed's default (user time).
M.cpu = os.clock

-- VmRSS of this process in KiB.
function M.rss_kib() return proc_number("/proc/self/status", "VmRSS:%s*(%d+)%s*kB") end

-- Runs fn(i) in batches of `batch` until `seconds` of clock() have passed; returns ops, elapsed.
function M.timed(seconds, clock, batch, fn)
  local n, t0 = 0, clock()
  local t
  repeat
    for i = 1, batch do fn(n + i) end
    n = n + batch
    t = clock() - t0
  until t >= seconds
  return n, t
end

-- A key from a PEM file made by bench/run (fixed keys: no key generation inside measured runs).
function M.key(oktadpop, alg, name)
  local dir = os.getenv("BENCH_KEYS")
  if dir then
    local path = dir .. "/" .. (name or alg:lower()) .. ".pem"
    local f = io.open(path, "rb")
    if f then
      f:close()
      return assert(oktadpop.load_key(path, { alg = alg }))
    end
  end
  return assert(oktadpop.generate_key(alg))
end

function M.out(k, v)
  io.write(k, " ", tostring(v), "\n")
  io.flush()
end

return M
