-- The admin endpoint of examples/nginx/nginx.conf: one oktadpop.resty client per worker,
-- created on first use; the token and nonces live in the shared dict, so N workers make
-- one token request. Every worker loads the same DPoP key, to which the token is bound.
local resty = require "oktadpop.resty"
local cjson = require "cjson.safe"

local _M = {}
local client

local function okta()
  if not client then
    client = assert(resty.new{
      org_url = os.getenv("OKTA_ORG_URL") or "https://your-org.okta.com",
      client_id = os.getenv("OKTA_CLIENT_ID") or "0oa...",
      scopes = "okta.users.read",
      private_key = "examples/nginx/cc_private_key.pem",
      dpop_key = "examples/nginx/dpop_private_key.pem",
      shared_dict = "oktadpop",
      debug = function(line) ngx.log(ngx.INFO, "oktadpop: ", line) end, -- never holds a secret
    })
  end
  return client
end

function _M.list_users()
  local users = {}
  local ok, err = pcall(function()
    for user in okta():paginate("/api/v1/users", {q = ngx.var.arg_q, limit = 200}) do
      users[#users + 1] = {id = user.id, login = user.profile.login, status = user.status}
    end
  end)
  if not ok then
    ngx.log(ngx.ERR, tostring(err))
    ngx.status = ngx.HTTP_BAD_GATEWAY
    ngx.say(cjson.encode{error = type(err) == "table" and err.message or "upstream error"})
    return
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(users))
end

return _M
