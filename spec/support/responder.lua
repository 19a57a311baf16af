-- spec/support/responder.lua -- starts spec/support/responder.mjs (a raw, hostile HTTP server
-- that records every byte it receives) from busted specs, like spec/support/emulator.lua.
--
--   local responder = require "spec.support.responder"
--   local r = responder.start{tls = "server" | "wrong-host" | "unknown-ca" | nil, script = {...}}
--   r.url, r.port         where it listens (127.0.0.1, port 0)
--   r.ca_file             with tls: the test CA of test/emulator/make-tls.sh (the emulator's)
--   r:requests()          {n=, method=, target=, raw=} for every request received, in order
--   r:connections()       with tls: the number of TCP connections (handshakes tried)
--   r:stop()              stop it by PID and remove the folder (safe to call twice)
local cjson = require "cjson"
local M = {}
local R = {}
R.__index = R

local emulator = require "spec.support.emulator" -- starts, waits for and stops its server too
local read = require("spec.support.util").try_readfile
local q = emulator.shell_quote

function M.start(opts)
  opts = opts or {}
  local dir = emulator.mktemp_dir("oktadpop-responder")
  local self = setmetatable({dir = dir}, R)
  local args = {"node", emulator.repo_root() .. "/spec/support/responder.mjs", "--dir", dir}
  if opts.script then
    require("spec.support.util").write(dir .. "/script.json", cjson.encode(opts.script))
    args[#args + 1] = "--script"
    args[#args + 1] = dir .. "/script.json"
  end
  if opts.tls then
    local cert = emulator.tls().dir .. "/" .. opts.tls -- server, wrong-host or unknown-ca
    self.ca_file = emulator.tls().ca_file
    for _, a in ipairs({"--tls-cert", cert .. ".pem", "--tls-key", cert .. "-key.pem"}) do args[#args + 1] = a end
  end
  local err
  self.pid, err = emulator.spawn(args, dir .. "/server.log")
  if not self.pid then self:stop() error("responder: " .. err, 2) end
  local info, why = emulator.wait_ready(dir .. "/ready.json", self.pid, 10)
  if not info then
    local log = read(dir .. "/server.log") or ""
    self:stop()
    error("responder: " .. why .. ": " .. log, 2)
  end
  self.port, self.url = info.port, info.url
  return self
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
  if self.pid then emulator.stop_pid(self.pid) end
  if self.dir and self.dir:match("^/tmp/oktadpop%-responder") then os.execute("rm -rf " .. q(self.dir)) end
end

return M
