--- oktadpop.client: the client surface, written once for every driver. The methods scripts and
-- nginx configs call (token, request, get, post, put, patch, delete, paginate, poll, batch,
-- close, and the admin helpers client.users, .groups, .apps, .factors, .logs) run the protocol
-- core's operations (oktadpop.core: every rule of tokens, nonces, retries, pacing and pages
-- lives there) over what a driver supplies:
--   transport(send_action) -> response   {status=, headers=, body=} or {error=}; may yield
--   sleep(seconds), now() -> epoch seconds
--   spawn(fn) -> thread, wait(thread) -> ok, err   concurrency for batch
--   log(line [, "warn"])                            where debug lines go when debug = true, and
--                                                   the few warnings that go out without it
--   close()                                         frees the transport (optional)
-- and a store with the five calls of an nginx shared dict. oktadpop.new (lua/oktadpop/curl.lua,
-- libcurl) and oktadpop.resty.new (cosockets) both answer objects of this one class.
-- @module oktadpop.client
local oktadpop = require "oktadpop"

local core = oktadpop.core
local type, pairs, pcall, error, setmetatable, tostring = type, pairs, pcall, error, setmetatable, tostring
local co_create, co_resume = coroutine.create, coroutine.resume

local M = {}

local Client = {}

local NAMESPACES = {users = true, groups = true, apps = true, factors = true, logs = true}

-- A debug callback runs in a coroutine of its own: it may fail or yield, and neither reaches
-- the call it describes.
local function log_lines(self, lines)
  local debug = self.debug
  if not lines or not debug then return end
  for i = 1, #lines do
    if type(debug) == "function" then co_resume(co_create(debug), lines[i]) else self.driver.log(lines[i]) end
  end
end

-- One store action (the core's get/set/add/incr/delete) on any store with a shared dict's
-- calls: the answer, or nil and the store's error when it failed (add's false, "exists" and a
-- get of nothing are answers).
local function store_call(store, a)
  local op = a.op
  local v, err
  if op == "incr" then v, err = store:incr(a.key, a.value, 0, a.ttl)
  elseif op == "get" then v, err = store:get(a.key)
  else v, err = store[op](store, a.key, a.value, a.ttl) end
  if op == "add" and v == false and err == "exists" then return false end
  local failed = (op == "set" or op == "add") and not v or v == nil and err ~= nil and type(err) ~= "number"
  if failed then return nil, err or "no answer" end
  if op == "get" or op == "incr" then return v end
  return true
end

-- Why a store call under pcall failed: the message of the error it answered, or what it raised.
local function store_failure(ok, v, err) return tostring(ok and (type(err) == "table" and err.message or err) or v) end

local STORE_RETRY = 5        -- seconds between tries of a shared store that failed
local STORE_LOG_EVERY = 60   -- at most one log line a minute about it

-- A store action on the client's store. A shared store that fails (an error answered or
-- raised) sends the client to its own in-process store at a reduced share (a quarter of
-- max_capacity and max_concurrency: it cannot see what other hosts send) until the shared one
-- answers again, tried every STORE_RETRY seconds; with store_fallback = false the call ends
-- with an error of kind "store" instead.
local function store_action(self, a)
  local ok, v, err
  if not self.backup then -- the store is the client's own (or fallback is off): nothing to fall back to
    ok, v, err = pcall(store_call, self.store, a)
    if ok and not (v == nil and err ~= nil) then return v end
    error(core.error("store", "the store failed: " .. store_failure(ok, v, err)), 0)
  end
  local now = self.driver.now()
  if self.degraded_until and now < self.degraded_until then return (store_call(self.backup, a)) end
  ok, v, err = pcall(store_call, self.store, a)
  if ok and not (v == nil and err ~= nil) then
    if self.degraded_until then
      self.degraded_until = nil
      self.session:degrade(false)
      log_lines(self, {"store: the shared store answers again: back on it, at the full share"})
    end
    return v
  end
  local why = store_failure(ok, v, err)
  if not self.degraded_until then
    self.store_fallbacks = self.store_fallbacks + 1
    self.session:degrade(true)
  end
  self.degraded_until = now + STORE_RETRY
  if now >= (self.store_logged_at or -math.huge) + STORE_LOG_EVERY then
    self.store_logged_at = now
    local line = "store: the shared store failed (" .. why .. "): on the in-process store at a quarter of the share"
    if self.debug then log_lines(self, {line}) else self.driver.log(line, "warn") end
  end
  return (store_call(self.backup, a))
end

local function closed_error() return core.error("config", "the client is closed") end

-- Raised inside run when the batch an operation runs for has failed: it gives up at its next
-- wait instead of waiting out pacing that no longer matters.
local CANCELLED = setmetatable({}, {__tostring = function() return "cancelled" end})

local function run(self, op, batch)
  local driver = self.driver
  local step, now, transport, sleep = op.step, driver.now, driver.transport, driver.sleep
  local action = step(op, nil, now())
  while true do
    if action.log then log_lines(self, action.log) end
    local kind = action.action
    if kind == "send" then
      action = step(op, transport(action), now())
    elseif kind == "store" then
      action = step(op, store_action(self, action), now())
    elseif kind == "sleep" then
      if batch and batch.failure then error(CANCELLED, 0) end
      if self.on_wait then co_resume(co_create(self.on_wait), action.wait) end -- progress: it may fail or yield
      sleep(action.seconds)
      action = step(op, nil, now())
    else
      return action -- items, done or fail
    end
  end
end

-- Runs an operation to its next items, done or fail action. If anything raises on the way,
-- what the operation holds (a concurrency slot, the token lock) is given back first.
local function drive(self, op, batch)
  if self.closed then return {action = "fail", error = closed_error()} end
  local ok, action = pcall(run, self, op, batch)
  if ok then return action end
  for _, a in pairs(op:abort()) do pcall(store_action, self, a) end
  if action == CANCELLED then return {action = "fail", error = core.error("config", "cancelled: the batch failed")} end
  if type(action) == "table" and action.kind == "store" then return {action = "fail", error = action} end
  error(action, 0)
end

--- client:token([force]) -> token, info | nil, err. info = {token_type, expires_at, expires_in,
-- scope, missing_scopes}.
-- @function client:token
function Client:token(force)
  if self.closed then return nil, closed_error() end
  local op, err = self.session:token_operation(force)
  if not op then return nil, err end
  local done = drive(self, op)
  if done.action == "fail" then return nil, done.error end
  return done.token, done.info
end

-- A request; `batch` (internal) is the batch it runs for, whose failure cancels its waits.
local function request(self, method, path, opts, batch)
  if self.closed then return nil, closed_error() end
  local op, err = self.session:operation(method, path, opts)
  if not op then return nil, err end
  local done = drive(self, op, batch)
  if done.action == "fail" then return nil, done.error end
  return done.response
end

--- client:request(method, path [, {query=, body=, headers=}]) -> res | nil, err; res.error says
-- what a non-2xx answer meant.
-- @function client:request
function Client:request(method, path, opts) return request(self, method, path, opts) end

local function call(self, method, path, opts)
  local res, err = request(self, method, path, opts)
  if not res then return nil, err end
  return core.result(res)
end

--- client:get(path [, query]) -> body, res | nil, err, res (body is true for an empty 2xx).
-- @function client:get
function Client:get(path, query) return call(self, "GET", path, {query = query}) end
--- client:delete(path [, query]) -> body, res | nil, err, res.
-- @function client:delete
function Client:delete(path, query) return call(self, "DELETE", path, {query = query}) end
--- client:post(path, body [, query]) -> body, res | nil, err, res; a table body is JSON.
-- @function client:post
function Client:post(path, body, query) return call(self, "POST", path, {body = body, query = query}) end
--- client:put(path, body [, query]) -> body, res | nil, err, res.
-- @function client:put
function Client:put(path, body, query) return call(self, "PUT", path, {body = body, query = query}) end
--- client:patch(path, body [, query]) -> body, res | nil, err, res.
-- @function client:patch
function Client:patch(path, body, query) return call(self, "PATCH", path, {body = body, query = query}) end

-- An iterator over the items of a pages or poll operation, one page held at a time; raises
-- the error, whose err.next says where to resume.
local function items_of(self, op, err)
  if self.closed then error(closed_error(), 3) end
  if not op then error(err, 3) end
  local page, i = nil, 0
  return function()
    while true do
      if page and i < #page then
        i = i + 1
        return page[i]
      end
      if not op then return nil end
      page = nil -- the page is done with: memory stays flat
      local action = drive(self, op)
      if action.action ~= "items" then
        op = nil -- ended: later calls answer nothing
        if action.action == "fail" then error(action.error, 2) end
        return nil
      end
      page, i = action.items, 0
    end
  end
end

--- for item in client:paginate(path [, query [, {from=, max_pages=}]]) do ... end
-- @function client:paginate
function Client:paginate(path, query, opts)
  if self.closed then error(closed_error(), 2) end
  return items_of(self, self.session:pages(path, query, opts))
end

--- for event in client:poll(path [, {since=, interval=, max_items=, max_pages=, duration=, from=,
-- <query>...}]) do ... end
-- @function client:poll
function Client:poll(path, opts)
  if self.closed then error(closed_error(), 2) end
  return items_of(self, self.session:poll(path, opts))
end

-- The inputs of a batch, one at a time: a list's elements, or an iterator's values.
local function inputs_of(requests)
  local index, list = 0, type(requests) == "table"
  return function()
    local input
    if list then input = requests[index + 1] else input = requests() end
    if input == nil then return nil end
    index = index + 1
    return input, index
  end
end

-- Runs one input of a batch: opts.request(input) (or the input; a string is a path to GET)
-- through the core; answers its result, or nothing when the batch failed meanwhile.
local function batch_one(self, opts, batch, input, index)
  local spec = opts.request and opts.request(input) or input
  if type(spec) == "string" then spec = {path = spec} end
  local result = {index = index, input = input, request = spec}
  local body, err, res
  if type(spec) ~= "table" or type(spec.path) ~= "string" or (spec.method ~= nil and type(spec.method) ~= "string") then
    err = core.error("config", "a batch request needs path (a string) and method (a string, default GET)")
  else
    body, err = request(self, spec.method or "GET", spec.path, {query = spec.query, body = spec.body, headers = spec.headers},
                        batch)
    if body then body, err, res = core.result(body) end
  end
  if batch.failure then return nil end
  result.ok = body ~= nil
  if body ~= nil then result.body, result.res = body, err else result.error, result.res = err, res end
  return result
end

--- client:batch(requests [, {concurrency=, request=fn(input), on_result=fn(result)}]) ->
-- results, failed; with on_result, the counts of successes and failures (nothing is kept:
-- memory stays flat). requests: a list, or an iterator function; each input is a request
-- {method=, path=, query=, body=, headers=} (or a path to GET), or what opts.request makes of
-- it. At most `concurrency` (default max_concurrency) run at once, each through the core like a
-- single call. results[i] = {index=, input=, request=, ok=, body=, res=, error=}; failed lists
-- the failures in the order they completed. A callback (request, on_result, the iterator)
-- that raises ends the batch with its error once the requests in flight have finished (those
-- waiting for pacing give up), every slot and lock given back.
-- @function client:batch
function Client:batch(requests, opts)
  if type(requests) ~= "table" and type(requests) ~= "function" then
    error("bad argument #1 to 'batch' (a list of requests or an iterator function expected)", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #2 to 'batch' (table expected)", 2) end
  opts = opts or {}
  if self.closed then return nil, closed_error() end
  local max = self.session.max_concurrency
  local conc = opts.concurrency or max
  if type(conc) ~= "number" or conc ~= conc or conc < 1 or conc > max then
    return nil, core.error("config", ("concurrency must be a number from 1 to %d (max_concurrency)"):format(max))
  end
  local results, failed, counts, batch = {}, {}, {ok = 0, failed = 0}, {}
  local next_input, on_result = inputs_of(requests), opts.on_result
  local function record(result)
    if on_result then
      local outcome = result.ok and "ok" or "failed"
      counts[outcome] = counts[outcome] + 1
      on_result(result)
    else
      results[result.index] = result
      if not result.ok then failed[#failed + 1] = result end
    end
  end
  -- One worker reads the inputs at a time: an iterator may itself do I/O (a page of
  -- users:list), and a second worker must not step its operation meanwhile.
  local function take_input()
    while batch.reading do self.driver.sleep(0.002) end
    if batch.exhausted then return nil end
    batch.reading = true
    local ok, input, index = pcall(next_input)
    batch.reading = false
    if not ok then error(input, 0) end
    batch.exhausted = input == nil -- an iterator is never called past its end
    return input, index
  end
  local function worker()
    while not batch.failure do
      local ok, err = pcall(function()
        local input, index = take_input()
        if input == nil or batch.failure then return true end
        local result = batch_one(self, opts, batch, input, index)
        if result then record(result) end
      end)
      if not ok then batch.failure = batch.failure or {err} return end
      if err == true then return end
    end
  end
  local threads = {}
  for t = 1, conc do threads[t] = self.driver.spawn(worker) end
  for t = 1, #threads do
    local ok, err = self.driver.wait(threads[t])
    if not ok then batch.failure = batch.failure or {err} end
  end
  if batch.failure then error(batch.failure[1], 0) end
  if on_result then return counts.ok, counts.failed end
  return results, failed
end

--- client:close(): frees the connections and wipes the token; safe to call twice.
-- @function client:close
function Client:close()
  if self.closed then return end
  self.closed = true
  self.session:close()
  if self.driver.close then self.driver.close() end
end

-- Org, client_id, scopes, DPoP key and token expiry; never a secret.
function Client:__tostring() return tostring(self.session) end

-- Methods first, then the admin helpers (made on first use and kept), then the session's
-- fields (org_url, client_id, scopes, stats, max_concurrency, dpop_key, ...).
function Client:__index(k)
  local m = Client[k]
  if m ~= nil then return m end
  if NAMESPACES[k] then
    local ns = require("oktadpop.admin").namespace(self, k)
    rawset(self, k, ns)
    return ns
  end
  local v = self.session[k]
  if k == "stats" then -- the session's counts, and the store's
    v.store_fallbacks, v.store = self.store_fallbacks, self.degraded_until and "fallback" or "shared"
  end
  if type(v) ~= "function" then return v end
end

Client.__close = Client.close -- local okta <close> = oktadpop.new{...} (Lua 5.4)

--- client.make(config, driver_options, store, make_driver) -> client | nil, err: for drivers.
-- The session is made from config (its own options, listed in driver_options, left out); the
-- store is any object with a shared dict's five calls (default: in-process); make_driver(session)
-- answers the driver table described above. The session's warnings go to the debug log.
function M.make(config, driver_options, store, make_driver)
  if config.store_fallback ~= nil and type(config.store_fallback) ~= "boolean" then
    return nil, core.error("config", "store_fallback must be a boolean")
  end
  if config.on_wait ~= nil and type(config.on_wait) ~= "function" then
    return nil, core.error("config", "on_wait must be a function(wait)")
  end
  local options = {"store_fallback", "on_wait"}
  for i = 1, #driver_options do options[#options + 1] = driver_options[i] end
  local session, warnings = core.session(config, options)
  if not session then return nil, warnings end
  local debug = config.debug
  if type(debug) ~= "function" then debug = session.debug end
  local self = setmetatable({session = session, store = store or core.memory_store(), driver = make_driver(session),
                             debug = debug, on_wait = config.on_wait, store_fallbacks = 0}, Client)
  if store and config.store_fallback ~= false then self.backup = core.memory_store() end
  log_lines(self, warnings)
  return self
end

M.Client = Client

return M
