-- Helpers shared by the specs, in plain Lua that runs on 5.4 and LuaJIT (no bit operators).
local util = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
util.B64 = B64 -- the base64url alphabet, in value order

-- RFC 7515 Appendix A.3's P-256 key, private member d included (an RFC test vector).
util.RFC7515_A3_JWK = {
  kty = "EC",
  crv = "P-256",
  x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
  y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
  d = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",
}

local B64_VAL = {}
for i = 1, 64 do B64_VAL[B64:byte(i)] = i - 1 end

-- base64url without padding, written independently of the module under test.
function util.b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chunk = {}
    for j = 3, 0, -1 do
      local v = math.floor(n / 64 ^ j) % 64
      chunk[#chunk + 1] = B64:sub(v + 1, v + 1)
    end
    out[#out + 1] = table.concat(chunk, "", 1, c and 4 or b and 3 or 2)
  end
  return table.concat(out)
end

function util.unb64url(s)
  assert(#s % 4 ~= 1, "bad base64url length")
  local out = {}
  for i = 1, #s, 4 do
    local group = s:sub(i, i + 3)
    local n = 0
    for j = 1, 4 do
      local c = group:byte(j)
      assert(not c or B64_VAL[c], "bad base64url character")
      n = n * 64 + (c and B64_VAL[c] or 0)
    end
    local bytes = string.char(math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
    out[#out + 1] = bytes:sub(1, #group - 1)
  end
  return table.concat(out)
end

-- The three parts of a compact JWS.
function util.parts(jwt)
  return jwt:match("^([^.]*)%.([^.]*)%.([^.]*)$")
end

local created = {}

-- A temp file (with content, and a chmod mode when given); util.cleanup() removes them all.
function util.tmpfile(content, mode)
  local path = os.tmpname()
  created[#created + 1] = path
  if content then util.write(path, content) end
  if mode then os.execute("chmod " .. mode .. " " .. path) end
  return path
end

function util.cleanup()
  for i = #created, 1, -1 do
    os.remove(created[i])
    created[i] = nil
  end
end

function util.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The file's bytes, or nil when it cannot be opened (yet).
function util.try_readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function util.readfile(path)
  return (assert(util.try_readfile(path), "cannot read " .. path))
end

-- True when the command exits 0 (os.execute differs between 5.1 and 5.2+).
function util.run(cmd)
  local a, _, c = os.execute(cmd .. " >/dev/null 2>&1")
  if type(a) == "number" then return a == 0 end
  return a == true and c == 0
end

-- s as one word for the shell.
function util.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The command's standard output (standard error dropped).
function util.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>/dev/null"))
  local out = p:read("*a")
  p:close()
  return out
end

-- The TCP ports some socket on this machine holds now (listening or connected, IPv4 and IPv6).
local function used_ports()
  local used = {}
  for _, file in ipairs({"/proc/net/tcp", "/proc/net/tcp6"}) do
    local s = util.try_readfile(file)
    if s then
      for port in s:gmatch("\n%s*%d+: %x+:(%x+) ") do used[tonumber(port, 16)] = true end
    end
  end
  return used
end

local port_seq -- this process's own sequence (MINSTD, exact in LuaJIT's doubles too)

-- A TCP port nothing on this machine holds now, from [lo, hi] (default 20000-32767, below
-- Linux's ephemeral range, so outgoing connections do not take it meanwhile). The draw is
-- seeded with this process's pid and the time: unseeded math.random gives every LuaJIT
-- process the same ports, and with nginx's reuseport two servers on one port both start.
-- Another process can still take it before it is bound: callers retry on a failed bind.
function util.free_port(lo, hi)
  lo, hi = lo or 20000, hi or 32767
  if not port_seq then
    local pid = tonumber(((util.try_readfile("/proc/self/stat") or ""):match("^(%d+)"))) or 0
    port_seq = (pid * 7919 + os.time()) % 2147483646 + 1
  end
  local used = used_ports()
  for _ = 1, 1000 do
    port_seq = port_seq * 48271 % 2147483647
    local port = lo + port_seq % (hi - lo + 1)
    if not used[port] then return port end
  end
  error(("no free port in %d-%d"):format(lo, hi))
end

-- How many emulator log entries have this kind (and status, when given).
function util.log_count(emu, kind, status)
  local n = 0
  for _, e in ipairs(emu:log()) do
    if e.kind == kind and (not status or e.status == status) then n = n + 1 end
  end
  return n
end

return util
