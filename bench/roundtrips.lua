-- bench/roundtrips.lua: HTTP round trips per token acquisition, read from the Okta emulator's
-- request log (spec/support/emulator.lua starts it; DPoP required, a nonce on every token call).
package.path = "bench/?.lua;./?.lua;" .. package.path
local oktadpop = require "oktadpop"
local lib = require "lib"
local emulator = require "spec.support.emulator"

local CLIENT_ID = "0oabench000000000000"
local cc = lib.key(oktadpop, "RS256", "cc")
local emu = emulator.start { tls = false, verbose = false, config = {
  users = 3,
  clients = { { client_id = CLIENT_ID, jwks = { keys = { cc:public_jwk() } }, dpop_required = true,
                scopes = { "okta.users.read" } } },
} }
local ok, err = pcall(function()
  local function tokens()
    local n = 0
    for _, e in ipairs(emu:log()) do if e.kind == "token" then n = n + 1 end end
    return n
  end
  local client = assert(oktadpop.new { org_url = emu.url, client_id = CLIENT_ID,
    scopes = "okta.users.read", private_key = cc, dpop_key = lib.key(oktadpop, "ES256") })
  emu:reset()
  assert(client:token())
  lib.out("oktadpop_cold", tokens())
  assert(client:get("/api/v1/users"))
  for i = 1, 3 do
    emu:reset()
    assert(client:token(true))
    lib.out("oktadpop_renewal" .. i, tokens())
  end
  assert(client:get("/api/v1/users"))
  client:close()

  -- the Node peers, each in its own process, reading the same log
  local keys = os.getenv("BENCH_KEYS")
  local env = string.format("EMU_URL='%s' CLIENT_ID='%s' CC_KEY='%s/cc.pem' DPOP_KEY='%s/rs256.pem' DPOP_JWK='%s/rs256.pub.json' ",
    emu.url, CLIENT_ID, keys, keys, keys)
  for _, who in ipairs { "seed", "sdk" } do
    local p = assert(io.popen(env .. "node bench/node/token_flows.mjs " .. who .. " 2>&1"))
    for line in p:lines() do
      local k, v = line:match("^(%S+) (.*)$")
      if k then lib.out(who .. "_" .. k, v) else io.stderr:write("token_flows ", who, ": ", line, "\n") end
    end
    p:close()
  end
end)
emu:stop()
if not ok then error(err, 0) end
