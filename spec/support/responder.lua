-- spec/support/responder.lua -- starts spec/support/responder.mjs (a raw, hostile HTTP server
-- that records every byte it receives) from busted specs, like spec/support/emulator.lua.
--
--   local responder = require "spec.support.responder"
--   local r = responder.start{tls = "server" | "wrong-host" | "unknown-ca" | nil}
--   r.url, r.port         where it listens (127.0.0.1, port 0)
--   r.ca_file             with tls: the test CA of test/emulator/make-tls.sh
--   r:requests()          {n=, method=, target=, raw=} for every request received, in order
--   r:connections()       with tls: the number of TCP connections (handshakes tried)
--   r:stop()              kill by PID and remove the folder (safe to call twice)
local cjson = require "cjson"
local M = {}
local R = {}
R.__index = R

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function run(cmd)
  local p = assert(io.popen("( " .. cmd .. " ) 2>&1"))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end
local read = require("spec.support.util").try_readfile
local function root()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/spec/support/[^/]*$")
  if not dir or dir == "" then dir = "." end
  return dir
end

local tls_dir -- one set of certificates per process
local function certs()
  if not tls_dir then
    tls_dir = run("mktemp -d /tmp/oktadpop-responder-tls.XXXXXX")
    run("sh " .. q(root() .. "/test/emulator/make-tls.sh") .. " " .. q(tls_dir))
    assert(read(tls_dir .. "/ca.pem"), "responder: make-tls.sh failed")
  end
  return tls_dir
end

function M.start(opts)
  opts = opts or {}
  local self = setmetatable({dir = run("mktemp -d /tmp/oktadpop-responder.XXXXXX")}, R)
  local args = {"node", q(root() .. "/spec/support/responder.mjs"), "--dir", q(self.dir),
                "--watch-pid", run("echo $PPID")}
  if opts.tls then
    local d = certs()
    self.ca_file = d .. "/ca.pem"
    local name = opts.tls == "server" and "server" or opts.tls
    args[#args + 1] = "--tls-cert " .. q(d .. "/" .. name .. ".pem") .. " --tls-key " .. q(d .. "/" .. name .. "-key.pem")
  end
  self.pid = tonumber(run(table.concat(args, " ") .. " </dev/null >" .. q(self.dir .. "/server.log") .. " 2>&1 & echo $!"))
  assert(self.pid, "responder: could not start node")
  for _ = 1, 200 do
    local s = read(self.dir .. "/ready.json")
    if s and s ~= "" then
      local info = cjson.decode(s)
      self.port, self.url = info.port, info.url
      return self
    end
    os.execute("sleep 0.05")
  end
  local log = read(self.dir .. "/server.log") or ""
  self:stop()
  error("responder: not ready after 10 s: " .. log, 2)
end

local function entries(self)
  local out = {}
  for line in (read(self.dir .. "/log.jsonl") or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

function R:requests()
  local out = {}
  for _, e in ipairs(entries(self)) do
    if e.n then
      e.n = math.floor(e.n)
      e.raw = read(self.dir .. "/req-" .. string.format("%d", e.n) .. ".raw")
      out[#out + 1] = e
    end
  end
  return out
end

-- With TLS: how many TCP connections were made (a handshake was tried on each).
function R:connections()
  local n = 0
  for _, e in ipairs(entries(self)) do if e.tcp then n = n + 1 end end
  return n
end

function R:stop()
  if self.stopped then return end
  self.stopped = true
  if self.pid then -- by PID only: TERM, then KILL if it is still there after 2 s
    local function alive()
      local stat = read("/proc/" .. self.pid .. "/stat")
      return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
    end
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    for _ = 1, 40 do
      if not alive() then break end
      os.execute("sleep 0.05")
    end
    if alive() then os.execute("kill -9 " .. self.pid .. " 2>/dev/null") end
  end
  if self.dir and self.dir:match("^/tmp/oktadpop%-responder") then os.execute("rm -rf " .. q(self.dir)) end
end

function M.cleanup()
  if tls_dir and tls_dir:match("^/tmp/oktadpop%-responder%-tls") then os.execute("rm -rf " .. q(tls_dir)) end
  tls_dir = nil
end

return M
