-- oktadpop.resty.http: the bytes of one HTTP/1.1 exchange over an nginx cosocket, for the
-- nginx driver. It decides nothing about the protocol; it only makes sure a hostile or broken
-- server gets a clear error and never a hang or unbounded memory: every line, the header
-- block, the chunk framing, the trailers and the body have a byte bound, and the whole request
-- (connect, TLS, send, headers, body) one deadline. TLS is always verified (against
-- lua_ssl_trusted_certificate); redirects are answered as they are, never followed.
local core = require("oktadpop").core
local headers_of = core.headers

local ngx = ngx
local tcp = ngx.socket.tcp
local concat, tonumber, tostring, pairs, type = table.concat, tonumber, tostring, pairs, type
local str_lower, str_find, str_format = string.lower, string.find, string.format

local _M = {}

local MAX_HEAD = 64 * 1024     -- status line and headers
local MAX_LINE = 1024          -- a chunk-size line, extensions included
local MAX_TRAILER = 16 * 1024  -- all trailer lines
local MAX_INTERIM = 8          -- 1xx responses before the final one

local function fail(kind, req, fmt, ...)
  return {error = core.error(kind, str_format("%s %s failed: ", req.method, req.url) .. str_format(fmt, ...))}
end

-- scheme, host (IPv6 literals without brackets), port, path of an absolute URL
function _M.parse_url(url)
  local scheme, rest = url:match("^(https?)://(.*)$")
  if not scheme then return nil end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  local host, port = authority:match("^%[([%x:%.]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:@%[%]]+):?(%d*)$") end
  if not host or host == "" then return nil end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if port < 1 or port > 65535 then return nil end
  if path == "" then path = "/" end
  return scheme, host, port, (path:gsub("#.*$", ""))
end

-- A deadline for the whole request: every socket operation gets what is left of it.
local function arm(sock, deadline, connect)
  ngx.update_time()
  local left = deadline - ngx.now()
  if left <= 0 then return false end
  local ms = left * 1000
  sock:settimeouts(connect and connect < ms and connect or ms, ms, ms)
  return true
end

-- A buffered reader over the socket. It reads with receiveany, which returns as soon as any
-- bytes arrive, and checks the deadline before every read: a server trickling one byte at a
-- time cannot stretch a request past its deadline, as a per-operation timeout would let it.
local Reader = {}
Reader.__index = Reader

local function reader(sock, deadline)
  return setmetatable({sock = sock, deadline = deadline, buf = ""}, Reader)
end

function Reader:fill()
  if not arm(self.sock, self.deadline) then return nil, "timeout" end
  local data, err = self.sock:receiveany(65536)
  if not data then return nil, err end
  self.buf = self.buf .. data
  return true
end

-- Up to (not including) pattern, at most max bytes; nil, err past that.
function Reader:upto(pattern, max)
  while true do
    local s, e = str_find(self.buf, pattern, 1, true)
    if s then
      if s - 1 > max then break end
      local out = self.buf:sub(1, s - 1)
      self.buf = self.buf:sub(e + 1)
      return out
    end
    if #self.buf > max + #pattern then break end
    local ok, err = self:fill()
    if not ok then return nil, err end
  end
  return nil, "a line or header block longer than " .. max .. " bytes"
end

function Reader:exact(n)
  local parts, have = {self.buf}, #self.buf
  self.buf = ""
  while have < n do
    if not arm(self.sock, self.deadline) then return nil, "timeout" end
    local data, err = self.sock:receiveany(n - have < 65536 and n - have or 65536)
    if not data then return nil, err end
    parts[#parts + 1] = data
    have = have + #data
  end
  local all = concat(parts)
  self.buf = all:sub(n + 1)
  return all:sub(1, n)
end

function Reader:to_close(limit)
  local parts, total = {self.buf}, #self.buf
  self.buf = ""
  while total <= limit do
    if not arm(self.sock, self.deadline) then return nil, "timeout" end
    local data, err = self.sock:receiveany(65536)
    if not data then
      if err == "closed" then return concat(parts) end
      return nil, err
    end
    total = total + #data
    parts[#parts + 1] = data
  end
  return nil, "the response body exceeds max_body"
end

-- The status line and headers of the final response (interim 1xx ones are skipped).
local function read_head(r)
  for _ = 1, MAX_INTERIM + 1 do
    local head, err = r:upto("\r\n\r\n", MAX_HEAD)
    if not head then return nil, err end
    local status = tonumber(head:match("^HTTP/1%.[01] (%d%d%d)[ \r\n]") or head:match("^HTTP/1%.[01] (%d%d%d)$"))
    if not status then return nil, "malformed status line" end
    if status >= 200 or status == 101 then
      local headers, err = headers_of(head)  -- the libcurl transport's rule, from the same C
      if not headers then return nil, err.message end
      return status, headers
    end
  end
  return nil, "too many interim (1xx) responses"
end

local function read_chunked(r, limit)
  local parts, total = {}, 0
  while true do
    local line, err = r:upto("\r\n", MAX_LINE)
    if not line then return nil, err end
    local hex = line:match("^(%x+)[ \t]*;") or line:match("^(%x+)[ \t]*$")
    if not hex or #hex > 8 then return nil, "malformed chunk size" end
    local size = tonumber(hex, 16)
    if size == 0 then -- trailer lines up to the blank one, bounded in all
      local seen = 0
      repeat
        local trailer, terr = r:upto("\r\n", MAX_LINE)
        if not trailer then return nil, terr end
        seen = seen + #trailer + 2
        if seen > MAX_TRAILER then return nil, "trailers longer than " .. MAX_TRAILER .. " bytes" end
      until trailer == ""
      return concat(parts)
    end
    total = total + size
    if total > limit then return nil, "the response body exceeds max_body" end
    local chunk, cerr = r:exact(size + 2)
    if not chunk then return nil, cerr end
    if chunk:sub(-2) ~= "\r\n" then return nil, "malformed chunk" end
    parts[#parts + 1] = chunk:sub(1, -3)
  end
end

-- The body, and whether the connection can be used again.
local function read_body(r, headers, limit)
  local te, cl = headers["transfer-encoding"], headers["content-length"]
  if te then
    if str_lower(te) ~= "chunked" then return nil, "unsupported Transfer-Encoding " .. te end
    local body, err = read_chunked(r, limit)
    if not body then return nil, err end
    return body, true
  end
  if cl then
    if not cl:match("^%d+$") or #cl > 15 then return nil, "malformed Content-Length" end
    local len = tonumber(cl)
    if len > limit then return nil, "the response body exceeds max_body" end
    local body, err = r:exact(len)
    if not body then return nil, err end
    return body, true
  end
  local body, err = r:to_close(limit)
  if not body then return nil, err end
  return body, false
end

local function request_bytes(req, host, port, scheme, path)
  local default = scheme == "https" and 443 or 80
  local host_header = (str_find(host, ":", 1, true) and ("[" .. host .. "]") or host) .. (port ~= default and (":" .. port) or "")
  local lines = {req.method, " ", path, " HTTP/1.1\r\nHost: ", host_header, "\r\n"}
  for name, value in pairs(req.headers) do
    value = tostring(value)
    if not name:match("^[!#$%%&'*+%-.^_`|~%w]+$") or str_find(value, "[\r\n%z]") then return nil, name end
    lines[#lines + 1] = name .. ": " .. value .. "\r\n"
  end
  local body = req.body
  if not body and (req.method == "POST" or req.method == "PUT" or req.method == "PATCH") then body = "" end
  if body then lines[#lines + 1] = "Content-Length: " .. #body .. "\r\n" end
  lines[#lines + 1] = "\r\n"
  lines[#lines + 1] = body
  return lines
end

-- transport(session) -> function(send action) -> {status=, headers=, body=} | {error=}
function _M.transport(session)
  local max_body, connect_ms = session.max_body, session.connect_timeout * 1000
  return function(req)
    local scheme, host, port, path = _M.parse_url(req.url)
    if not scheme then return fail("config", req, "cannot parse the URL") end
    local deadline = ngx.now() + (req.timeout or session.timeout)
    local bytes, bad = request_bytes(req, host, port, scheme, path)
    if not bytes then return fail("config", req, "header %s has a bad name or a line break", bad) end
    local sock = tcp()
    if not arm(sock, deadline, connect_ms) then return fail("timeout", req, "timeout") end
    local ok, err = sock:connect(host, port)
    if not ok then return fail(err == "timeout" and "timeout" or "network", req, "connect: %s", err) end
    if scheme == "https" and sock:getreusedtimes() == 0 then
      arm(sock, deadline)
      ok, err = sock:sslhandshake(nil, host, true)
      if not ok then sock:close() return fail("network", req, "TLS: %s", err) end
    end
    if not arm(sock, deadline) then sock:close() return fail("timeout", req, "timeout") end
    ok, err = sock:send(bytes)
    if not ok then sock:close() return fail(err == "timeout" and "timeout" or "network", req, "send: %s", err) end
    local r = reader(sock, deadline)
    local status, headers = read_head(r)
    if not status then sock:close() return fail(headers == "timeout" and "timeout" or "network", req, "%s", headers) end
    local body, reusable = "", true
    if req.method ~= "HEAD" and status ~= 204 and status ~= 304 then
      body, reusable = read_body(r, headers, max_body)
      if not body then
        sock:close()
        return fail(reusable == "timeout" and "timeout" or "network", req, "%s", tostring(reusable))
      end
    end
    if reusable and r.buf == "" and not str_find(str_lower(headers.connection or ""), "close", 1, true) then
      sock:setkeepalive(60000, 32)
    else
      sock:close()
    end
    return {status = status, headers = headers, body = body}
  end
end

return _M
