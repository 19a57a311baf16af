#!/usr/bin/env lua5.4
-- Lists the org's users. Reads the seed's .env (OKTA_ORG_URL, OKTA_CLIENT_ID, OKTA_SCOPES,
-- OKTA_CC_PRIVATE_KEY_FILE, optional OKTA_DPOP_PRIVATE_KEY_FILE) or the Okta SDKs' names.
--   lua5.4 examples/list_users.lua [--env path/to/.env]
local oktadpop = require "oktadpop"

local env = arg[1] == "--env" and arg[2] or nil
if (arg[1] and not env) or arg[3] then
  io.stderr:write("usage: list_users.lua [--env FILE]\n")
  os.exit((arg[1] == "--help" or arg[1] == "-h") and 0 or 2)
end
local okta, err = oktadpop.from_env(env)
if not okta then io.stderr:write(tostring(err), "\n") os.exit(1) end
local count = 0
local ok, perr = pcall(function()
  for user in okta.users:list{limit = 200} do
    count = count + 1
    local last = user.lastLogin ~= oktadpop.null and user.lastLogin or "never"
    print(("%-36s %-12s last login %s"):format(user.profile.login, user.status, last))
  end
end)
if not ok then io.stderr:write(tostring(perr), "\n") os.exit(1) end
io.stderr:write(("%d users from %s\n%s\n"):format(count, okta.org_url, tostring(okta)))
okta:close()
