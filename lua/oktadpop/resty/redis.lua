--- oktadpop.resty.redis: the nginx driver's Redis store, over lua-resty-redis (Debian's
-- lua-nginx-redis, required as "nginx.redis"; "resty.redis" elsewhere) on cosockets: a worker
-- never blocks, connections go back to a keepalive pool, and an error closes the connection
-- instead. The five calls of a shared dict, each atomic on the server, and the guard's replay
-- record, with the URL, the keys (a hash tag per client) and the scripts of the libcurl
-- driver's store (oktadpop.core.redis_*, one rule for both). rediss:// connects with TLS,
-- verified against lua_ssl_trusted_certificate. The password is kept for AUTH, shown nowhere.
-- @module oktadpop.resty.redis
local oktadpop = require "oktadpop"

local core = oktadpop.core
local ngx = ngx
local type, tostring, tonumber, setmetatable, pcall = type, tostring, tonumber, setmetatable, pcall
local floor = math.floor

local redis_lib do
  local ok, lib = pcall(require, "nginx.redis")
  if not ok then ok, lib = pcall(require, "resty.redis") end
  redis_lib = ok and lib or nil
end

local OPTIONS = {url = true, prefix = true, timeout = true, pool_size = true, keepalive = true}
local SCRIPTS = core.redis_scripts

local _M = {}
local Store = {}
Store.__index = Store

local function fail(self, what, err)
  return nil, core.error("store", ("redis %s:%d: %s: %s"):format(self.host, self.port, what, tostring(err or "no answer")))
end

-- A connection from the pool (AUTH and SELECT only on a new one), or nil, err.
local function connect(self)
  local red = redis_lib:new()
  red:set_timeout(self.timeout_ms)
  local ok, err = red:connect(self.host, self.port, {pool = self.pool, pool_size = self.pool_size, ssl = self.tls,
                                                      ssl_verify = self.tls, server_name = self.tls and self.host or nil})
  if not ok then return fail(self, "connect", err) end
  if (red:get_reused_times() or 0) == 0 then
    if self.password then
      local res, aerr
      if self.user then res, aerr = red:auth(self.user, self.password) else res, aerr = red:auth(self.password) end
      if not res then red:close() return fail(self, "AUTH", aerr and "refused (check the URL's user and password)") end
    end
    if self.db ~= 0 then
      local res, serr = red:select(self.db)
      if not res then red:close() return fail(self, "SELECT", serr) end
    end
  end
  return red
end

-- Runs fn(red) on a pooled connection; its answer, the connection back to the pool, or, on an
-- error, closed and nil, err.
local function with(self, what, fn)
  local red, err = connect(self)
  if not red then return nil, err end
  local res, rerr = fn(red)
  if res == nil and rerr then red:close() return fail(self, what, rerr) end
  red:set_keepalive(self.keepalive_ms, self.pool_size)
  return res
end

function Store:key(key) return core.redis_key(self.prefix, key) end

--- store:get(key) -> value | nil (absent) | nil, err
function Store:get(key)
  local v, err = with(self, "GET", function(red) return red:get(self:key(key)) end)
  if v == ngx.null then return nil end
  return v, err
end

local function ms(seconds) return tostring(floor((tonumber(seconds) or 0) * 1000 + 0.5)) end

local function write(self, key, value, ttl, only_new)
  local res, err = with(self, only_new and "SET NX" or "SET", function(red)
    local args = {self:key(key), tostring(value)}
    if only_new then args[#args + 1] = "NX" end
    if ttl and ttl > 0 then args[#args + 1] = "PX" args[#args + 1] = ms(ttl) end
    return red:set(unpack(args))
  end)
  if res == nil then return nil, err end
  if res == ngx.null then return false, "exists" end
  return true
end

--- store:set(key, value [, ttl]) -> true | nil, err
function Store:set(key, value, ttl) return write(self, key, value, ttl, false) end
--- store:add(key, value [, ttl]) -> true | false, "exists" | nil, err
function Store:add(key, value, ttl) return write(self, key, value, ttl, true) end

--- store:incr(key, by [, init [, init_ttl]]) -> the new value | nil, err
function Store:incr(key, by, init, ttl)
  return with(self, "incr", function(red)
    return red:eval(SCRIPTS.incr, 1, self:key(key), tostring(floor(by)), tostring(floor(init or 0)), ms(ttl))
  end)
end

--- store:delete(key) -> true | nil, err
function Store:delete(key)
  local res, err = with(self, "DEL", function(red) return red:del(self:key(key)) end)
  if res == nil then return nil, err end
  return true
end

--- store:replay_add(jti, ttl, now, iat) -> true | false, "exists" | false, "predates" | nil, err:
-- the guard's record of a proof's first use (see the libcurl driver's store).
function Store:replay_add(jti, ttl, now, iat)
  local got, err = with(self, "replay", function(red)
    return red:eval(SCRIPTS.replay, 2, self:key("{replay}:jti:" .. jti), self:key("{replay}:epoch"), ms(ttl),
                    tostring(floor(now)), tostring(floor(iat)))
  end)
  if got == nil then return nil, err end
  if got == 1 then return true end
  return false, got == -1 and "predates" or "exists"
end

function Store:__tostring()
  return ("oktadpop.resty.redis: redis%s://%s%s:%d/%d (prefix %q)"):format(self.tls and "s" or "",
    self.password and "***@" or "", self.host, self.port, self.db, self.prefix)
end

--- A Redis store inside nginx: redis_store{url=, prefix="oktadpop:", timeout=2, pool_size=32,
-- keepalive=60} -> store | nil, err; for resty.new's store= and the guard's replay_store=.
function _M.new(opts)
  if type(opts) ~= "table" then return nil, core.error("config", "redis_store needs an options table") end
  for k in pairs(opts) do
    if not OPTIONS[k] then return nil, core.error("config", "unknown redis_store option '" .. tostring(k) .. "'") end
  end
  if not redis_lib then
    return nil, core.error("config", "redis_store needs lua-resty-redis (Debian: apt-get install lua-nginx-redis)")
  end
  if type(opts.url) ~= "string" then return nil, core.error("config", "redis_store needs url = \"redis://host:port\"") end
  local t, err = core.redis_url(opts.url)
  if not t then return nil, err end
  for _, n in ipairs({"timeout", "pool_size", "keepalive"}) do
    if opts[n] ~= nil and (type(opts[n]) ~= "number" or opts[n] <= 0 or opts[n] ~= opts[n]) then
      return nil, core.error("config", "redis_store: " .. n .. " must be a positive number")
    end
  end
  if opts.prefix ~= nil and (type(opts.prefix) ~= "string" or #opts.prefix > 127) then
    return nil, core.error("config", "redis_store: prefix must be a string under 128 bytes")
  end
  local self = setmetatable({host = t.host, port = t.port, db = t.db, tls = t.tls, user = t.user, password = t.password,
    prefix = opts.prefix or "oktadpop:", timeout_ms = floor((opts.timeout or 2) * 1000),
    pool_size = opts.pool_size or 32, keepalive_ms = floor((opts.keepalive or 60) * 1000)}, Store)
  -- one pool per server, db and user: a connection is never reused on another db or identity
  self.pool = ("oktadpop:%s:%d:%d:%s"):format(t.host, t.port, t.db, ngx.md5(tostring(t.user) .. "\0" .. tostring(t.password)))
  return self
end

return _M
