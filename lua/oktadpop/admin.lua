--- oktadpop.admin: thin helpers for the jobs admins script most, each one documented Okta
-- management API endpoint (developer.okta.com, Management API reference; the paths, methods
-- and scopes are listed in the README), tables in and tables out. They are reached as
-- client.users, client.groups, client.apps, client.factors and client.logs on any client
-- (oktadpop.new, and oktadpop.resty inside nginx), and go through the client's own calls, so
-- every rule of the core (tokens, retries, pacing) applies to them unchanged.
--
-- Answers: one object or `true` (or nil, err); a list endpoint answers an iterator over its
-- items (pages followed, memory flat), which raises the error object, err.next saying where to
-- resume. Ids and logins go into paths percent-encoded, so "a/b?c#d%e@f" stays one segment.
-- @module oktadpop.admin
local oktadpop = require "oktadpop"

local M = {}

local escape = oktadpop.escape
local unpack = table.unpack or unpack -- luacheck: ignore unpack (5.1)

-- "/api/v1/users/<id>/..." with every argument one escaped segment.
local function path(fmt, ...)
  local args = {...}
  for i = 1, select("#", ...) do
    if type(args[i]) ~= "string" or args[i] == "" then
      error(("argument %d must be a non-empty id or login string"):format(i), 3)
    end
    args[i] = escape(args[i])
  end
  return fmt:format(unpack(args, 1, select("#", ...)))
end

-- A query from opts, keeping only the names the endpoint takes, with Lua names for Okta's
-- (send_email -> sendEmail).
local function query(opts, names)
  local q
  for lua_name, okta_name in pairs(names) do
    local v = opts and opts[lua_name]
    if v ~= nil then
      q = q or {}
      q[okta_name] = v
    end
  end
  if opts then
    for k in pairs(opts) do
      if not names[k] then error("unknown option '" .. tostring(k) .. "'", 4) end
    end
  end
  return q
end

local LIST = {q = "q", filter = "filter", search = "search", limit = "limit", after = "after", expand = "expand"}

-- The options of a walk over pages (client:paginate's), as opposed to the query's.
local WALK = {max_items = true, max_pages = true}

-- An iterator over path's pages: opts' names of the query go in the query, max_items and
-- max_pages bound the walk (max_items: exactly that many items, no page more than needed).
local function list(client, path, opts, names)
  local q, walk = {}, nil
  for k, v in pairs(opts or {}) do
    if WALK[k] then walk = walk or {}; walk[k] = v else q[k] = v end
  end
  return client:paginate(path, query(q, names), walk)
end

local namespaces = {}

-- ---- users (scopes okta.users.read, okta.users.manage) ----

local users = {}
namespaces.users = users

--- Users (GET /api/v1/users): an iterator; opts q, filter, search, limit (the page size), max_items.
-- @function users:list
function users:list(opts) return list(self.client, "/api/v1/users", opts, LIST) end
--- One user by id or login (GET /api/v1/users/{idOrLogin}).
-- @function users:get
function users:get(id_or_login) return self.client:get(path("/api/v1/users/%s", id_or_login)) end

--- Creates a user (POST /api/v1/users) from {profile=, credentials=} or a profile; opts.activate
-- (default true), provider, next_login.
-- @function users:create
function users:create(user, opts)
  if type(user) ~= "table" then error("a user table {profile=...} or a profile table", 2) end
  if user.profile == nil then user = {profile = user} end
  return self.client:post("/api/v1/users", user, query(opts, {activate = "activate", provider = "provider",
    next_login = "nextLogin"}))
end

--- Changes the profile members given, the others stay (POST /api/v1/users/{id}).
-- @function users:update
function users:update(id, profile)
  return self.client:post(path("/api/v1/users/%s", id), {profile = profile})
end

--- Lifecycle operations, POST /api/v1/users/{id}/lifecycle/<op>: users:activate(id, {send_email=}),
-- users:deactivate(id, {send_email=}), users:suspend(id), users:unsuspend(id), users:unlock(id),
-- users:expire_password(id, {temp_password=}), users:reset_password(id, {send_email=}),
-- users:reset_factors(id).
-- @table LIFECYCLE
local LIFECYCLE = {
  activate = {send_email = "sendEmail"}, deactivate = {send_email = "sendEmail"}, suspend = {}, unsuspend = {},
  unlock = {}, expire_password = {temp_password = "tempPassword"}, reset_password = {send_email = "sendEmail"},
  reset_factors = {},
}
for op, names in pairs(LIFECYCLE) do
  users[op] = function(self, id, opts)
    return self.client:post(path("/api/v1/users/%s/lifecycle/" .. op, id), nil, query(opts, names))
  end
end

--- Deactivates (when needed) then deletes a user (DELETE /api/v1/users/{id}): Okta deletes only
-- a deactivated user, and the first DELETE of an active one deactivates it.
-- @function users:delete
function users:delete(id, opts)
  local q = query(opts, {send_email = "sendEmail"})
  local user, err = self:get(id)
  if not user then return nil, err end
  if user.status ~= "DEPROVISIONED" then
    local ok, derr = self.client:post(path("/api/v1/users/%s/lifecycle/deactivate", user.id), nil, q)
    if not ok then return nil, derr end
  end
  return self.client:delete(path("/api/v1/users/%s", user.id), q)
end

--- A user's groups: an iterator; opts max_items.
-- @function users:groups
function users:groups(id, opts) return list(self.client, path("/api/v1/users/%s/groups", id), opts, {}) end

-- ---- groups (okta.groups.read, okta.groups.manage) ----

local groups = {}
namespaces.groups = groups

--- Groups (GET /api/v1/groups): an iterator; opts q, filter, search, limit (the page size), max_items.
-- @function groups:list
function groups:list(opts) return list(self.client, "/api/v1/groups", opts, LIST) end
--- One group.
-- @function groups:get
function groups:get(id) return self.client:get(path("/api/v1/groups/%s", id)) end
--- Creates a group from {name=, description=}.
-- @function groups:create
function groups:create(profile) return self.client:post("/api/v1/groups", {profile = profile}) end
--- A group's users (GET /api/v1/groups/{id}/users): an iterator; opts limit, max_items.
-- @function groups:members
function groups:members(id, opts)
  return list(self.client, path("/api/v1/groups/%s/users", id), opts, {limit = "limit"})
end
--- Adds a user to a group (PUT, 204: true).
-- @function groups:add
function groups:add(group_id, user_id) return self.client:put(path("/api/v1/groups/%s/users/%s", group_id, user_id)) end
--- Removes a user from a group (DELETE, 204: true).
-- @function groups:remove
function groups:remove(group_id, user_id) return self.client:delete(path("/api/v1/groups/%s/users/%s", group_id, user_id)) end

-- ---- apps (okta.apps.read, okta.apps.manage) ----

local apps = {}
namespaces.apps = apps

--- Apps (GET /api/v1/apps): an iterator; opts q, filter, limit (the page size), max_items.
-- @function apps:list
function apps:list(opts) return list(self.client, "/api/v1/apps", opts, LIST) end
--- One app.
-- @function apps:get
function apps:get(id) return self.client:get(path("/api/v1/apps/%s", id)) end
--- An app's assigned users: an iterator; opts limit, max_items.
-- @function apps:users
function apps:users(id, opts) return list(self.client, path("/api/v1/apps/%s/users", id), opts, {limit = "limit"}) end
--- An app's assigned groups: an iterator; opts limit, max_items.
-- @function apps:groups
function apps:groups(id, opts) return list(self.client, path("/api/v1/apps/%s/groups", id), opts, {limit = "limit"}) end
--- Assigns a user to an app (POST /api/v1/apps/{id}/users).
-- @function apps:assign
function apps:assign(app_id, user_id, assignment)
  local body = {id = user_id, scope = "USER"}
  for k, v in pairs(assignment or {}) do body[k] = v end
  return self.client:post(path("/api/v1/apps/%s/users", app_id), body)
end
--- Unassigns a user (DELETE, 204: true).
-- @function apps:unassign
function apps:unassign(app_id, user_id) return self.client:delete(path("/api/v1/apps/%s/users/%s", app_id, user_id)) end
--- Assigns a group to an app (PUT /api/v1/apps/{id}/groups/{groupId}).
-- @function apps:assign_group
function apps:assign_group(app_id, group_id, assignment)
  return self.client:put(path("/api/v1/apps/%s/groups/%s", app_id, group_id), assignment or {})
end
--- Unassigns a group (DELETE, 204: true).
-- @function apps:unassign_group
function apps:unassign_group(app_id, group_id)
  return self.client:delete(path("/api/v1/apps/%s/groups/%s", app_id, group_id))
end

-- ---- factors (okta.users.read, okta.users.manage: Okta has no factors scope) ----

local factors = {}
namespaces.factors = factors

--- A user's enrolled factors (a list).
-- @function factors:list
function factors:list(user_id) return self.client:get(path("/api/v1/users/%s/factors", user_id)) end
--- Unenrolls one factor (DELETE, 204: true).
-- @function factors:reset
function factors:reset(user_id, factor_id)
  return self.client:delete(path("/api/v1/users/%s/factors/%s", user_id, factor_id))
end
--- Resets all of a user's factors (POST .../lifecycle/reset_factors).
-- @function factors:reset_all
function factors:reset_all(user_id) return users.reset_factors(self, user_id) end

-- ---- the System Log (okta.logs.read) ----

local logs = {}
namespaces.logs = logs

local LOG_QUERY = {since = "since", ["until"] = "until", filter = "filter", q = "q", limit = "limit",
                   sort_order = "sortOrder", after = "after"}

--- System Log events: an iterator; opts since, until, filter, q, limit (the page size),
-- sort_order, max_items. A bounded query (until given) ends; without until, Okta's polling
-- query always has a next link, and the walk ends at the first empty page.
-- @function logs:query
function logs:query(opts) return list(self.client, "/api/v1/logs", opts, LOG_QUERY) end

--- Follows new events (client:poll): since, filter, q, interval (30), max_items, duration, from.
-- @function logs:tail
function logs:tail(opts)
  local q = {}
  local poll = {interval = true, max_items = true, max_pages = true, duration = true, from = true}
  for k, v in pairs(opts or {}) do
    if not poll[k] and not LOG_QUERY[k] then error("unknown option '" .. tostring(k) .. "'", 2) end
    q[poll[k] and k or LOG_QUERY[k]] = v
  end
  return self.client:poll("/api/v1/logs", q)
end

-- client.<name>: the namespace bound to that client (made once per client and name).
--- The namespace `name` (users, groups, apps, factors, logs) bound to a client.
function M.namespace(client, name)
  local ns = namespaces[name]
  if not ns then return nil end
  return setmetatable({client = client}, {__index = ns})
end

M.NAMES = {"users", "groups", "apps", "factors", "logs"}

return M
