-- spec/support/redis.lua -- a private redis-server for specs (the fleet specs of issue 20).
--
--   local redis = require "spec.support.redis"
--   local r = redis.start{}            -- its own redis-server on a free 127.0.0.1 port
--   r.url                 "redis://127.0.0.1:PORT" (never with the password)
--   r.auth_url            with requirepass: "redis://:PASSWORD@127.0.0.1:PORT" (else r.url)
--   r.host, r.port, r.password, r.pid, r.dir (its own temp folder: redis.conf, redis.log)
--   r:cli("SET", "k", "v")   -> "OK"   one redis-cli command, each argument one word (the
--                         password goes in the environment, never on a command line); returns
--                         the raw reply with its last newline dropped ("" for a nil reply), or
--                         nil and the message for an error reply or when Redis is not there
--   r:running()           is the process there?
--   r:kill()              SIGKILL, for fault specs: connections drop at once, nothing is saved
--   r:restart()           stop (unless killed) and start again on the same port: every key is lost
--   r:pause(seconds [, "sleep"])   a slow Redis, for `seconds` (fractions allowed) from now:
--                         by default CLIENT PAUSE ... ALL (connections are accepted, every
--                         command waits; returns at once); "sleep": DEBUG SLEEP (the whole
--                         server hangs, accepts nothing; sent in the background, in effect when
--                         this returns)
--   r:stop()              TERM (KILL after 5 s), then its folder is removed; safe twice
--
-- Options of start{}: requirepass (a password clients must AUTH with), config (more redis.conf
-- directives, each value written as it is, e.g. {maxmemory = "1mb", ["maxmemory-policy"] =
-- "allkeys-lru"}), timeout (seconds
-- to wait for PING, default 10), server ("redis-server"), cli ("redis-cli").
--
-- No persistence (save "", appendonly no), bound to 127.0.0.1 only, DEBUG allowed from
-- loopback (for DEBUG SLEEP). A server left running stops when this Lua state closes, and
-- within about a second of this process going away (a watcher shell), as the emulator does.
--
-- Runs on Lua 5.1/LuaJIT and 5.4 with stock libraries; processes through the shell.

local emulator = require "spec.support.emulator"
local util = require "spec.support.util"

local quote, run, alive, sleep = emulator.shell_quote, emulator.run, emulator.alive, emulator.sleep

local M = {}
local R = {}
R.__index = R

-- A redis.conf string argument: double-quoted, with \ and " escaped (so spaces are fine).
local function conf_string(s)
  return '"' .. tostring(s):gsub('[\\"]', "\\%0") .. '"'
end

local function write_conf(self)
  local lines = {
    "port " .. self.port,
    "bind 127.0.0.1",
    "protected-mode yes",
    'save ""',
    "appendonly no",
    "daemonize no",
    "dir " .. conf_string(self.dir),
    "logfile " .. conf_string(self.dir .. "/redis.log"),
    "enable-debug-command local",
  }
  if self.password then lines[#lines + 1] = "requirepass " .. conf_string(self.password) end
  local extra = {}
  for k in pairs(self.config) do extra[#extra + 1] = k end
  table.sort(extra)
  for _, k in ipairs(extra) do lines[#lines + 1] = k .. " " .. tostring(self.config[k]) end
  util.write(self.dir .. "/redis.conf", table.concat(lines, "\n") .. "\n")
end

-- The redis-cli command line, with the password in REDISCLI_AUTH (not visible in ps).
local function cli_command(self, args)
  local parts = {}
  if self.password then parts[1] = "REDISCLI_AUTH=" .. quote(self.password) end
  parts[#parts + 1] = quote(self.cli_bin) .. " -e -h 127.0.0.1 -p " .. self.port
  for _, a in ipairs(args) do parts[#parts + 1] = quote(a) end
  return table.concat(parts, " ")
end

function R:cli(...)
  local out, rc = run(cli_command(self, {...}) .. " </dev/null")
  out = out:gsub("\n$", "")
  if rc ~= 0 then return nil, out end
  return out
end

function R:running()
  return self.pid ~= nil and alive(self.pid)
end

-- Starts redis-server on self.port and waits for PONG. Returns true, or nil and why not
-- ("port" when the port was taken).
local function launch(self)
  write_conf(self)
  local log = self.dir .. "/redis.log"
  local out, rc = run(quote(self.server) .. " " .. quote(self.dir .. "/redis.conf") ..
    " </dev/null >>" .. quote(self.dir .. "/stdout.log") .. " 2>&1 & echo $!")
  local pid = tonumber(out:match("(%d+)%s*$"))
  if rc ~= 0 or not pid then return nil, "could not spawn redis-server: " .. out end
  self.pid = pid
  util.write(self.dir .. "/server.pid", tostring(pid)) -- for the watcher
  local waited = 0
  while waited < self.timeout do
    if not alive(pid) then
      self.pid = nil
      os.remove(self.dir .. "/server.pid")
      local text = (util.try_readfile(log) or "") .. (util.try_readfile(self.dir .. "/stdout.log") or "")
      if text:find("Address already in use", 1, true) then return nil, "port" end
      return nil, "redis-server exited:\n" .. text
    end
    if self:cli("PING") == "PONG" then return true end
    sleep(0.05)
    waited = waited + 0.05
  end
  return nil, "no PONG after " .. self.timeout .. " s:\n" .. (util.try_readfile(log) or "")
end

-- A shell that kills the server and removes its folder once this process is gone (or a
-- zombie); it ends by itself once the folder is gone (r:stop()). It reads the pid from
-- server.pid at that time, so restarts need no new watcher, and checks it is a redis-server.
local function start_watcher(self)
  local me = emulator.own_pid()
  if not me then return end
  local script = ([[
me=%d; dir=%s
while [ -d "$dir" ]; do
  s=$(sed -n 's/^[0-9]* (.*) \(.\) .*/\1/p' /proc/$me/stat 2>/dev/null)
  if [ -z "$s" ] || [ "$s" = Z ]; then
    p=$(cat "$dir/server.pid" 2>/dev/null)
    [ -n "$p" ] && grep -q redis "/proc/$p/cmdline" 2>/dev/null && kill -KILL "$p"
    rm -rf "$dir"
    exit 0
  fi
  sleep 1
done]]):format(me, quote(self.dir))
  run("sh -c " .. quote(script) .. " </dev/null >/dev/null 2>&1 &")
end

function M.start(opts)
  opts = opts or {}
  local self = setmetatable({
    dir = emulator.mktemp_dir("oktadpop-redis"),
    host = "127.0.0.1",
    password = opts.requirepass,
    config = opts.config or {},
    timeout = opts.timeout or 10,
    server = opts.server or "redis-server",
    cli_bin = opts.cli or "redis-cli",
  }, R)
  self.guard = emulator.on_gc(function() pcall(self.stop, self) end)
  start_watcher(self)
  local ok, why
  for _ = 1, 5 do
    self.port = util.free_port()
    ok, why = launch(self)
    if ok or why ~= "port" then break end
  end
  if not ok then
    self:stop()
    error("redis: " .. (why == "port" and "no free port" or why), 2)
  end
  self.url = "redis://127.0.0.1:" .. self.port
  self.auth_url = self.password and ("redis://:%s@127.0.0.1:%d"):format(self.password, self.port) or self.url
  return self
end

-- Waits up to 5 s for pid to be gone; true when it is.
local function gone(pid)
  local waited = 0
  while alive(pid) and waited < 5 do
    sleep(0.02)
    waited = waited + 0.02
  end
  return not alive(pid)
end

function R:kill()
  if self.stopped then error("redis: already stopped", 2) end
  if not self.pid then return end
  run("kill -KILL " .. self.pid)
  assert(gone(self.pid), "redis: still there after SIGKILL")
  self.pid = nil
  os.remove(self.dir .. "/server.pid")
end

function R:restart()
  if self.stopped then error("redis: already stopped", 2) end
  if self.pid then
    emulator.stop_pid(self.pid)
    self.pid = nil
    os.remove(self.dir .. "/server.pid")
  end
  local ok, why = launch(self)
  if not ok then error("redis: restart on port " .. self.port .. " failed: " .. why, 2) end
  return self
end

function R:pause(seconds, mode)
  assert(type(seconds) == "number" and seconds > 0, "redis: pause needs seconds > 0")
  if mode == "sleep" then
    run(cli_command(self, {"DEBUG", "SLEEP", ("%.3f"):format(seconds)}) .. " </dev/null >/dev/null 2>&1 &")
    sleep(0.1) -- the command is on its way; the server hangs from when it reads it
    return true
  end
  assert(mode == nil or mode == "client", "redis: pause mode is \"client\" or \"sleep\"")
  local out, err = self:cli("CLIENT", "PAUSE", tostring(math.floor(seconds * 1000 + 0.5)), "ALL")
  if out ~= "OK" then error("redis: CLIENT PAUSE failed: " .. tostring(err or out), 2) end
  return true
end

function R:stop()
  if self.stopped then return end
  self.stopped = true
  if self.pid then emulator.stop_pid(self.pid) end
  self.pid = nil
  if self.dir then os.execute("rm -rf " .. quote(self.dir)) end
end

-- The last lines of the server's own log.
function R:server_log()
  return util.try_readfile(self.dir .. "/redis.log") or ""
end

return M
