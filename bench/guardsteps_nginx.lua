-- bench/guardsteps_nginx.lua: the guard's per-request steps timed inside the nginx worker (µs
-- per call, CPU time, each step alone in a loop over the same request), for bench/guard's
-- /steps location: content_by_lua_file. Works with older guards too (a step they lack is skipped).
local oktadpop = require "oktadpop"
local guard = require "oktadpop.resty.guard"
local N = 3000

local opts = {jwks = ngx.var.guard_jwks, issuer = "https://issuer.bench/oauth2/default", audience = "api://bench",
              replay_dict = "replay", origin = "http://api.bench"}
local g = assert(guard.new(opts))
local function step(name, fn)
  fn()
  local c0 = os.clock()
  for _ = 1, N do fn() end
  ngx.say("step.", name, " ", string.format("%.2f", (os.clock() - c0) / N * 1e6))
end

local headers = ngx.req.get_headers(0)
local auth, proof = headers.authorization, headers.dpop
local token = auth:match("^%S+%s+(%S+)")
local now = ngx.now()
local claims, _, jkt = g:token(auth, now)
jkt = jkt or claims.jkt -- the old guard answers claims, token, jkt; the new one its cache entry
step("get_headers", function() headers = ngx.req.get_headers(0) end)
step("uri_method", function() return ngx.var.uri, ngx.req.get_method() end)
step("ath", function() return oktadpop.ath(token) end)
step("token", function() return g:token(auth, now) end)
local popts = {htm = "GET", htu = "http://api.bench/guarded", access_token = token, jkt = jkt, now = now, max_age = 60, leeway = 5}
step("verify_dpop_proof", function() return assert(oktadpop.verify_dpop_proof(proof, popts)) end)
if oktadpop.key_cache then
  local cached = {htm = "GET", htu = "http://api.bench/guarded", ath = oktadpop.ath(token), jkt = jkt, now = now,
                  max_age = 60, leeway = 5, key_cache = oktadpop.key_cache(16)}
  step("verify_dpop_proof_cached", function() return assert(oktadpop.verify_dpop_proof(proof, cached)) end)
end
local i = 0
step("replay_add", function() i = i + 1 return ngx.shared.replay:add("steps:" .. i, true, 60) end)
step("ctx", function() ngx.ctx.oktadpop = {claims = claims, jkt = jkt, proof = claims} end)
