#!/usr/bin/env lua5.4
-- Finds ACTIVE users whose last login (or creation, if they never logged in) is older than
-- N days. Dry run unless --apply, which deactivates them.
--   lua5.4 examples/deactivate_stale_users.lua [--days 90] [--apply] [--env path/to/.env]
local oktadpop = require "oktadpop"

local days, apply, env = 90, false, nil
local i = 1
while arg[i] do
  if arg[i] == "--days" then days = assert(tonumber(arg[i + 1]), "--days needs a number"); i = i + 1
  elseif arg[i] == "--apply" then apply = true
  elseif arg[i] == "--env" then env = arg[i + 1]; i = i + 1
  else io.stderr:write("usage: deactivate_stale_users.lua [--days N] [--apply] [--env FILE]\n"); os.exit(2) end
  i = i + 1
end

-- Okta's timestamps are ISO 8601 in UTC, so they compare as strings.
local cutoff = os.date("!%Y-%m-%dT%H:%M:%S", os.time() - days * 86400)
local okta = assert(oktadpop.from_env(env))
local stale = {}
for user in okta:paginate("/api/v1/users", {filter = 'status eq "ACTIVE"', limit = 200}) do
  local seen = user.lastLogin ~= oktadpop.null and user.lastLogin or user.created
  if seen < cutoff then stale[#stale + 1] = {id = user.id, login = user.profile.login, seen = seen} end
end
for _, u in ipairs(stale) do
  if apply then
    assert(okta:post("/api/v1/users/" .. u.id .. "/lifecycle/deactivate"))
    print(("deactivated %s (last seen %s)"):format(u.login, u.seen))
  else
    print(("would deactivate %s (last seen %s)"):format(u.login, u.seen))
  end
end
io.stderr:write(("%d users inactive for more than %d days%s\n"):format(#stale, days,
  apply and "" or " (dry run: pass --apply to deactivate)"))
