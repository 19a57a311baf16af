-- spec/support/nginx.lua -- runs Debian's nginx with the Lua module (LuaJIT) for specs.
--
--   local nginx = require "spec.support.nginx"
--   local n = nginx.start{dir = DIR, workers = 1, http = "lua_shared_dict d 1m;", server = "location ..."}
--   n.url, n.port, n.pid, n:error_log(), n:stop()
--   nginx.start{dir = DIR, conf = "<a whole nginx.conf>"}   -- a config file used as it is
--
-- The generated config loads the module, points lua_package_path at the repository (and at
-- DIR, and Debian's /usr/share/lua/5.1, where lua-nginx-redis puts `nginx.redis`) and
-- lua_package_cpath at build/5.1, keeps every temp path in DIR, and listens on a free port on
-- 127.0.0.1 with reuseport, so the kernel spreads connections over the workers.
--
-- Several instances run at once, each with its own DIR (its prefix: pid file, logs, temp
-- paths) and its own port: a fleet of nodes sharing one Redis is two start{} calls with two
-- folders. The port is one no socket on the machine holds (util.free_port): with reuseport a
-- second nginx on a port already served would start too, and the kernel would split the
-- connections between them. main = "env REDIS_URL;" adds main-context directives.
local util = require "spec.support.util"

local M = {}
local N = {}
N.__index = N

M.ROOT = assert(io.popen("pwd")):read("*l")

local TEMPLATE = [[
user root root;  # the test keys are 0600 in a 0700 temp folder
worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log %s;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
%s
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %s/tmp; proxy_temp_path %s/tmp; fastcgi_temp_path %s/tmp;
  uwsgi_temp_path %s/tmp; scgi_temp_path %s/tmp;
  lua_package_path "%s/?.lua;%s/lua/?.lua;/usr/share/lua/5.1/?.lua;;";
  lua_package_cpath "%s/build/5.1/?.so;;";
  %s
  server {
    listen 127.0.0.1:%d reuseport;
    %s
  }
}
]]

local function wait_for(path, tries)
  for _ = 1, tries do
    local f = io.open(path)
    if f then return f end
    os.execute("sleep 0.1")
  end
end

-- Starts nginx; opts: dir, workers (1), main (main-context directives, e.g. env lines), http,
-- server, log_level ("warn"), conf (a whole config), conf_path (where to write it, default
-- dir/nginx.conf), port (default: a free one). "%PORT%" anywhere in them becomes the port.
function M.start(opts)
  local dir = opts.dir
  os.execute("mkdir -p " .. dir .. "/tmp")
  for _ = 1, 5 do
    local port = opts.port or util.free_port()
    local conf
    if opts.conf then
      conf = opts.conf:gsub("%%PORT%%", tostring(port))
    else
      conf = TEMPLATE:format(opts.workers or 1, dir, dir, opts.log_level or "warn", opts.main or "",
        dir, dir, dir, dir, dir, dir, M.ROOT, M.ROOT, opts.http or "", port, opts.server or "")
        :gsub("%%PORT%%", tostring(port))
    end
    local path = opts.conf_path or (dir .. "/nginx.conf")
    util.write(path, conf)
    os.remove(dir .. "/nginx.pid")
    os.execute("nginx -p " .. (opts.prefix or dir) .. " -c " .. path .. " -e " .. dir .. "/error.log 2>>" .. dir .. "/start.log")
    local pidf = wait_for(dir .. "/nginx.pid", 50)
    if pidf then
      local pid = pidf:read("*l")
      pidf:close()
      return setmetatable({url = "http://127.0.0.1:" .. port, port = port, pid = pid, dir = dir}, N)
    end
  end
  error("nginx did not start: " .. util.sh("cat " .. dir .. "/start.log " .. dir .. "/error.log 2>/dev/null"))
end

function N:error_log()
  return util.try_readfile(self.dir .. "/error.log") or ""
end

function N:stop()
  if self.stopped then return end
  self.stopped = true
  os.execute("kill -QUIT " .. self.pid .. " 2>/dev/null")
  for _ = 1, 50 do
    local alive = io.open("/proc/" .. self.pid .. "/status")
    if not alive then break end
    alive:close() -- an open handle is inherited by every program a spec runs later (wrk runs out of slots)
    os.execute("sleep 0.1")
  end
end

-- An org behind a gateway that strips the rate-limit headers: a token endpoint (any client, any
-- proof) and /api/v1/users/{id} answering after `latency` seconds, on two workers. For the
-- pacing spec and bench/pacing.lua: the emulator's own work per request would be measured too.
function M.headerless_org(dir, latency)
  return M.start{dir = dir, workers = 2, server = ([[
    location = /oauth2/v1/token { content_by_lua_block {
      ngx.header["Content-Type"] = "application/json"
      ngx.say('{"token_type":"DPoP","access_token":"AT","expires_in":3600,"scope":"okta.users.read"}')
    } }
    location /api/v1/users/ { content_by_lua_block {
      ngx.sleep(%s)
      ngx.header["Content-Type"] = "application/json"
      ngx.say('{"id":"00u1","status":"ACTIVE"}')
    } }
  ]]):format(latency)}
end

return M
