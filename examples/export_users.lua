#!/usr/bin/env lua5.4
-- Exports every user as CSV (stdout or a file), with progress on stderr.
--   lua5.4 examples/export_users.lua [users.csv] [path/to/.env]
local oktadpop = require "oktadpop"

local columns = {"id", "status", "login", "email", "firstName", "lastName", "created", "lastLogin"}

local function csv(value)
  if value == nil or value == oktadpop.null then return "" end
  value = tostring(value)
  if value:find('[,"\r\n]') then value = '"' .. value:gsub('"', '""') .. '"' end
  return value
end

local out = arg[1] and assert(io.open(arg[1], "w")) or io.stdout
local okta = assert(oktadpop.from_env(arg[2]))
out:write(table.concat(columns, ","), "\n")
local count = 0
for user in okta:paginate("/api/v1/users", {limit = 200}) do
  local p = user.profile
  local row = {user.id, user.status, p.login, p.email, p.firstName, p.lastName, user.created, user.lastLogin}
  for i = 1, #columns do row[i] = csv(row[i]) end
  out:write(table.concat(row, ",", 1, #columns), "\n")
  count = count + 1
  if count % 200 == 0 then io.stderr:write(("\rexported %d users"):format(count)) end
end
io.stderr:write(("\rexported %d users\n"):format(count))
if out ~= io.stdout then out:close() end
