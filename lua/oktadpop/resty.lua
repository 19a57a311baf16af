-- oktadpop.resty: the oktadpop client inside nginx's Lua module without blocking a worker.
-- The C core decides every request (token exchange, nonce retries, refresh, 429 waits); this
-- file only moves bytes with cosockets and waits with ngx.sleep, so nothing yields inside C.
-- Tokens and nonces can be shared by all workers through a lua_shared_dict, with a lock so
-- that an expiring token is renewed by one worker, not by all of them.
local oktadpop = require "oktadpop"
local cjson = require "cjson.safe"

local ngx = ngx
local tcp = ngx.socket.tcp
local str_lower, str_format, concat = string.lower, string.format, table.concat
local tonumber, type, pairs, setmetatable = tonumber, type, pairs, setmetatable

local _M = {_VERSION = oktadpop._VERSION}

local DEFAULTS = {timeout = 30, connect_timeout = 10, max_body = 16 * 1024 * 1024,
                  max_retries = 2, max_retry_wait = 60}
local MAX_HEADER_BYTES = 64 * 1024

local function net_error(kind, fmt, ...)
  return {error = oktadpop.error(kind, str_format(fmt, ...))}
end

-- One HTTP/1.1 exchange over a cosocket: a connection pool per host keeps it alive.
local function read_body(sock, headers, limit)
  local te, len = headers["transfer-encoding"], tonumber(headers["content-length"] or "")
  if len then
    if len > limit then return nil, "response body exceeds max_body" end
    if len == 0 then return "" end
    return sock:receive(len)
  end
  if te and te:lower():find("chunked", 1, true) then
    local parts, total = {}, 0
    while true do
      local line, err = sock:receive("*l")
      if not line then return nil, err end
      local size = tonumber(line:match("^%x+") or "", 16)
      if not size then return nil, "malformed chunk size" end
      if size == 0 then
        repeat line, err = sock:receive("*l") until not line or line == ""
        return concat(parts)
      end
      total = total + size
      if total > limit then return nil, "response body exceeds max_body" end
      local chunk, cerr = sock:receive(size)
      if not chunk then return nil, cerr end
      parts[#parts + 1] = chunk
      sock:receive("*l")
    end
  end
  local parts, total = {}, 0 -- read to close, in bounded pieces
  while true do
    local data, err = sock:receiveany(65536)
    if not data then
      if err == "closed" then return concat(parts) end
      return nil, err
    end
    total = total + #data
    if total > limit then return nil, "response body exceeds max_body" end
    parts[#parts + 1] = data
  end
end

local function cosocket_transport(conf)
  local max_body = conf.max_body
  return function(req)
    local scheme, host, port, path = req.url:match("^(https?)://([^/:]+):?(%d*)(.*)$")
    if not scheme then return net_error("config", "cannot parse URL %s", req.url) end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    if path == "" then path = "/" end
    local sock = tcp()
    sock:settimeouts(conf.connect_timeout * 1000, conf.timeout * 1000, conf.timeout * 1000)
    local ok, err = sock:connect(host, port)
    if not ok then return net_error(err == "timeout" and "timeout" or "network", "%s %s failed: connect: %s", req.method, req.url, err) end
    if scheme == "https" and sock:getreusedtimes() == 0 then
      -- verification uses lua_ssl_trusted_certificate (see the README)
      ok, err = sock:sslhandshake(nil, host, true)
      if not ok then sock:close() return net_error("network", "%s %s failed: TLS: %s", req.method, req.url, err) end
    end
    local lines = {req.method, " ", path, " HTTP/1.1\r\nHost: ", host, port ~= (scheme == "https" and 443 or 80) and (":" .. port) or "", "\r\n"}
    for name, value in pairs(req.headers) do
      value = tostring(value)
      if value:find("[\r\n]") or name:find("[^%w%-_]") then
        sock:close()
        return net_error("config", "header %s has a CR or LF or an invalid name: refused", name)
      end
      lines[#lines + 1] = name .. ": " .. value .. "\r\n"
    end
    if req.body then lines[#lines + 1] = "Content-Length: " .. #req.body .. "\r\n" end
    lines[#lines + 1] = "\r\n"
    lines[#lines + 1] = req.body
    ok, err = sock:send(lines)
    if not ok then sock:close() return net_error(err == "timeout" and "timeout" or "network", "%s %s failed: send: %s", req.method, req.url, err) end
    -- the header block, read in bounded pieces up to the blank line
    local reader, parts, size = sock:receiveuntil("\r\n\r\n"), {}, 0
    while true do
      local data, rerr = reader(8192)
      if not data then
        if rerr then
          sock:close()
          return net_error(rerr == "timeout" and "timeout" or "network", "%s %s failed: %s", req.method, req.url, rerr)
        end
        break
      end
      size = size + #data
      if size > MAX_HEADER_BYTES then sock:close() return net_error("network", "%s %s: response headers too large", req.method, req.url) end
      parts[#parts + 1] = data
    end
    local head = concat(parts)
    local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
    if not status then
      sock:close()
      return net_error("network", "%s %s failed: malformed status line", req.method, req.url)
    end
    local headers = {}
    for line in head:gmatch("\r\n([^\r\n]+)") do
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if name then
        name = str_lower(name)
        headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
      end
    end
    local body, berr = "", nil
    if req.method ~= "HEAD" and status ~= 204 and status ~= 304 then
      body, berr = read_body(sock, headers, max_body)
      if not body then
        sock:close()
        return net_error(berr == "timeout" and "timeout" or "network", "%s %s failed: %s", req.method, req.url, berr)
      end
    end
    if (headers.connection or ""):lower():find("close", 1, true) then sock:close() else sock:setkeepalive(60000, 32) end
    return {status = status, headers = headers, body = body}
  end
end

-- Adapts a user transport (function(req) -> res | nil, err) to the core's response shape.
local function user_transport(fn)
  return function(req)
    local res, err = fn(req)
    if not res then
      if type(err) == "table" then return {error = err} end
      return net_error("network", "%s %s failed: %s", req.method, req.url, tostring(err))
    end
    local headers = {}
    for k, v in pairs(res.headers or {}) do
      headers[str_lower(k)] = type(v) == "table" and concat(v, ", ") or v
    end
    return {status = res.status, headers = headers, body = res.body or ""}
  end
end

local Client = {}
Client.__index = Client

-- Shared-dict keys are per org, client and DPoP key: a token is bound to that key.
local function dict_prefix(core)
  return "oktadpop:" .. core.org_url .. ":" .. core.client_id .. ":" .. (core.dpop_key and core.dpop_key:thumbprint() or "bearer") .. ":"
end

-- The token travels as one JSON value, so no worker reads half of an old and half of a new one.
function Client:_pull()
  if not self.dict then return end
  local raw = self.dict:get(self.prefix .. "token")
  local state = raw and cjson.decode(raw)
  if type(state) ~= "table" then state = {} end
  state.as_nonce = self.dict:get(self.prefix .. "as_nonce")
  state.rs_nonce = self.dict:get(self.prefix .. "rs_nonce")
  self.core:set_token_state(state)
end

function Client:_push()
  if not self.dict then return end
  local s = self.core:token_state()
  local p, d = self.prefix, self.dict
  if s.token and s.token ~= self.pushed then
    local ttl = s.expires_at - ngx.now()
    if ttl > 0 then
      d:set(p .. "token", cjson.encode{token = s.token, token_type = s.token_type, expires_at = s.expires_at, scope = s.scope}, ttl)
      self.pushed = s.token
    end
  end
  if s.as_nonce then d:set(p .. "as_nonce", s.as_nonce, 3 * 86400) end
  if s.rs_nonce then d:set(p .. "rs_nonce", s.rs_nonce, 3 * 86400) end
end

-- Runs a core operation to its end: the only loop, bounded by the core's own counters.
function Client:_run(op)
  local action = op:step()
  for _ = 1, 128 do
    local kind = action.action
    if kind == "send" then
      action = op:step(self.transport(action))
    elseif kind == "sleep" then
      ngx.sleep(action.seconds)
      action = op:step()
    else
      self:_push()
      if kind == "done" then return action end
      return nil, action.error
    end
  end
  return nil, oktadpop.error("network", "gave up after 128 steps")
end

function Client:_fresh()
  local s = self.core:token_state()
  return s.token and s.expires_at - self.renew_skew > ngx.now()
end

-- Makes sure a fresh token is in the core, fetching it in one worker only: the lock holds
-- the owner's id (deleted only by its owner), lives as long as the slowest token exchange,
-- and is released even when the exchange raises.
function Client:_ensure_token(force)
  self:_pull()
  if not force and self:_fresh() then return true end
  if not self.dict then
    local done, err = self:_run(self.core:operation("token", force))
    return done ~= nil, err
  end
  local lock, me = self.prefix .. "lock", ngx.worker.pid() .. ":" .. ngx.now() .. ":" .. math.random()
  local deadline = ngx.now() + self.lock_ttl
  repeat
    if self.dict:add(lock, me, self.lock_ttl) then
      self:_pull() -- another worker may have finished just before we took the lock
      if not force and self:_fresh() then
        if self.dict:get(lock) == me then self.dict:delete(lock) end
        return true
      end
      local ok, done, err = pcall(self._run, self, self.core:operation("token", force))
      if self.dict:get(lock) == me then self.dict:delete(lock) end
      if not ok then error(done, 0) end
      return done ~= nil, err
    end
    ngx.sleep(0.02)
    self:_pull()
    if self:_fresh() then return true end
  until ngx.now() > deadline
  local done, err = self:_run(self.core:operation("token", force)) -- the holder is gone
  return done ~= nil, err
end

function Client:token(force)
  local ok, err = self:_ensure_token(force)
  if not ok then return nil, err end
  local s = self.core:token_state()
  return s.token, {token_type = s.token_type, expires_at = s.expires_at,
                   expires_in = math.floor(s.expires_at - ngx.now()), scope = s.scope}
end

function Client:request(method, path, opts)
  local ok, err = self:_ensure_token(false)
  if not ok then return nil, err end
  local op
  op, err = self.core:operation(method, path, opts)
  if not op then return nil, err end
  local done
  done, err = self:_run(op)
  if not done then return nil, err end
  return done.response
end

-- The answer for a response is the blocking client's, from the same C function.
local function call(self, method, path, opts)
  local res, err = self:request(method, path, opts)
  if not res then return nil, err end
  return oktadpop.call_result(res, method, path)
end

function Client:get(path, query) return call(self, "GET", path, {query = query}) end
function Client:delete(path) return call(self, "DELETE", path) end
function Client:post(path, body) return call(self, "POST", path, {body = body}) end
function Client:put(path, body) return call(self, "PUT", path, {body = body}) end
function Client:patch(path, body) return call(self, "PATCH", path, {body = body}) end

-- Iterates items over rel="next" links; the core refuses a link to another origin.
function Client:paginate(path, query)
  local url, page, i = path, nil, 0
  local first = true
  return function()
    while true do
      if page and i < #page then
        i = i + 1
        return page[i]
      end
      if not url then return nil end
      local body, res_or_err = self:get(url, first and query or nil)
      first = false
      if not body then error(res_or_err, 2) end
      if type(body) ~= "table" then error(oktadpop.error("json", "paginate: the response is not a JSON array"), 2) end
      page, i, url = body, 0, res_or_err.next
    end
  end
end

function Client:close()
  self.core:close()
end

function Client:__tostring()
  return "oktadpop.resty " .. tostring(self.core)
end

-- resty.new(config): oktadpop.new's config plus shared_dict (a lua_shared_dict name) and
-- transport (function(req) -> res | nil, err). -> client | nil, err
function _M.new(config)
  if type(config) ~= "table" then return nil, oktadpop.error("config", "resty.new needs a config table") end
  local core_conf, conf = {}, {}
  for k, v in pairs(config) do
    if k ~= "shared_dict" and k ~= "transport" then core_conf[k] = v end
  end
  for k, v in pairs(DEFAULTS) do conf[k] = config[k] or v end
  local dict
  if config.shared_dict ~= nil then
    dict = ngx.shared[config.shared_dict]
    if not dict then return nil, oktadpop.error("config", "no lua_shared_dict named " .. tostring(config.shared_dict)) end
    if config.dpop ~= false and config.dpop_key == nil then
      return nil, oktadpop.error("config", "shared_dict needs dpop_key: every worker must load the same DPoP key (a file path)")
    end
  end
  if config.transport ~= nil and type(config.transport) ~= "function" then
    return nil, oktadpop.error("config", "transport must be a function(req) -> res | nil, err")
  end
  local core, err = oktadpop.new(core_conf)
  if not core then return nil, err end
  local self = setmetatable({
    core = core, dict = dict,
    transport = config.transport and user_transport(config.transport) or cosocket_transport(conf),
    renew_skew = config.renew_skew or 60,
    -- the slowest token exchange: every attempt timing out, plus the longest waits
    lock_ttl = (conf.timeout + conf.connect_timeout) * (conf.max_retries + 3) + conf.max_retry_wait * conf.max_retries,
  }, Client)
  if dict then self.prefix = dict_prefix(core) end
  return self
end

return _M
