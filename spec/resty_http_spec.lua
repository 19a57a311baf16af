-- The nginx driver's HTTP reader (oktadpop.resty.http), fed from a fake cosocket outside nginx:
-- a property run over thousands of generated answers (status lines, headers, interim answers,
-- chunked framing and lengths, each maybe corrupted, split at random) and endless streams.
-- Whatever arrives, the reader answers a response or an error object, never raises, never
-- reads past its bounds, and never outlives the request's deadline.
local oktadpop = require "oktadpop"

local SEED = 20261129

-- A fake ngx: a clock that moves 1 ms per read, and one socket that plays `pieces`.
local function fake_ngx(pieces, endless)
  local clock, consumed, i = 1000, 0, 0
  local sock = {}
  function sock:settimeouts() end
  function sock:connect() return 1 end
  function sock:sslhandshake() return true end
  function sock:getreusedtimes() return 0 end
  function sock:send() return 1 end
  function sock:close() return 1 end
  function sock:setkeepalive() return 1 end
  function sock:receiveany(max)
    clock = clock + 0.001
    i = i + 1
    local piece = pieces[i] or (endless and endless(i))
    if not piece then return nil, "closed" end
    if #piece > max then
      table.insert(pieces, i + 1, piece:sub(max + 1))
      piece = piece:sub(1, max)
    end
    consumed = consumed + #piece
    return piece
  end
  local ngx = {
    now = function() return clock end, update_time = function() end,
    socket = {tcp = function() return sock end},
  }
  return ngx, function() return consumed end
end

local function with_ngx(ngx, fn)
  local saved, saved_mod = _G.ngx, package.loaded["oktadpop.resty.http"]
  _G.ngx = ngx
  package.loaded["oktadpop.resty.http"] = nil
  local ok, res = pcall(function() return require("oktadpop.resty.http") end)
  if ok then ok, res = pcall(fn, res) end
  _G.ngx, package.loaded["oktadpop.resty.http"] = saved, saved_mod
  return ok, res
end

local SESSION = {max_body = 65536, connect_timeout = 5, timeout = 10}
local REQ = {method = "GET", url = "https://org.example/api/v1/users", headers = {Accept = "application/json"}, timeout = 10}

local function play(pieces, endless)
  local ngx, consumed = fake_ngx(pieces, endless)
  local ok, res = with_ngx(ngx, function(http) return http.transport(SESSION)(REQ) end)
  return ok, res, consumed()
end

-- Splits s into random pieces (1 to 700 bytes).
local function split(s, rnd)
  local out, i = {}, 1
  while i <= #s do
    local n = rnd(1, 700)
    out[#out + 1] = s:sub(i, i + n - 1)
    i = i + n
  end
  return out
end

-- A generated answer: its bytes, and the body it must give when nothing was corrupted.
local function answer(rnd)
  local body = ("x"):rep(rnd(0, 3000))
  local corrupt = rnd(1, 4) == 1
  local head = {}
  for _ = 1, rnd(0, 2) do head[#head + 1] = "HTTP/1.1 100 Continue\r\n\r\n" end
  head[#head + 1] = ("HTTP/1.1 %d OK\r\n"):format(({200, 201, 204, 404, 429, 503})[rnd(1, 6)])
  for i = 1, rnd(0, 20) do head[#head + 1] = ("X-H%d: %s\r\n"):format(i, ("v"):rep(rnd(0, 200))) end
  local framing = rnd(1, 3)
  local wire
  if framing == 1 then
    head[#head + 1] = "Content-Length: " .. (corrupt and ({"-1", "0x2", "1e3", "", "99999999999999999"})[rnd(1, 5)] or #body) .. "\r\n\r\n"
    wire = table.concat(head) .. body
  elseif framing == 2 then
    head[#head + 1] = "Transfer-Encoding: chunked\r\n\r\n"
    local chunks, i = {}, 1
    while i <= #body do
      local n = rnd(1, 500)
      chunks[#chunks + 1] = ("%x%s\r\n%s\r\n"):format(math.min(n, #body - i + 1), rnd(1, 5) == 1 and ";ext=1" or "",
        body:sub(i, i + n - 1))
      i = i + n
    end
    chunks[#chunks + 1] = "0\r\n" .. (rnd(1, 3) == 1 and "X-Trailer: t\r\n" or "") .. "\r\n"
    wire = table.concat(head) .. table.concat(chunks)
    if corrupt then
      local at = rnd(#table.concat(head) + 1, #wire)
      wire = wire:sub(1, at - 1) .. string.char(rnd(0, 255)) .. wire:sub(at + 1)
    end
  else
    head[#head + 1] = "\r\n"
    wire = table.concat(head) .. body -- read to close
    if corrupt then wire = "HTTP/1.1 2x0 OK\r\n" .. wire end
  end
  return wire, body, corrupt
end

describe("the nginx driver's HTTP reader, fed from a fake socket", function()
  it("answers every generated response or errs, never raises, and gives the body when the framing is sound", function()
    local rng = SEED
    local function rnd(a, b) -- Park-Miller: exact in doubles, so the same run on 5.4 and LuaJIT
      rng = (rng * 16807) % 2147483647
      return a + rng % (b - a + 1)
    end
    local answered, errors = 0, 0
    for n = 1, 3000 do
      local wire, body, corrupt = answer(rnd)
      local ok, res, consumed = play(split(wire, rnd))
      assert(ok, ("case %d raised: %s"):format(n, tostring(res)))
      assert.is_table(res)
      assert.is_true(consumed <= #wire)
      if res.error then
        errors = errors + 1
        assert.is_string(res.error.kind)
        assert.is_string(res.error.message)
        assert.is_true(corrupt, ("case %d: a sound answer was refused: %s"):format(n, res.error.message))
      else
        answered = answered + 1
        assert.is_number(res.status)
        assert.is_true(res.status >= 200)
        if not corrupt and res.status ~= 204 then assert.equal(body, res.body, "case " .. n) end
      end
    end
    assert.is_true(answered > 1500 and errors > 100, answered .. " answered, " .. errors .. " refused")
  end)

  local ENDLESS = {
    {"an endless chunk-size line", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ("f"):rep(1000), 1024, "longer than 1024"},
    {"endless trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", "X-T: t\r\n", 16 * 1024 + 1100, "trailers longer"},
    {"an endless header block", "HTTP/1.1 200 OK\r\n", "X-Pad: pppppppp\r\n", 64 * 1024 + 1100, "longer than 65536"},
    {"an endless body without a length", "HTTP/1.1 200 OK\r\n\r\n", ("b"):rep(1000), 65536 + 66000, "exceeds max_body"},
    {"endless interim answers", "", "HTTP/1.1 100 Continue\r\n\r\n", 2000, "too many interim"},
  }
  for _, case in ipairs(ENDLESS) do
    it("stops " .. case[1] .. " at its bound", function()
      local ok, res, consumed = play({case[2]}, function() return case[3] end)
      assert.is_true(ok, tostring(res))
      assert.is_table(res.error)
      assert.matches(case[5], res.error.message, 1, true)
      -- the bound, plus at most the one read that crossed it
      assert.is_true(consumed <= #case[2] + case[4] + #case[3], case[1] .. ": read " .. consumed .. " bytes")
    end)
  end

  it("ends a request that trickles forever at its deadline", function()
    local ok, res = play({"HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n"}, function() return "." end)
    assert.is_true(ok, tostring(res))
    assert.equal("timeout", res.error.kind)
  end)

  it("parses URLs with IPv6 literals and refuses what is not a URL", function()
    local ok, http = with_ngx(fake_ngx({}), function(m) return m end)
    assert.is_true(ok)
    assert.same({"https", "::1", 8443, "/x?y"}, {http.parse_url("https://[::1]:8443/x?y#f")})
    assert.same({"http", "127.0.0.1", 80, "/"}, {http.parse_url("http://127.0.0.1")})
    assert.is_nil(http.parse_url("ftp://x/"))
    assert.is_nil(http.parse_url("https://user@host/"))
    assert.is_nil(http.parse_url("https://host:99999/"))
  end)

  it("sends Content-Length: 0 for a POST without a body, and refuses a header with a line break", function()
    local sent
    local ngx = fake_ngx({"HTTP/1.1 204 No Content\r\n\r\n"})
    local sock = ngx.socket.tcp()
    function sock:send(bytes) sent = table.concat(bytes) return 1 end
    local ok, res = with_ngx(ngx, function(http)
      return http.transport(SESSION){method = "POST", url = "https://org.example/api/v1/x", headers = {}, timeout = 5}
    end)
    assert.is_true(ok, tostring(res))
    assert.equal(204, res.status)
    assert.matches("\r\nContent%-Length: 0\r\n", sent)
    ok, res = with_ngx(fake_ngx({}), function(http)
      return http.transport(SESSION){method = "GET", url = "https://org.example/", headers = {["X-A"] = "a\r\nb"}, timeout = 5}
    end)
    assert.is_true(ok)
    assert.equal("config", res.error.kind)
  end)
  assert(oktadpop)
end)
