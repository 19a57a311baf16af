--- oktadpop.resty: the nginx driver. It supplies the client surface (oktadpop.client, the same
-- methods as oktadpop.new's) with a transport over cosockets (oktadpop.resty.http: every line,
-- header block, chunk and body bounded), ngx.sleep, light threads for batch, and a
-- lua_shared_dict as the store, so no worker ever blocks and nothing yields inside C. The
-- protocol core (oktadpop.core) decides every request, as under the libcurl driver.
-- @module oktadpop.resty
local oktadpop = require "oktadpop"
local client = require "oktadpop.client"
local http = require "oktadpop.resty.http"

local core = oktadpop.core
local ngx = ngx
local type, pairs, tostring = type, pairs, tostring

local _M = {_VERSION = oktadpop._VERSION}

-- Options of this driver, beside the core's (oktadpop.new's).
local DRIVER_OPTIONS = {"shared_dict", "transport", "store"}

--- resty.redis_store{url=, prefix=, timeout=, pool_size=, keepalive=} -> store | nil, err: a
-- store in Redis for store= (and the guard's replay_store=), shared by every node of a fleet
-- (oktadpop.resty.redis).
-- @function redis_store
function _M.redis_store(opts) return require("oktadpop.resty.redis").new(opts) end

local function sleep(seconds)
  ngx.sleep(seconds)
  ngx.update_time()
end

local function log_line(line, level) ngx.log(level == "warn" and ngx.WARN or ngx.INFO, "oktadpop: ", line) end

--- A client inside nginx: resty.new(config) -> client | nil, err. config is oktadpop.new's, plus
-- shared_dict (a lua_shared_dict name: the token, its lock, the concurrency and rate-limit
-- counts shared by all workers; else each worker keeps its own in memory), store (any store
-- with the shared dict's get/set/add/incr/delete, e.g. Redis) and transport
-- (function(request) -> {status=, headers=, body=} or {error=}; default: a bounded HTTP/1.1
-- client on ngx.socket.tcp). ca_file and proxy are refused: nginx.conf sets those.
-- @function new
function _M.new(config)
  if type(config) ~= "table" then return nil, core.error("config", "resty.new needs a config table") end
  for _, name in pairs{"ca_file", "proxy"} do
    if config[name] ~= nil then
      return nil, core.error("config", name .. " is not supported inside nginx: cosockets trust " ..
        "lua_ssl_trusted_certificate and connect directly (set those in nginx.conf)")
    end
  end
  local store = config.store
  if config.shared_dict ~= nil then
    store = ngx.shared[config.shared_dict]
    if not store then return nil, core.error("config", "no lua_shared_dict named " .. tostring(config.shared_dict)) end
    if config.dpop ~= false and config.dpop_key == nil then
      return nil, core.error("config", "shared_dict needs dpop_key: every worker must load the same DPoP key (a file path)")
    end
  end
  if config.transport ~= nil and type(config.transport) ~= "function" then
    return nil, core.error("config", "transport must be a function(request) -> response")
  end
  return client.make(config, DRIVER_OPTIONS, store, function(session)
    return {transport = config.transport or http.transport(session), sleep = sleep, now = ngx.now,
            spawn = ngx.thread.spawn, wait = ngx.thread.wait, log = log_line}
  end)
end

return _M
