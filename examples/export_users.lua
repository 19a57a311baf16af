#!/usr/bin/env lua5.4
-- Exports every user as CSV (or JSON) to the file --out names, with progress on stderr. The file
-- is written beside its name and renamed into place once complete; an existing one is replaced
-- only with --force; CSV cells a spreadsheet would run as a formula are neutralised. The
-- configuration is checked before anything is written. Exit status: 0 done, 1 failed, 2 usage.
--   lua5.4 examples/export_users.lua --out users.csv [--format csv|json] [--env FILE] [--filter F] [--force]
local argparse = require "argparse"
local oktadpop = require "oktadpop"
local output = require "oktadpop.output"

local p = argparse("export_users.lua", "Export the org's users to a file.")
p:option("--out", "The file to write (written whole, then renamed into place)."):count(1)
p:option("--format", "csv or json."):choices({"csv", "json"}):default("csv")
p:option("--env", "The .env file to read (default ./.env).")
p:option("--filter", 'An Okta filter, e.g. status eq "ACTIVE".')
p:flag("--force", "Replace --out if it exists.")
local ok, args = p:pparse(arg)
if not ok then io.stderr:write(p:get_usage(), "\n", args, "\n") os.exit(2) end

local okta, err = oktadpop.from_env(args.env)
if not okta then io.stderr:write(tostring(err), "\n") os.exit(1) end

local COLUMNS = {{"id", "id"}, {"status", "status"}, {"login", "profile.login"}, {"email", "profile.email"},
                 {"firstName", "profile.firstName"}, {"lastName", "profile.lastName"}, {"created", "created"},
                 {"lastLogin", "lastLogin"}}
local count = 0
local function counted(it)
  return function()
    local user = it()
    if user then
      count = count + 1
      if count % 200 == 0 then io.stderr:write(("\rexported %d users"):format(count)) end
    end
    return user
  end
end
local written, werr = output.atomic_write(args.out, function(out)
  return output.write_items(out, counted(okta:paginate("/api/v1/users", {filter = args.filter, limit = 200})),
    COLUMNS, args.format)
end, {force = args.force})
okta:close()
if not written then
  io.stderr:write("\n", tostring(werr), "\n")
  if type(werr) == "table" and werr.next then io.stderr:write("resume from: ", werr.next, "\n") end
  os.exit(1)
end
io.stderr:write(("\rexported %d users to %s\n"):format(written, args.out))
