--- oktadpop.curl: the plain driver, behind oktadpop.new and oktadpop.from_env. It supplies
-- the client surface (oktadpop.client) with a transport over libcurl's multi interface
-- (oktadpop.libcurl, in C: one connection pool per client, HTTP/2 streams), the in-process
-- store, the wall clock, sleeps, and concurrency for batch as coroutines: a transfer or a
-- sleep inside a batch yields to a scheduler that moves every transfer at once; outside a
-- batch, a call simply waits for its one transfer.
-- @module oktadpop.curl
local oktadpop = require "oktadpop"
local client = require "oktadpop.client"

local core, libcurl = oktadpop.core, oktadpop.libcurl
local type, pairs, error = type, pairs, error
local co_create, co_resume, co_yield, co_running, co_status =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status

local M = {}

-- Options of this driver, beside the core's (oktadpop.new's).
local DRIVER_OPTIONS = {"store"}

-- What a scheduled task yields: the transfer it waits for, or the time it sleeps until.
local WAIT = {}

-- The scheduler of one client: its tasks (coroutines) by coroutine, each waiting on a transfer
-- (task.xfer) or a wake-up time (task.wake), or ready to run.
local function scheduler(engine, clock)
  local tasks, by_xfer = {}, {}
  local s = {}

  local function resume(task, ...)
    local ok, err = co_resume(task.co, ...)
    if co_status(task.co) == "dead" then
      tasks[task.co], task.finished, task.ok, task.err = nil, true, ok, err
    elseif err ~= WAIT then -- a yield of a callback's own, not ours: the batch fails
      task.ok, task.err, task.finished = false, "a batch callback yielded", true
      tasks[task.co] = nil
      if task.xfer then engine:cancel(task.xfer); by_xfer[task.xfer] = nil end
    end
  end

  function s.current() return tasks[co_running() or false] end

  function s.transport(action)
    local task = s.current()
    if not task then return engine:perform(action) end
    local id, failure = engine:start(action)
    if not id then return failure end
    task.xfer, by_xfer[id] = id, task
    return co_yield(WAIT)
  end

  function s.sleep(seconds)
    local task = s.current()
    if not task then engine:poll(seconds) return end -- nothing else runs: a plain sleep
    task.wake = clock() + seconds
    co_yield(WAIT)
  end

  function s.spawn(fn)
    local task = {co = co_create(fn)}
    tasks[task.co] = task
    task.ready = true
    return task
  end

  -- Runs every ready task, then moves bytes until a transfer ends or a sleeper wakes.
  local function pump()
    local now, wait = clock(), 1
    for _, task in pairs(tasks) do
      if task.ready then
        task.ready = false
        resume(task)
      end
    end
    for _, task in pairs(tasks) do
      if task.wake then wait = math.min(wait, task.wake - now) end
      if task.ready then wait = 0 end
    end
    for _, id in ipairs({engine:poll(wait > 0 and wait or 0)}) do
      local task = by_xfer[id]
      by_xfer[id] = nil
      local response = engine:response(id)
      if task then task.xfer = nil; resume(task, response) end
    end
    now = clock()
    for _, task in pairs(tasks) do
      if task.wake and task.wake <= now then
        task.wake = nil
        resume(task)
      end
    end
  end

  function s.wait(task)
    while not task.finished do pump() end
    return task.ok, task.err
  end

  return s
end

local function log_line(line) io.stderr:write("oktadpop: ", line, "\n") end

--- oktadpop.new(config) -> client | nil, err: config is the core's (README: The client), plus
-- store (any object with a shared dict's get/set/add/incr/delete; default in-process).
-- @function new
function M.new(config)
  if type(config) ~= "table" then error("bad argument #1 to 'new' (table expected, got " .. type(config) .. ")", 2) end
  local store = config.store
  if store ~= nil and type(store) ~= "table" and type(store) ~= "userdata" then
    return nil, core.error("config", "store must be a table or object with get, set, add, incr and delete")
  end
  return client.make(config, DRIVER_OPTIONS, store, function(session)
    local engine = libcurl.engine{allow_http = session.allow_http, ca_file = session.ca_file, proxy = session.proxy,
                                  connect_timeout = session.connect_timeout, max_body = session.max_body}
    local s = scheduler(engine, libcurl.clock)
    return {transport = s.transport, sleep = s.sleep, now = libcurl.clock, spawn = s.spawn, wait = s.wait,
            log = log_line, close = function() engine:close() end}
  end)
end

--- oktadpop.from_env([dotenv_path [, config]]) -> client | nil, err: the .env file's and the
-- environment's settings (the environment wins), then config's own (debug=, timeout=, ...).
-- OKTA_REDIS_URL, unless config has a store, makes the store a redis_store on that URL: every
-- job host and nginx node on it shares one token and one budget (README, "Running a fleet").
-- @function from_env
function M.from_env(path, config)
  if path ~= nil and type(path) ~= "string" then error("bad argument #1 to 'from_env' (string expected)", 2) end
  if config ~= nil and type(config) ~= "table" then error("bad argument #2 to 'from_env' (table expected)", 2) end
  local settings, err = core.env_config(path)
  if not settings then return nil, err end
  local redis_url = settings.redis_url
  settings.redis_url = nil
  for k, v in pairs(config or {}) do settings[k] = v end
  if redis_url and settings.store == nil then
    settings.store, err = oktadpop.redis_store{url = redis_url}
    if not settings.store then return nil, core.error("config", "OKTA_REDIS_URL: " .. tostring(err.message or err)) end
  end
  return M.new(settings)
end

return M
