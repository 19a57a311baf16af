--- oktadpop.resty.guard: protect your own API with DPoP in access_by_lua. Verifies the access
-- token (a JWT) against the authorization server's keys, then the DPoP proof (RFC 9449
-- section 4.3): htm, htu against the configured origin, iat, ath, the token's cnf.jkt, one
-- DPoP header exactly, and jti replay across all workers; optionally required scopes (RFC 6750
-- section 3.1) and server nonces (RFC 9449 section 9). On success the verified claims are in
-- ngx.ctx.oktadpop; on failure the request ends with 401 (or 403 for scopes) and a
-- WWW-Authenticate: DPoP challenge, with a small JSON body, never an HTML page. Per worker, a
-- verified token is kept by its SHA-256 until exp, and a proof's key by its thumbprint.
-- @module oktadpop.resty.guard
local oktadpop = require "oktadpop"
local cjson = require "cjson.safe"
local http = require "oktadpop.resty.http"
local lrucache = require "resty.lrucache" -- with every nginx Lua module (Debian's depends on it; OpenResty bundles it)

local ngx = ngx
local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local floor, ceil = math.floor, math.ceil

local _M = {}

local ALGS = 'algs="ES256 ES384 ES512 RS256 RS384 RS512"'
local DEFAULTS = {max_age = 60, leeway = 5, refetch_interval = 60, jwks_ttl = 3600, nonce_lifetime = 300,
                  token_cache_size = 2048, key_cache_size = 256}
local OPTIONS = {jwks = true, jwks_uri = true, issuer = true, audience = true, required_scopes = true,
                 replay_dict = true, replay_store = true, cache_dict = true, nonce_dict = true, origin = true,
                 max_age = true, leeway = true, refetch_interval = true, jwks_ttl = true, nonce_lifetime = true,
                 clock = true, token_cache_size = true, key_cache_size = true}
local guards = {} -- a checked guard per distinct options, per worker
local MAX_JWKS_KEYS = 100 -- keys imported from one JWKS; far above any authorization server's
local UNKNOWN_KIDS = 64 -- kids the fetched JWKS lacks, remembered so a repeated one costs no refetch check

local function quote(s)
  return '"' .. (tostring(s):gsub('[\\"]', "\\%0"):gsub("%c", " ")) .. '"'
end

-- Ends the request: status 401 (403 for scopes) with a DPoP challenge and a JSON body.
local function deny(g, status, code, description, extra)
  local challenge = "DPoP " .. ALGS
  if code then challenge = challenge .. ", error=" .. quote(code) .. ", error_description=" .. quote(description) end
  if extra then challenge = challenge .. ", " .. extra end
  ngx.status = status
  ngx.header["WWW-Authenticate"] = challenge
  ngx.header["Cache-Control"] = "no-store"
  if g and g.nonce_for and code == "use_dpop_nonce" then ngx.header["DPoP-Nonce"] = g:nonce_for(ngx.now()) end
  if code then
    ngx.header["Content-Type"] = "application/json"
    ngx.print(cjson.encode{error = code, error_description = description})
  else
    ngx.header["Content-Length"] = 0
    ngx.send_headers()
  end
  return ngx.exit(ngx.HTTP_OK) -- the answer is sent: nginx adds no error page

end

-- Ends the request with 500 in the shape of the 401s (JSON, never nginx's HTML page); the error
-- log names what is wrong, the client learns only that the server is misconfigured.
local function misconfigured(message)
  ngx.log(ngx.ERR, "oktadpop guard: misconfigured: ", message)
  ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.print(cjson.encode{error = "server_error", error_description = "the DPoP guard is misconfigured: see the error log"})
  return ngx.exit(ngx.HTTP_OK) -- the answer is sent: nginx adds no error page
end

-- The origin the client signed for: configuration, never request input. opts.origin, else
-- this server's own name when server_name is one plain name; a wildcard, regex, "_" or empty
-- name refuses to run (the Host header would decide the htu, and could cut its path off).
local function configured_origin(opts)
  if opts.origin then return opts.origin end
  local name = ngx.var.server_name
  if not name or name == "" or name == "_" or name:find("[~*%s]") then return nil end
  local scheme, port = ngx.var.scheme, ngx.var.server_port
  local default = scheme == "https" and "443" or "80"
  return scheme .. "://" .. name .. (port == default and "" or (":" .. port))
end

-- ---- keys: a static JWKS, or fetched from jwks_uri (or the issuer's metadata) ----

local Guard = {}
Guard.__index = Guard

local function read_jwks_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot read JWKS file: " .. tostring(err) end
  local text = f:read(1024 * 1024)
  f:close()
  local jwks = cjson.decode(text or "")
  if type(jwks) ~= "table" or type(jwks.keys) ~= "table" then return nil, "the JWKS file holds no keys" end
  return jwks
end

-- GET url (no credentials) with the bounded cosocket client; the decoded JSON object. Keys come
-- over verified TLS only (plain http for loopback hosts, for tests).
local function fetch_json(url)
  local scheme, host = http.parse_url(url)
  if scheme ~= "https" and not (scheme == "http" and (host == "127.0.0.1" or host == "localhost" or host == "::1")) then
    return nil, url .. ": the authorization server must be reached over https"
  end
  local res = http.transport{max_body = 1024 * 1024, connect_timeout = 5, timeout = 10}{
    method = "GET", url = url, headers = {Accept = "application/json", ["User-Agent"] = "oktadpop-guard/" .. oktadpop._VERSION}}
  if res.error then return nil, res.error.message end -- "GET <url> failed: <why>"
  if res.status ~= 200 then return nil, url .. ": HTTP " .. res.status end
  local doc = cjson.decode(res.body)
  if type(doc) ~= "table" then return nil, url .. ": not a JSON object" end
  return doc
end

-- Two URLs share scheme, host and port.
local function same_origin(a, b)
  local s1, h1, p1 = http.parse_url(a)
  local s2, h2, p2 = http.parse_url(b)
  return s1 ~= nil and s1 == s2 and h1:lower() == h2:lower() and p1 == p2
end

-- The JWKS URL: configured, or from the issuer's metadata, where it must be on the issuer's own
-- origin (metadata that names another host could hand the guard keys from anywhere).
function Guard:jwks_uri()
  if self.opts.jwks_uri then return self.opts.jwks_uri end
  local cache = self.cache
  local uri = cache:get(self.prefix .. "jwks_uri")
  if uri then return uri end
  local meta, err = fetch_json(self.opts.issuer .. "/.well-known/oauth-authorization-server")
  if not meta then return nil, err end
  if type(meta.jwks_uri) ~= "string" or meta.issuer ~= self.opts.issuer then
    return nil, "the issuer's metadata has no jwks_uri, or names another issuer"
  end
  if not same_origin(meta.jwks_uri, self.opts.issuer) then
    return nil, "the issuer's metadata names jwks_uri " .. quote(meta.jwks_uri) .. ", not on the issuer's origin " ..
      "(set jwks_uri= to use it)"
  end
  cache:set(self.prefix .. "jwks_uri", meta.jwks_uri, self.opts.jwks_ttl)
  return meta.jwks_uri
end

-- Fetches the JWKS into the cache dict: at most once per refetch_interval for all workers,
-- so a flood of tokens with made-up kids cannot hammer the authorization server. A worker that
-- finds a fetch under way waits for it (a rotated key is accepted by everyone at once); one that
-- finds a recent fetch gives up at once (a made-up kid waits for nothing).
function Guard:refetch()
  local cache = self.cache
  if not cache:add(self.prefix .. "refetched", true, self.opts.refetch_interval) then
    for _ = 1, 60 do
      if not cache:get(self.prefix .. "fetching") then break end
      ngx.sleep(0.05)
    end
    return false
  end
  cache:set(self.prefix .. "fetching", true, 15)
  local uri, err = self:jwks_uri()
  local jwks
  if uri then jwks, err = fetch_json(uri) end
  if jwks and type(jwks.keys) ~= "table" then jwks, err = nil, uri .. ": the document has no keys" end
  cache:delete(self.prefix .. "fetching")
  if not jwks then
    ngx.log(ngx.ERR, "oktadpop guard: cannot fetch the JWKS: ", tostring(err))
    return false
  end
  cache:set(self.prefix .. "jwks", cjson.encode(jwks), self.opts.jwks_ttl)
  cache:incr(self.prefix .. "jwks_version", 1, 0)
  return true
end

-- The JWKS's keys by kid (false: the one key of a one-key JWKS, for tokens without a kid).
-- Entries come from the issuer's keys only, never from what a request names; a key whose JWK is
-- unchanged keeps its object across refetches.
local function index_keys(jwks, previous)
  local index, list = {}, jwks.keys
  for i = 1, math.min(#list, MAX_JWKS_KEYS) do
    local jwk = list[i]
    local key = type(jwk) == "table" and oktadpop.load_key(jwk)
    if key then
      local old = previous and previous[key.kid or false]
      if old and old.alg == key.alg and old:thumbprint() == key:thumbprint() then key = old end
      if key.kid then index[key.kid] = key end
      if #list == 1 then index[false] = key end
    end
  end
  return index
end

-- The current keys: the static JWKS's, or the fetched one's (fetched when there is none),
-- indexed again only when another fetch has replaced it.
function Guard:keys()
  if self.static then return self.index end
  local version = self.cache:get(self.version_key) or 0
  if self.index and self.index_version == version then return self.index end
  local text = self.cache:get(self.prefix .. "jwks")
  if not text then
    self:refetch()
    text = self.cache:get(self.prefix .. "jwks")
    version = self.cache:get(self.version_key) or 0
  end
  local jwks = text and cjson.decode(text)
  if type(jwks) ~= "table" or type(jwks.keys) ~= "table" then return nil end
  self.index, self.index_version = index_keys(jwks, self.index), version
  self.unknown:flush_all()
  return self.index
end

-- The key for a token's kid, and the kid (false when the token names none). A kid the fetched JWKS lacks refetches it (at most once per
-- refetch_interval for all workers), so a rotated key is accepted without a reload; after that
-- fetch the kid is remembered as unknown in a small LRU until the next refetch may happen, so
-- made-up kids cost neither memory nor the shared dict.
function Guard:key_for(token)
  local _, header = oktadpop.decode_jwt(token)
  if not header then return nil end
  local kid = type(header.kid) == "string" and header.kid or false
  local index = self:keys()
  if not index then return nil end
  local key = index[kid]
  if key or self.static or self.unknown:get(kid) then return key, kid end
  self:refetch() -- ours, or one under way in another worker: either way, look again
  index = self:keys()
  key = index and index[kid]
  if index and not key then self.unknown:set(kid, true, self.opts.refetch_interval) end
  return key, kid
end

-- ---- nonces (RFC 9449 section 9): one per nonce_lifetime slot, the previous one still good ----

function Guard:nonce_for(now)
  local slot = floor(now / self.opts.nonce_lifetime)
  local key = "nonce:" .. slot
  local nonce = self.nonces:get(key)
  if nonce then return nonce end
  self.nonces:add(key, oktadpop.random(24), 2 * self.opts.nonce_lifetime)
  return self.nonces:get(key)
end

function Guard:nonce_ok(nonce, now)
  if type(nonce) ~= "string" then return false end
  local slot = floor(now / self.opts.nonce_lifetime)
  return nonce == self.nonces:get("nonce:" .. slot) or nonce == self.nonces:get("nonce:" .. (slot - 1))
end

-- ---- construction: every option checked once, before any request is judged ----

local function dict(name, what)
  if name == nil then return nil end
  local d = ngx.shared[name]
  if not d then return nil, "no lua_shared_dict named " .. tostring(name) .. " (" .. what .. ")" end
  return d
end

--- A checked guard: guard.new(opts) -> guard | nil, err. opts: issuer (required), audience,
-- jwks (a table or file) or jwks_uri (else the issuer's metadata) with cache_dict, replay_dict
-- or replay_store, origin, max_age (60), leeway (5), required_scopes, nonce_dict,
-- nonce_lifetime (300), refetch_interval (60), jwks_ttl (3600), token_cache_size (2048),
-- key_cache_size (256), clock.
-- @function new
function _M.new(opts)
  if type(opts) ~= "table" then return nil, "guard options must be a table" end
  for k in pairs(opts) do if not OPTIONS[k] then return nil, "unknown guard option " .. tostring(k) end end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = opts[k] or v end
  for k, v in pairs(opts) do o[k] = v end
  for k in pairs(DEFAULTS) do
    if type(o[k]) ~= "number" or o[k] < 0 or o[k] ~= o[k] or o[k] == math.huge then return nil, k .. " must be a number" end
  end
  if o.max_age < 1 then return nil, "max_age must be at least 1" end
  for _, k in ipairs{"token_cache_size", "key_cache_size"} do
    if o[k] < 1 or o[k] > 1e6 or o[k] % 1 ~= 0 then return nil, k .. " must be a whole number from 1 to 1000000" end
  end
  if type(o.issuer) ~= "string" then return nil, "issuer is required (the authorization server's issuer URL)" end
  local g = setmetatable({opts = o}, Guard)
  local err
  if o.jwks then
    if type(o.jwks) == "table" then g.static = o.jwks else g.static, err = read_jwks_file(o.jwks) end
    if not g.static then return nil, err end
    if type(g.static.keys) ~= "table" then g.static = {keys = {g.static}} end -- one JWK: a JWKS of one key
    g.index = index_keys(g.static)
  else
    g.cache, err = dict(o.cache_dict, "cache_dict: the fetched JWKS")
    if not g.cache then return nil, err or "jwks_uri or issuer discovery needs cache_dict" end
    g.unknown = lrucache.new(UNKNOWN_KIDS)
    g.prefix = (o.jwks_uri or o.issuer) .. " " -- guards of other issuers may share the dict
    g.version_key = g.prefix .. "jwks_version"
  end
  g.replay = o.replay_store
  if not g.replay then
    g.replay, err = dict(o.replay_dict, "replay_dict: the jti of accepted proofs")
    if not g.replay then return nil, err or "replay_dict (or replay_store) is required" end
  end
  if o.nonce_dict then
    g.nonces, err = dict(o.nonce_dict, "nonce_dict: server nonces")
    if not g.nonces then return nil, err end
  else
    g.nonce_for = false
  end
  if o.required_scopes ~= nil and type(o.required_scopes) ~= "table" then return nil, "required_scopes must be a list" end
  if o.clock ~= nil and type(o.clock) ~= "function" then return nil, "clock must be a function returning epoch seconds" end
  g.clock = o.clock or function() ngx.update_time() return ngx.now() end
  g.tokens = lrucache.new(o.token_cache_size)
  g.proof_keys = oktadpop.key_cache(o.key_cache_size)
  -- verify_dpop_proof's options, filled in per request: no table made on the hot path
  g.proof_opts = {htm = "GET", htu = "", ath = "", jkt = "", max_age = o.max_age, leeway = o.leeway, now = 0,
                  key_cache = g.proof_keys}
  return g
end

-- ---- one request ----

-- The one Authorization and the one DPoP header; all headers are read (no 100-header cap).
local function credentials()
  local headers = ngx.req.get_headers(0)
  return headers["authorization"], headers["dpop"]
end

local function has_scopes(claims, required)
  if not required or #required == 0 then return true end
  local granted = {}
  if type(claims.scp) == "table" then for _, s in ipairs(claims.scp) do granted[s] = true end end
  if type(claims.scope) == "string" then for s in claims.scope:gmatch("%S+") do granted[s] = true end end
  for _, s in ipairs(required) do if not granted[s] then return false end end
  return true
end

-- Verifies a token the cache does not hold; its entry, kept until exp (never longer) when it
-- passes: the claims, cnf.jkt, the hash that keys it (the proof's ath), the key that signed it.
function Guard:verify_token(token, ath, now)
  local key, kid = self:key_for(token)
  if not key then return nil, "invalid_token", "no key of the authorization server matches the token" end
  local claims, err = oktadpop.verify_jwt(token, key, {issuer = self.opts.issuer, audience = self.opts.audience,
                                                        leeway = self.opts.leeway, now = now})
  if not claims then return nil, "invalid_token", err.message end
  if type(claims.exp) ~= "number" then return nil, "invalid_token", "the access token has no exp" end
  local jkt = type(claims.cnf) == "table" and claims.cnf.jkt
  if type(jkt) ~= "string" then return nil, "invalid_token", "the access token is not DPoP-bound (no cnf.jkt)" end
  local entry = {claims = claims, jkt = jkt, ath = ath, exp = claims.exp, key = key, kid = kid,
                 scoped = has_scopes(claims, self.opts.required_scopes)}
  if now < claims.exp then self.tokens:set(ath, entry, claims.exp - now) end
  return entry
end

-- The token: a DPoP-bound JWT from the issuer, sent with the DPoP scheme. A verified token is
-- found by its SHA-256 until its exp, while the key that signed it is still the issuer's.
function Guard:token(auth, now)
  if type(auth) == "table" then return nil, "invalid_request", "more than one Authorization header" end
  local scheme, token = auth:match("^(%S+)%s+(%S+)%s*$")
  if not scheme then return nil, "invalid_request", "malformed Authorization header" end
  local ath = oktadpop.ath(token)
  local entry = self.tokens:get(ath)
  local index = entry and now <= entry.exp and self:keys()
  if not (index and index[entry.kid] == entry.key) then
    if entry then self.tokens:delete(ath) end
    local code, why
    entry, code, why = self:verify_token(token, ath, now)
    if not entry then return nil, code, why end
  end
  if scheme ~= "DPoP" and scheme:lower() ~= "dpop" then
    return nil, "invalid_token", "a DPoP-bound access token must be sent with the DPoP scheme"
  end
  return entry
end

-- Records the proof's jti for as long as the proof could be accepted: counted from its own
-- iat, rounded up, one second spare. A full store refuses (fails closed).
-- A store with replay_add (oktadpop's Redis stores) also refuses a proof older than its own
-- data, so a Redis that lost its data (a restart, an eviction) never accepts a replay. Answers
-- true, or false and why: "exists", "predates", or "store" (it failed: the caller fails closed).
function Guard:first_use(pclaims, now)
  local o = self.opts
  local ttl = ceil(pclaims.iat + o.max_age + o.leeway - now) + 1
  local replay, ok, err = self.replay, nil, nil
  if replay.replay_add then ok, err = replay:replay_add(pclaims.jti, ttl > 1 and ttl or 1, now, pclaims.iat)
  else ok, err = replay:add("jti:" .. pclaims.jti, true, ttl > 1 and ttl or 1) end
  if ok then return true end
  if err == "exists" or err == "predates" then return false, err end
  ngx.log(ngx.ERR, "oktadpop guard: replay store: ", tostring(type(err) == "table" and err.message or err))
  return false, "store"
end

-- The replay store could not answer: 503 with a JSON body, and no proof goes unchecked.
local function unavailable()
  ngx.status = 503
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.header["Retry-After"] = "1"
  ngx.print(cjson.encode{error = "temporarily_unavailable", error_description = "the replay cache cannot be reached"})
  return ngx.exit(ngx.HTTP_OK)
end

--- Runs the guard on this request (access phase): guard:protect().
-- @function guard:protect
function Guard:protect()
  local now = self.clock()
  local origin = configured_origin(self.opts)
  if not origin then return misconfigured("set origin= (server_name is not one plain name, and the Host header is not trusted)") end
  local auth, proof = credentials()
  if not auth then return deny(self, ngx.HTTP_UNAUTHORIZED) end
  local entry, code, why = self:token(auth, now)
  if not entry then return deny(self, ngx.HTTP_UNAUTHORIZED, code, why) end
  if type(proof) == "table" then return deny(self, 400, "invalid_dpop_proof", "more than one DPoP header") end
  if not proof then return deny(self, ngx.HTTP_UNAUTHORIZED, "invalid_dpop_proof", "missing DPoP proof") end
  local path = ngx.var.uri
  if path:sub(1, 1) ~= "/" then return deny(self, 400, "invalid_request", "the request path must start with /") end
  local o = self.proof_opts
  o.htm, o.htu, o.ath, o.jkt, o.now = ngx.req.get_method(), origin .. path, entry.ath, entry.jkt, now
  local pclaims, perr = oktadpop.verify_dpop_proof(proof, o)
  if not pclaims then return deny(self, ngx.HTTP_UNAUTHORIZED, perr.code or "invalid_dpop_proof", perr.message) end
  if self.nonces and not self:nonce_ok(pclaims.nonce, now) then
    return deny(self, ngx.HTTP_UNAUTHORIZED, "use_dpop_nonce", "Resource server requires nonce in DPoP proof")
  end
  local fresh, why = self:first_use(pclaims, now)
  if why == "store" then return unavailable() end
  if not fresh then
    return deny(self, ngx.HTTP_UNAUTHORIZED, "invalid_dpop_proof", why == "predates"
      and "the DPoP proof is older than the replay cache: make a new one" or "the DPoP proof has been used before")
  end
  if not entry.scoped then
    return deny(self, ngx.HTTP_FORBIDDEN, "insufficient_scope", "the access token lacks a required scope",
                "scope=" .. quote(table.concat(self.opts.required_scopes, " ")))
  end
  if self.nonces then ngx.header["DPoP-Nonce"] = self:nonce_for(now) end
  -- the claims table is the cached one, shared by every request with this token: read it only
  ngx.ctx.oktadpop = {claims = entry.claims, jkt = entry.jkt, proof = pclaims}
end

-- The options as a string, so that protect{...} (a new table per request) finds its guard.
local function options_key(opts)
  local parts = {}
  for k, v in pairs(opts) do
    if type(v) == "table" and k == "required_scopes" then v = table.concat(v, " ") end
    parts[#parts + 1] = tostring(k) .. "=" .. tostring(v)
  end
  table.sort(parts)
  return table.concat(parts, "\n")
end

--- The guard for these options (checked once per worker), run on this request:
-- require("oktadpop.resty.guard").protect(opts). A misconfiguration answers 500 and is logged.
-- A jwks table given inline is keyed by identity: pass the same table (a module's upvalue) or
-- a file path.
-- @function protect
function _M.protect(opts)
  local key = type(opts) == "table" and options_key(opts) or ""
  local g = guards[key]
  if not g then
    local err
    g, err = _M.new(opts)
    if not g then return misconfigured(err) end
    guards[key] = g
  end
  return g:protect()
end

return _M
