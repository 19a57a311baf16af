--- oktadpop.resty: the nginx driver. The same protocol core as the libcurl driver decides every
-- request (oktadpop.core: the token exchange, nonces, retries, rate-limit pacing, pages); this
-- file only moves bytes over cosockets, answers store actions from a lua_shared_dict, and
-- waits with ngx.sleep, so no worker ever blocks and nothing yields inside C. A client has the
-- surface of oktadpop.new's: token, request, get, post, put, patch, delete, paginate, poll,
-- batch (on light threads), close, and the admin helpers (client.users, ...).
-- @module oktadpop.resty
local oktadpop = require "oktadpop"
local http = require "oktadpop.resty.http"

local core = oktadpop.core
local ngx = ngx
local type, pairs, pcall, error, setmetatable = type, pairs, pcall, error, setmetatable

local _M = {_VERSION = oktadpop._VERSION}

-- Options of this driver, beside the core's (oktadpop.new's).
local DRIVER_OPTIONS = {"shared_dict", "transport", "store", "on_wait"}

-- One store action on a shared dict (or any store with its five calls: get, set, add,
-- incr(key, by, init, init_ttl), delete; oktadpop.core.memory_store() has them too).
local function store_call(store, a)
  local op = a.op
  if op == "incr" then return (store:incr(a.key, a.value, 0, a.ttl)) end
  if op == "get" then return (store:get(a.key)) end
  return (store[op](store, a.key, a.value, a.ttl))
end

local Client = {}
Client.__index = Client

local function log_lines(self, lines)
  if not lines or not self.debug then return end
  for i = 1, #lines do
    if type(self.debug) == "function" then pcall(self.debug, lines[i]) else ngx.log(ngx.INFO, "oktadpop: ", lines[i]) end
  end
end

local function loop(self, op)
  local step, now, transport, store = op.step, ngx.now, self.transport, self.store
  local action = step(op, nil, now())
  while true do
    log_lines(self, action.log)
    local kind = action.action
    if kind == "send" then
      action = step(op, transport(action), now())
    elseif kind == "store" then
      action = step(op, store_call(store, action), now())
    elseif kind == "sleep" then
      if self.on_wait then pcall(self.on_wait, action.wait) end -- progress only: its errors are dropped
      ngx.sleep(action.seconds)
      ngx.update_time()
      action = step(op, nil, now())
    else
      return action -- items, done or fail
    end
  end
end

-- Runs an operation to its next items, done or fail action. If anything raises on the way,
-- what the operation holds (a concurrency slot, the token lock) is given back first.
function Client:_run(op)
  if self.closed then return {action = "fail", error = core.error("config", "the client is closed")} end
  local ok, action = pcall(loop, self, op)
  if ok then return action end
  for _, a in pairs(op:abort()) do pcall(store_call, self.store, a) end
  error(action, 0)
end

local function op_or_error(op, err)
  if not op then return nil, err end
  return op
end

function Client:token(force)
  local op, err = op_or_error(self.session:token_operation(force))
  if not op then return nil, err end
  local done = self:_run(op)
  if done.action == "fail" then return nil, done.error end
  return done.token, done.info
end

function Client:request(method, path, opts)
  local op, err = op_or_error(self.session:operation(method, path, opts))
  if not op then return nil, err end
  local done = self:_run(op)
  if done.action == "fail" then return nil, done.error end
  return done.response
end

-- The answer for a response is the libcurl driver's, from the same core function.
local function call(self, method, path, opts)
  local res, err = self:request(method, path, opts)
  if not res then return nil, err end
  return core.result(res)
end

function Client:get(path, query) return call(self, "GET", path, {query = query}) end
function Client:delete(path, query) return call(self, "DELETE", path, {query = query}) end
function Client:post(path, body, query) return call(self, "POST", path, {body = body, query = query}) end
function Client:put(path, body, query) return call(self, "PUT", path, {body = body, query = query}) end
function Client:patch(path, body, query) return call(self, "PATCH", path, {body = body, query = query}) end

-- An iterator over the items of a pages or poll operation; raises the error (err.next says
-- where to resume).
local function items_of(self, op, err)
  if not op then error(err, 3) end
  local page, i = nil, 0
  return function()
    while true do
      if page and i < #page then
        i = i + 1
        return page[i]
      end
      if not op then return nil end
      page = nil
      local action = self:_run(op)
      if action.action ~= "items" then
        op = nil
        if action.action == "fail" then error(action.error, 2) end
        return nil
      end
      page, i = action.items, 0
    end
  end
end

function Client:paginate(path, query, opts) return items_of(self, self.session:pages(path, query, opts)) end
function Client:poll(path, opts) return items_of(self, self.session:poll(path, opts)) end

-- batch(requests [, {concurrency=, request=fn, on_result=fn}]) -> results, failed: as the
-- libcurl driver's, with light threads (each runs requests through the same core).
function Client:batch(requests, opts)
  opts = opts or {}
  local conc = opts.concurrency or self.session.max_concurrency
  if type(conc) ~= "number" or conc < 1 or conc > self.session.max_concurrency then
    return nil, core.error("config", "concurrency must be a number from 1 to max_concurrency")
  end
  local results, failed, index, list = {}, {}, 0, type(requests) == "table"
  local function next_input()
    local input
    if list then input = requests[index + 1] else input = requests() end
    if input ~= nil then index = index + 1 end
    return input, index
  end
  local function record(result)
    if not result.ok then failed[#failed + 1] = result end
    if opts.on_result then opts.on_result(result) else results[result.index] = result end
  end
  local function worker()
    while true do
      local input, i = next_input()
      if input == nil then return end
      local spec = opts.request and opts.request(input) or input
      if type(spec) == "string" then spec = {path = spec} end
      local result = {index = i, input = input, request = spec}
      local body, err, res
      if type(spec) ~= "table" or type(spec.path) ~= "string" then
        err = core.error("config", "a batch request needs path (a string) and method (a string, default GET)")
      else
        body, err, res = self:request(spec.method or "GET", spec.path, {query = spec.query, body = spec.body, headers = spec.headers})
        if body then body, err, res = core.result(body) end
      end
      result.ok = body ~= nil
      if body ~= nil then result.body, result.res = body, err else result.error, result.res = err, res end
      record(result)
    end
  end
  local threads = {}
  for t = 1, conc do threads[t] = ngx.thread.spawn(worker) end
  for t = 1, #threads do
    local ok, err = ngx.thread.wait(threads[t])
    if not ok then error(err, 0) end
  end
  return results, failed
end

function Client:close()
  self.closed = true
  self.session:close()
end

function Client:__tostring()
  return "oktadpop.resty " .. tostring(self.session)
end

local NAMESPACES = {users = true, groups = true, apps = true, factors = true, logs = true}

function Client:__index(k)
  local m = Client[k]
  if m ~= nil then return m end
  if NAMESPACES[k] then -- oktadpop.admin's helpers, bound to this client
    local ns = require("oktadpop.admin").namespace(self, k)
    rawset(self, k, ns)
    return ns
  end
  local v = self.session[k] -- org_url, client_id, scopes, stats, ...
  if type(v) ~= "function" then return v end
end

--- A client inside nginx: resty.new(config) -> client | nil, err. config is oktadpop.new's, plus
-- shared_dict (a lua_shared_dict name: the token, its lock, the concurrency and rate-limit
-- counts shared by all workers; else each worker keeps its own in memory), store (any store
-- with the shared dict's get/set/add/incr/delete, e.g. Redis) and transport
-- (function(request) -> {status=, headers=, body=} or {error=}; default: a bounded HTTP/1.1
-- client on ngx.socket.tcp) and on_wait (function(wait), called before each ngx.sleep with what
-- it waits for). ca_file and proxy are refused: nginx.conf sets those.
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
  if config.on_wait ~= nil and type(config.on_wait) ~= "function" then
    return nil, core.error("config", "on_wait must be a function(wait)")
  end
  local session, warnings = core.session(config, DRIVER_OPTIONS)
  if not session then return nil, warnings end
  local self = setmetatable({
    session = session,
    store = store or core.memory_store(),
    transport = config.transport or http.transport(session),
    debug = config.debug or session.debug,
    on_wait = config.on_wait,
  }, Client)
  log_lines(self, warnings)
  return self
end

return _M
