-- oktadpop.resty.guard: protect your own API with DPoP in access_by_lua_block. Verifies the
-- access token (a JWT) against a JWKS, then the DPoP proof per RFC 9449 section 4.3: htm,
-- htu, iat, ath, the token's cnf.jkt, and jti replay across all workers in a shared dict.
-- On success the verified claims and jkt are in ngx.ctx.oktadpop; on failure the request
-- ends with 401 and WWW-Authenticate: DPoP error="...".
local oktadpop = require "oktadpop"
local cjson = require "cjson.safe"

local ngx = ngx
local type, pairs = type, pairs

local _M = {}

local ALGS = 'algs="ES256 ES384 ES512 RS256 RS384 RS512"'
local jwks_cache = {} -- per worker: a JWKS file is read once, not per request

local function load_jwks(src)
  if type(src) == "table" then return src end
  local cached = jwks_cache[src]
  if cached then return cached end
  local f, err = io.open(src, "rb")
  if not f then return nil, "cannot read JWKS file: " .. tostring(err) end
  local text = f:read("*a")
  f:close()
  local jwks = cjson.decode(text)
  if type(jwks) ~= "table" then return nil, "JWKS file is not JSON" end
  jwks_cache[src] = jwks
  return jwks
end

-- Key objects loaded from a JWKS, per token kid: importing a JWK costs more than verifying with
-- it (RS256: 78 µs per verify_jwt with the JWKS, 35 µs with the key). Only keys that load are
-- kept, so tokens with made-up kids cannot grow the cache.
local key_cache = setmetatable({}, {__mode = "k"})
local function verification_key(jwks, token)
  local header = oktadpop.decode_jwt(token)
  local kid = type(header) == "table" and type(header.kid) == "string" and header.kid or false
  local keys = key_cache[jwks]
  if not keys then
    keys = {}
    key_cache[jwks] = keys
  end
  if not keys[kid] then keys[kid] = oktadpop.load_key(jwks, kid and {kid = kid} or nil) end
  return keys[kid] or jwks -- none: verify_jwt searches the JWKS itself and says why it failed
end

local function quote(s)
  return (tostring(s):gsub('[\\"]', "\\%0"):gsub("[%c]", " "))
end

local function deny(code, description)
  ngx.header["WWW-Authenticate"] = 'DPoP ' .. ALGS .. ', error="' .. code .. '", error_description="' .. quote(description) .. '"'
  ngx.header["Cache-Control"] = "no-store"
  return ngx.exit(ngx.HTTP_UNAUTHORIZED)
end

-- The URL the client signed: opts.origin (set it behind a proxy), else this server's own
-- name when server_name is a plain name, else the Host header; then the request path
-- (verify_dpop_proof normalises it and drops the query).
local function request_htu(opts)
  local origin = opts.origin
  if not origin then
    local name, scheme = ngx.var.server_name, ngx.var.scheme
    local host = ngx.var.http_host or ngx.var.host
    if name and name ~= "" and name ~= "_" and not name:find("[~*]") then
      local port = ngx.var.server_port
      host = (port == (scheme == "https" and "443" or "80")) and name or (name .. ":" .. port)
    end
    origin = scheme .. "://" .. host
  end
  return origin .. ngx.var.request_uri
end

-- require("oktadpop.resty.guard").protect{jwks=, issuer=, audience=, replay_dict=, max_age=60,
--   leeway=10, origin=} -- returns on success; ends the request with 401 otherwise.
function _M.protect(opts)
  local jwks, err = load_jwks(opts.jwks)
  if not jwks then
    ngx.log(ngx.ERR, "oktadpop guard: ", err)
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  local replay = ngx.shared[opts.replay_dict or ""]
  if not replay then
    ngx.log(ngx.ERR, "oktadpop guard: no lua_shared_dict named ", tostring(opts.replay_dict))
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  local max_age, leeway = opts.max_age or 60, opts.leeway or 10

  local headers = ngx.req.get_headers()
  local auth = headers["authorization"]
  if type(auth) == "table" then return deny("invalid_request", "more than one Authorization header") end
  if not auth then
    ngx.header["WWW-Authenticate"] = "DPoP " .. ALGS
    return ngx.exit(ngx.HTTP_UNAUTHORIZED)
  end
  local scheme, token = auth:match("^(%S+)%s+(%S+)%s*$")
  if not scheme then return deny("invalid_request", "malformed Authorization header") end

  local claims, verr = oktadpop.verify_jwt(token, verification_key(jwks, token), {issuer = opts.issuer, audience = opts.audience, leeway = leeway})
  if not claims then return deny("invalid_token", verr.message) end
  if type(claims.exp) ~= "number" then return deny("invalid_token", "the access token has no exp") end
  local jkt = type(claims.cnf) == "table" and claims.cnf.jkt
  if type(jkt) ~= "string" then return deny("invalid_token", "the access token is not DPoP-bound (no cnf.jkt)") end
  if scheme:lower() ~= "dpop" then
    return deny("invalid_token", "a DPoP-bound access token must be sent with the DPoP scheme")
  end

  local proof = headers["dpop"]
  if type(proof) == "table" then return deny("invalid_dpop_proof", "more than one DPoP header") end
  if not proof then return deny("invalid_dpop_proof", "missing DPoP proof") end

  local ttl = max_age + 2 * leeway -- a jti older than this is refused by iat anyway
  local pclaims, perr = oktadpop.verify_dpop_proof(proof, {
    htm = ngx.req.get_method(), htu = request_htu(opts), access_token = token, jkt = jkt,
    max_age = max_age, leeway = leeway,
    -- safe_add never evicts a live jti to make room; a full dict answers "no memory",
    -- which counts as seen: fail closed. (Size the dict for max_age seconds of proofs.)
    jti_seen = function(jti)
      return not replay:safe_add("jti:" .. jti, true, ttl)
    end,
  })
  if not pclaims then return deny(perr.code or "invalid_dpop_proof", perr.message) end

  ngx.ctx.oktadpop = {claims = claims, jkt = jkt, proof = pclaims}
end

return _M
