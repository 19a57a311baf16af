-- spec/support/kidflood.lua: a wrk script for the guard's key cache. Every request carries an
-- access token whose header names a made-up kid of about KID_BYTES (6 KB), a different one each
-- time (a counter at its end), so no cache may keep them; the guard refuses each one before any
-- signature check. wrk -t1 -c4 -d2s -s spec/support/kidflood.lua URL -- FIRST_COUNTER [KID_BYTES]
local b64url = require("spec.support.util").b64url -- wrk runs from the repository root

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
