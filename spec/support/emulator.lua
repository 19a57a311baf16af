-- spec/support/emulator.lua -- start and drive the Okta org emulator
-- (test/emulator/server.mjs) from busted specs.
--
--   local emulator = require "spec.support.emulator"
--   local emu = emulator.start{ tls = false, config = { clients = {...}, users = 450 } }
--   emu.url                 base URL (issuer, token aud, htu prefix)
--   emu.ca_file, emu.tls_dir  with tls = true: the test CA and the folder made by make-tls.sh
--   emu:log()               decoded request log (array of entries)
--   emu:reset()             clear log, faults, revoked tokens, rate windows and stats
--   emu:control{ rs_nonce = true, faults = {...} }
--   emu:stats()             rate-limit and concurrency statistics since the last reset
--   emu:count("token")      number of log entries of that kind
--   emu:stop()              stop the server (safe to call twice)
--
-- Options of start{}: tls (bool), config (table, see server.mjs), base_url,
-- verbose (default true: one line per request in emu.log_file), node
-- (node binary; default $OKTA_EMULATOR_NODE or "node"), timeout (seconds to
-- wait for the server, default 10).
--
-- Rate-limit settings, in config{} and (but for clients[].app_share) in
-- emu:control{} alike (test/emulator/README.md has the whole list):
--   rate_window_seconds = 2    windows of 2 s, each bucket's starting at its first request
--                              (not on the wall clock); X-Rate-Limit-Reset is the window's
--                              real end. Default (or emulator.null in control): wall-clock minutes
--   other_apps_use = {["/api/v1/users"] = 30}   requests other apps make in every window of
--                              that bucket, counted in Remaining and against the limit (a 429
--                              once the real total reaches it); a value in (0, 1) is a fraction
--                              of the bucket's limit; a bare fraction (other_apps_use = 0.5)
--                              covers every bucket; {} for none. A control change counts at once
--   app_share = 0.25           every app's share of each bucket (Okta's default 0.5): a 429 once
--                              one app alone reaches share x limit; clients[i].app_share sets one
--                              app's share in config, control app_shares = {[client_id] = 0.25}
--                              at run time ({} leaves the configured ones)
--   rate_limit_headers = false no X-Rate-Limit-* header on any answer (429s too); limits still apply
--   apps_subpath_bucket = "/api/v1"   count /api/v1/apps/{id}/* under /api/v1, the old rule; the
--                              default "/api/v1/apps" is Okta's table (100 a minute)
--   rate_limits = {[bucket] = n}, rate_limit = n (config), concurrency_limit, latency_ms
-- Faults for them: {kind = "concurrency", reset_in = s} (429, X-Rate-Limit-Limit: 0),
-- {kind = "rate_limit", reset_in = s}, {kind = "invalid_token_json"} (401 with Okta's JSON
-- E0000011 "Invalid token provided" body and no WWW-Authenticate challenge).
--
-- Runs on Lua 5.1/LuaJIT and 5.4 with stock libraries plus cjson. Processes
-- are handled through the shell (io.popen), HTTP through the curl CLI.

local cjson = require "cjson"

local M = {}

-- JSON null, for settings that take it (emu:control{rate_window_seconds = emulator.null}).
M.null = cjson.null

local Emulator = {}
Emulator.__index = Emulator

---------------------------------------------------------------------------
-- Shell helpers
---------------------------------------------------------------------------

local function shell_quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

-- Runs a shell command; returns its output (stdout and stderr) and its exit
-- code. The code is echoed by the shell itself, because popen's close() gives
-- no exit status on Lua 5.1/LuaJIT.
local function run(cmd)
  local p = assert(io.popen("( " .. cmd .. " ) 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)__rc=(%d+)%s*$")
  if not body then return out, -1 end
  return body, tonumber(rc)
end

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

local util = require "spec.support.util"
local read_file, write_file = util.try_readfile, util.write

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function mktemp_dir(prefix)
  local out, rc = run("mktemp -d " .. shell_quote("/tmp/" .. prefix .. ".XXXXXX"))
  if rc ~= 0 then error("emulator: mktemp failed: " .. out, 3) end
  return trim(out)
end

local function tail(path, n)
  local s = read_file(path)
  if not s then return "(no server log)" end
  local lines = {}
  for line in s:gmatch("[^\n]*\n?") do
    if line ~= "" then lines[#lines + 1] = line end
  end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "", from)
end

-- Is the process there (and not a zombie waiting to be reaped)?
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "rb")
  if f then
    local stat = f:read("*a") or ""
    f:close()
    return stat:match("^%d+ %b() (%a)") ~= "Z"
  end
  if exists("/proc/self/stat") then return false end -- Linux: no such process
  local _, rc = run("kill -0 " .. pid)
  return rc == 0
end

-- Finalizer for an object (a table in 5.2+, a newproxy in 5.1/LuaJIT), so a
-- forgotten emulator or temp folder is cleaned up when the Lua state closes.
local function on_gc(fn)
  if newproxy then -- luacheck: ignore
    local proxy = newproxy(true) -- luacheck: ignore
    getmetatable(proxy).__gc = fn
    return proxy
  end
  return setmetatable({}, { __gc = fn })
end

---------------------------------------------------------------------------
-- Locating the repository
---------------------------------------------------------------------------

local function cwd()
  return trim((run("pwd")))
end

local function dirname(p)
  return p:match("^(.*)/[^/]*$") or "."
end

local repo_root_cache

-- The repository root: two levels above this file, else the first folder
-- from the cwd upwards that has test/emulator/server.mjs.
local function repo_root()
  if repo_root_cache then return repo_root_cache end
  local candidates = {}
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    local file = src:sub(2)
    if file:sub(1, 1) ~= "/" then file = cwd() .. "/" .. file end
    candidates[#candidates + 1] = dirname(dirname(dirname(file)))
  end
  local dir = cwd()
  while dir ~= "" and dir ~= "/" do
    candidates[#candidates + 1] = dir
    dir = dirname(dir)
  end
  for _, c in ipairs(candidates) do
    if exists(c .. "/test/emulator/server.mjs") then
      repo_root_cache = c
      return c
    end
  end
  error("emulator: cannot find test/emulator/server.mjs (cwd " .. cwd() .. ")", 3)
end

---------------------------------------------------------------------------
-- One-time setup: npm dependencies and TLS material
---------------------------------------------------------------------------

local function ensure_node_modules(root)
  local dir = root .. "/test/emulator"
  if exists(dir .. "/node_modules/jose/package.json") then return end
  local out, rc = run("npm ci --prefix " .. shell_quote(dir) .. " --no-audit --no-fund")
  if rc ~= 0 then
    error("emulator: npm ci in test/emulator failed (rc " .. rc .. "):\n" .. out, 3)
  end
end

local tls_cache -- { dir = ..., ca_file = ..., guard = ... } shared by the whole process

local function ensure_tls(root)
  if tls_cache then return tls_cache end
  local dir = mktemp_dir("okta-emulator-tls")
  local out, rc = run("sh " .. shell_quote(root .. "/test/emulator/make-tls.sh") .. " " .. shell_quote(dir))
  if rc ~= 0 then error("emulator: make-tls.sh failed:\n" .. out, 3) end
  tls_cache = {
    dir = dir,
    ca_file = dir .. "/ca.pem",
    guard = on_gc(function() os.execute("rm -rf " .. shell_quote(dir)) end),
  }
  return tls_cache
end

---------------------------------------------------------------------------
-- Starting and stopping
---------------------------------------------------------------------------

-- The pid of this Lua process: the parent of the shell that popen starts.
local function own_pid()
  return tonumber(trim((run("echo $PPID"))))
end

-- cjson writes an empty Lua table as {}; leave such lists out instead.
local function config_json(config)
  local c = {}
  for k, v in pairs(config or {}) do
    if not (type(v) == "table" and next(v) == nil) then c[k] = v end
  end
  return cjson.encode(c)
end

-- Starts a node server in the background (args unquoted; it stops by itself once this Lua
-- process is gone), its output to log_file; returns the pid, or nil and why not.
local function spawn(args, log_file)
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  local me = own_pid()
  if me then quoted[#quoted + 1] = "--watch-pid " .. me end
  local out, rc = run(table.concat(quoted, " ") .. " </dev/null >" .. shell_quote(log_file) .. " 2>&1 & echo $!")
  local pid = tonumber(trim(out))
  if rc ~= 0 or not pid then return nil, "could not spawn node: " .. out end
  return pid
end

-- Waits up to timeout seconds for the ready file a server writes whole (by rename); returns
-- its decoded JSON, or nil and why not.
local function wait_ready(ready_file, pid, timeout)
  local waited = 0
  while waited < timeout do
    local s = read_file(ready_file)
    if s and s ~= "" then
      local ok, decoded = pcall(cjson.decode, s)
      if ok then return decoded end
    end
    if not alive(pid) then return nil, "server exited" end
    sleep(0.05)
    waited = waited + 0.05
  end
  return nil, "not ready after " .. timeout .. " s"
end

-- Stops pid: TERM, then KILL if it is still there after 5 s.
local function stop_pid(pid)
  for _, signal in ipairs({"TERM", "KILL"}) do
    if not alive(pid) then return end
    run("kill -" .. signal .. " " .. pid)
    local waited = 0
    while alive(pid) and waited < 5 do
      sleep(0.05)
      waited = waited + 0.05
    end
  end
end

-- For spec/support/responder.lua and redis.lua, which start their servers the same way.
M.shell_quote, M.spawn, M.wait_ready, M.stop_pid = shell_quote, spawn, wait_ready, stop_pid
M.repo_root, M.mktemp_dir = repo_root, mktemp_dir
M.run, M.alive, M.own_pid, M.on_gc, M.sleep = run, alive, own_pid, on_gc, sleep
-- The test CA and certificates of make-tls.sh, made once per process: {dir=, ca_file=}.
function M.tls() return ensure_tls(repo_root()) end

function M.start(opts)
  opts = opts or {}
  local root = repo_root()
  ensure_node_modules(root)

  local dir = mktemp_dir("okta-emulator")
  local self = setmetatable({
    dir = dir,
    tls = not not opts.tls,
    log_file = dir .. "/server.log",
    config_file = dir .. "/config.json",
    ready_file = dir .. "/ready.json",
  }, Emulator)
  write_file(self.config_file, config_json(opts.config))

  local args = {
    opts.node or os.getenv("OKTA_EMULATOR_NODE") or "node",
    root .. "/test/emulator/server.mjs",
    "--config", self.config_file,
    "--port", tostring(opts.port or 0),
    "--ready-file", self.ready_file,
  }
  local function add(...) for _, a in ipairs({ ... }) do args[#args + 1] = a end end
  if self.tls then
    local t = ensure_tls(root)
    self.tls_dir, self.ca_file = t.dir, t.ca_file
    add("--tls-cert", t.dir .. "/server.pem", "--tls-key", t.dir .. "/server-key.pem")
  end
  if opts.base_url then add("--base-url", opts.base_url) end
  if opts.verbose ~= false then add("--verbose") end
  local pid, err = spawn(args, self.log_file)
  if not pid then error("emulator: " .. err, 2) end
  self.pid = pid
  self.guard = on_gc(function() pcall(self.stop, self) end)

  local info, why = wait_ready(self.ready_file, self.pid, opts.timeout or 10)
  if not info then
    local log = tail(self.log_file, 30)
    self:stop()
    error("emulator: " .. why .. "; server log tail:\n" .. log, 2)
  end
  self.port = info.port
  self.listen_url = info.url
  self.url = info.base or info.url
  return self
end

function Emulator:stop()
  if self.stopped then return end
  self.stopped = true
  if self.pid then stop_pid(self.pid) end
  if self.dir then os.execute("rm -rf " .. shell_quote(self.dir)) end
end

---------------------------------------------------------------------------
-- Control requests (curl)
---------------------------------------------------------------------------

-- Sends a control request; returns the decoded JSON answer. Raises on a
-- transport error or a non-2xx status.
function Emulator:request(method, path, body)
  if self.stopped then error("emulator: already stopped", 2) end
  local parts = {
    "curl", "-sS", "--max-time", "15", "-X", method,
    "-w", shell_quote("\n%{http_code}"),
  }
  if self.ca_file then
    parts[#parts + 1] = "--cacert"
    parts[#parts + 1] = shell_quote(self.ca_file)
  end
  if body ~= nil then
    local file = self.dir .. "/control-body.json"
    write_file(file, type(body) == "string" and body or cjson.encode(body))
    parts[#parts + 1] = "-H 'Content-Type: application/json' --data-binary @" .. shell_quote(file)
  end
  parts[#parts + 1] = shell_quote(self.listen_url .. path)
  local out, rc = run(table.concat(parts, " "))
  if rc ~= 0 then error("emulator: curl " .. method .. " " .. path .. " failed: " .. out, 3) end
  local text, status = out:match("^(.*)\n(%d%d%d)$")
  status = tonumber(status)
  if not status or status < 200 or status > 299 then
    error("emulator: " .. method .. " " .. path .. " -> " .. tostring(status) .. ": " .. tostring(text or out), 3)
  end
  return cjson.decode(text)
end

function Emulator:log()
  return self:request("GET", "/__emulator/log")
end

function Emulator:reset()
  return self:request("POST", "/__emulator/reset")
end

-- Merges settings: rs_nonce, rotate_nonce, expire_tokens, token_lifetime,
-- faults (appended), rate_limits, app_share, app_shares, rate_window_seconds
-- (emulator.null for wall-clock minutes), other_apps_use, rate_limit_headers,
-- apps_subpath_bucket, concurrency_limit, latency_ms, clock_skew, log_events,
-- user_status (see test/emulator/README.md).
-- Returns the emulator's settings after the change.
function Emulator:control(settings)
  local s = {}
  for k, v in pairs(settings or {}) do s[k] = v end
  if type(s.faults) == "table" and next(s.faults) == nil then s.faults = nil end
  return self:request("POST", "/__emulator/control", s)
end

function Emulator:count(kind)
  local n = 0
  for _, e in ipairs(self:log()) do
    if kind == nil or e.kind == kind then n = n + 1 end
  end
  return n
end

function Emulator:state()
  return self:request("GET", "/__emulator/state")
end

-- Rate-limit and concurrency statistics since the last reset: { in_flight_peak = n,
-- count_429 = n, concurrency_429 = n, buckets = { [bucket] = { limit = n, peak_used = n,
-- peak_used_by_client = { [client_id] = n }, other_apps_use = n, count_429 = n,
-- windows = n } } }; the peaks are the most this org's clients used in any one window
-- (other apps left out), a bucket's count_429 its own refusals (limit or share),
-- windows how many of its windows began.
function Emulator:stats()
  return self:request("GET", "/__emulator/stats")
end

-- Last lines of the server's own log (one line per request when verbose).
function Emulator:server_log(n)
  return tail(self.log_file, n or 50)
end

M.repo_root, M.mktemp_dir = repo_root, mktemp_dir

return M
