#!/usr/bin/env lua5.4
-- Lists the org's users. Reads the seed's .env (OKTA_ORG_URL, OKTA_CLIENT_ID, OKTA_SCOPES,
-- OKTA_CC_PRIVATE_KEY_FILE, optional OKTA_DPOP_PRIVATE_KEY_FILE) or the Okta SDKs' names.
--   lua5.4 examples/list_users.lua [path/to/.env]
local oktadpop = require "oktadpop"

local okta = assert(oktadpop.from_env(arg[1]))
local count = 0
for user in okta:paginate("/api/v1/users", {limit = 200}) do
  count = count + 1
  local last = user.lastLogin ~= oktadpop.null and user.lastLogin or "never"
  print(("%-36s %-12s last login %s"):format(user.profile.login, user.status, last))
end
io.stderr:write(("%d users from %s\n%s\n"):format(count, okta.org_url, tostring(okta)))
okta:close()
