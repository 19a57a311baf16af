-- bench/guardwrk.lua: a wrk script for the guard's rows. Every request carries the access token
-- and the next proof of the pool made by bench/guardpool.lua (a fresh jti each time until the
-- pool runs out; bench/guard sizes it above what one signature check per request allows).
-- wrk -t1 -c1 -d3s -s bench/guardwrk.lua URL -- TOKEN_FILE PROOFS_FILE
local requests, i

-- every request is formatted here, before the clock starts: wrk's own work per request is then
-- the same small step for the plain location and the guarded one
function init(args)
  local f = assert(io.open(args[1]))
  local auth = "DPoP " .. f:read("*l")
  f:close()
  requests, i = {}, 0
  for proof in io.lines(args[2]) do
    requests[#requests + 1] = wrk.format("GET", wrk.path, {Authorization = auth, DPoP = proof})
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
