#!/usr/bin/env lua5.4
-- Finds ACTIVE users whose last login (or creation, if they never logged in) is older than
-- N days. A dry run unless --apply, which deactivates them, several at a time (batch), each
-- result reported; the ones that failed are listed so that a second run retries just those.
--   lua5.4 examples/deactivate_stale_users.lua [--days 90] [--apply] [--env FILE] [--concurrency 8]
local argparse = require "argparse"
local oktadpop = require "oktadpop"

local p = argparse("deactivate_stale_users.lua", "Deactivate users who have not signed in for --days days.")
p:option("--days", "Inactive for more than this many days."):default("90"):convert(tonumber)
p:flag("--apply", "Deactivate them (without it: a dry run).")
p:option("--env", "The .env file to read (default ./.env).")
p:option("--concurrency", "Requests at once."):default("8"):convert(tonumber)
local ok, args = p:pparse(arg)
if not ok then io.stderr:write(p:get_usage(), "\n", args, "\n") os.exit(2) end

local okta, err = oktadpop.from_env(args.env)
if not okta then io.stderr:write(tostring(err), "\n") os.exit(1) end
-- Okta's timestamps are ISO 8601 in UTC, so they compare as strings.
local cutoff = os.date("!%Y-%m-%dT%H:%M:%S", os.time() - args.days * 86400)
local stale = {}
for user in okta.users:list{filter = 'status eq "ACTIVE"', limit = 200} do
  local seen = user.lastLogin ~= oktadpop.null and user.lastLogin or user.created
  if seen < cutoff then stale[#stale + 1] = {id = user.id, login = user.profile.login, seen = seen} end
end
if not args.apply then
  for _, u in ipairs(stale) do print(("would deactivate %s (last seen %s)"):format(u.login, u.seen)) end
  io.stderr:write(("%d users inactive for more than %d days (dry run: pass --apply to deactivate)\n"):format(#stale, args.days))
  os.exit(0)
end
local deactivated, failed = okta:batch(stale, { -- with on_result: counts, nothing kept
  concurrency = math.min(args.concurrency, okta.max_concurrency),
  request = function(u) return {method = "POST", path = "/api/v1/users/" .. oktadpop.escape(u.id) .. "/lifecycle/deactivate"} end,
  on_result = function(r)
    if r.ok then print(("deactivated %s (last seen %s)"):format(r.input.login, r.input.seen))
    else io.stderr:write(("failed %s: %s\n"):format(r.input.login, tostring(r.error))) end
  end,
})
io.stderr:write(("%d of %d users deactivated\n"):format(deactivated, #stale))
os.exit(failed == 0 and 0 or 1)
