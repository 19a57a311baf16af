-- bench/guardwrk.lua: a wrk script for the guard's rows. Every request carries the access token
-- and the next proof of the pool made by bench/guardpool.lua (a fresh jti each time until the
-- pool runs out; bench/guard sizes it above what one signature check per request allows).
-- wrk -t1 -c1 -d3s -s bench/guardwrk.lua URL -- TOKEN_FILE PROOFS_FILE
local requests, i

-- LuaJIT hashes a long string from four samples (its start, a quarter, the middle, the end):
-- tens of thousands of requests that agree there fall into one hash chain and init takes
-- minutes. So each request is laid out by hand (no header order from pairs()) and padded until
-- its quarter point falls inside the proof's signature, which no two proofs share.
local function layout(host, auth, proof)
  local head = "GET " .. wrk.path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nDPoP: "
  local tail = "\r\nAuthorization: " .. auth .. "\r\nX-Pad: "
  local sig_mid = #head + #proof - 40                       -- 0-based offset inside the signature
  local pad = 4 * (sig_mid + 1) - (#head + #proof + #tail + 4)  -- LuaJIT samples at len/4 - 1
  assert(pad >= 0, "guardwrk: the request is too long for its quarter point to reach the proof")
  return head, tail .. ("p"):rep(pad) .. "\r\n\r\n"
end

-- every request is formatted here, before the clock starts: wrk's own work per request is then
-- the same small step for the plain location and the guarded one
function init(args)
  local f = assert(io.open(args[1]))
  local auth = "DPoP " .. f:read("*l")
  f:close()
  local head, tail
  requests, i = {}, 0
  for proof in io.lines(args[2]) do
    if not head then head, tail = layout(wrk.headers.Host, auth, proof) end
    requests[#requests + 1] = head .. proof .. tail
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end

-- GUARD_WRK_DEBUG=1: the first refusals' bodies on stderr (slows wrk: not for measuring)
if os.getenv("GUARD_WRK_DEBUG") then
  local shown = 0
  function response(status, headers, body)
    if status ~= 200 and shown < 3 then shown = shown + 1; io.stderr:write(status, " ", body, "\n") end
  end
end
