-- spec/support/kidflood.lua: a wrk script for the guard's key cache. Every request carries an
-- access token whose header names a made-up kid of about KID_BYTES (6 KB), a different one each
-- time (a counter at its end), so no cache may keep them; the guard refuses each one before any
-- signature check. wrk -t1 -c4 -d2s -s spec/support/kidflood.lua URL -- FIRST_COUNTER [KID_BYTES]
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

local function b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    for j = 1, (c and 4 or b and 3 or 2) do
      local v = math.floor(n / 64 ^ (4 - j)) % 64
      out[#out + 1] = ALPHABET:sub(v + 1, v + 1)
    end
  end
  return table.concat(out)
end

local head_b64, counter

function init(args)
  counter = tonumber(args[1] or "0")
  local bytes = tonumber(args[2] or "6144")
  local head = '{"alg":"RS256","kid":"' .. ("k"):rep(bytes - 12)
  head = head .. ("k"):rep((3 - #head % 3) % 3) -- a whole number of base64 groups: the rest appends
  head_b64 = b64url(head)
end

function request()
  counter = counter + 1
  local token = head_b64 .. b64url(string.format("%012d", counter) .. '"}') .. ".e30.c2lnbmF0dXJl"
  return wrk.format("GET", wrk.path, {Authorization = "DPoP " .. token, DPoP = "e30.e30.c2ln"})
end
