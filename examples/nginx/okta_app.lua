-- The Lua side of examples/nginx/nginx.conf:
--   init_worker()  checks the OKTA_* environment, makes this worker's oktadpop.resty client
--                  (loading the keys as the worker user) and fetches the token in a timer;
--   list_users()   GET /admin/users?q= -> the org's users as JSON;
--   protect()      the DPoP guard in front of your own API.
-- The token, the nonces and the rate-limit budget live in the shared dict "oktadpop", so N
-- workers make one token request and share one budget. Every worker loads the same DPoP key,
-- to which the token is bound. With OKTA_REDIS_URL set they live in that Redis instead, with
-- the guard's replay records: every node and job host on it shares one token, one budget and
-- one replay cache (README, "Running a fleet").
local resty = require "oktadpop.resty"
local guard = require "oktadpop.resty.guard"
local cjson = require "cjson.safe"

local _M = {}
local MAX_USERS = 1000 -- one response's worth; a bigger export belongs in a script, not a request
local client, setup_error, store, store_error

local function env(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then return default end
  return value
end

local function missing(name)
  return name .. " is not set: export it before starting nginx (nginx.conf passes it to the "
    .. "workers with `env " .. name .. ";`)"
end

local function key_file(name)
  return ngx.config.prefix() .. "examples/nginx/keys/" .. name
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
end

local function prefetch(premature)
  if premature then return end
  local token, err = client:token()
  if not token then ngx.log(ngx.WARN, "okta_app: token prefetch failed (requests will retry): ", tostring(err)) end
end

function _M.init_worker()
  if env("OKTA_REDIS_URL") then -- one store per worker, made once; its password goes to AUTH only
    local err
    store, err = resty.redis_store{url = env("OKTA_REDIS_URL"), timeout = 0.5, pool_size = 32}
    if not store then store_error = "OKTA_REDIS_URL: " .. tostring(err) end
  end
  local org, id = env("OKTA_ORG_URL"), env("OKTA_CLIENT_ID")
  if store_error then setup_error = store_error
  elseif not org then setup_error = missing("OKTA_ORG_URL")
  elseif not id then setup_error = missing("OKTA_CLIENT_ID")
  else
    local err
    client, err = resty.new{org_url = org, client_id = id, scopes = env("OKTA_SCOPES", "okta.users.read"),
      private_key = key_file("cc.pem"), kid = env("OKTA_CLIENT_KEYID"), dpop_key = key_file("dpop.pem"),
      shared_dict = not store and "oktadpop" or nil, store = store,
      debug = function(line) ngx.log(ngx.INFO, "oktadpop: ", line) end} -- the log never holds a secret
    if not client then setup_error = tostring(err) end
  end
  if setup_error then
    ngx.log(ngx.ERR, "okta_app: ", setup_error)
    return
  end
  ngx.timer.at(0, prefetch)
end

function _M.list_users()
  if not client then return reply(500, {error = "okta_app is not configured: " .. tostring(setup_error)}) end
  local users = {}
  local ok, err = pcall(function()
    local q = ngx.req.get_uri_args().q -- decoded once here; the client encodes it once for Okta
    if type(q) == "table" then q = q[1] end -- ?q=a&q=b: the first
    for user in client.users:list{q = type(q) == "string" and q or nil, limit = 200} do
      users[#users + 1] = {id = user.id, login = user.profile.login, status = user.status}
      if #users == MAX_USERS then break end
    end
  end)
  if not ok then
    ngx.log(ngx.ERR, "okta_app: ", tostring(err))
    return reply(502, {error = type(err) == "table" and err.message or "upstream error"})
  end
  reply(200, users)
end

function _M.protect()
  local issuer = env("OKTA_API_ISSUER")
  -- a fleet whose Redis store could not be made must not fall back to this node's replay records
  if not issuer or store_error then -- JSON, like the guard's own answers: never nginx's HTML page
    ngx.log(ngx.ERR, "okta_app: ", store_error or missing("OKTA_API_ISSUER"))
    reply(500, {error = "server_error"})
    return ngx.exit(ngx.HTTP_OK) -- the answer is sent: exit(500) now would only log an error
  end
  -- The origin your clients sign for: configuration, never the Host header. Behind TLS or a
  -- proxy, set OKTA_API_ORIGIN to the public https origin.
  guard.protect{issuer = issuer, audience = env("OKTA_API_AUDIENCE", "api://default"),
    origin = env("OKTA_API_ORIGIN", "http://127.0.0.1:8080"), replay_dict = not store and "dpop_replay" or nil,
    replay_store = store, cache_dict = "okta_guard", max_age = 60}
end

return _M
