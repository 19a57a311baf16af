-- The admin helpers (client.users, .groups, .apps, .factors, .logs) against the emulator: each
-- one's endpoint, method and answer, the two-step delete, and ids and logins holding
-- / ? # % @ going into paths as one percent-encoded segment.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"

local CLIENT_ID = "0oaadmin000000000001"
local SCOPES = {"okta.users.read", "okta.users.manage", "okta.groups.read", "okta.groups.manage",
                "okta.apps.read", "okta.apps.manage", "okta.logs.read"}
local SALESFORCE, SLACK = "0oa000000000000003", "0oa000000000000004"

local function user_id(i) return ("00u%015d"):format(i) end
local function collect(iter)
  local out = {}
  for item in iter do out[#out + 1] = item end
  return out
end

describe("admin helpers", function()
  local emu, okta

  -- The requests the emulator saw since the last reset, as "METHOD path?query".
  local function sent()
    local out = {}
    for _, e in ipairs(emu:log()) do
      if e.kind == "api" then out[#out + 1] = e.method .. " " .. e.path .. (e.query ~= "" and e.query and "?" .. e.query or "") end
    end
    return out
  end

  setup(function()
    local key = assert(oktadpop.generate_key("ES256", {kid = "admin"}))
    emu = emulator.start{tls = false, config = {users = 40, groups = 6, log_events = 12,
      clients = {{client_id = CLIENT_ID, jwks = {keys = {key:public_jwk()}}, scopes = SCOPES}}}}
    okta = assert(oktadpop.new{org_url = emu.url, client_id = CLIENT_ID, private_key = key, scopes = SCOPES})
  end)
  teardown(function() if emu then emu:stop() end end)
  before_each(function() emu:reset() end)

  describe("users", function()
    it("lists with q, filter and search, following pages", function()
      local logins = {}
      for u in okta.users:list{q = "user1", limit = 200} do logins[#logins + 1] = u.profile.login end
      assert.equal(11, #logins) -- user1, user10 to user19
      assert.equal(40, #collect(okta.users:list{filter = 'status eq "ACTIVE"', limit = 7}))
      local found = collect(okta.users:list{search = 'profile.login sw "user3"'})
      assert.equal(11, #found) -- user3, user30 to user39
      assert.same({"GET /api/v1/users?limit=200&q=user1"}, {sent()[1]})
    end)

    it("gets by id, by login and by shortname", function()
      assert.equal(user_id(7), okta.users:get(user_id(7)).id)
      assert.equal(user_id(7), okta.users:get("USER7@example.com").id)
      assert.equal(user_id(7), okta.users:get("user7").id)
      local none, err = okta.users:get("nobody@example.com")
      assert.is_nil(none)
      assert.equal(404, err.status)
      assert.equal("E0000007", err.code)
    end)

    it("creates, updates part of the profile, runs the lifecycle and deletes in two steps", function()
      local u = assert(okta.users:create({profile = {firstName = "Ada", lastName = "Lovelace", email = "ada@example.com",
        login = "ada@example.com", department = "R&D"}, credentials = {password = {value = "Analytical-Engine-1843"}}},
        {activate = false}))
      assert.equal("STAGED", u.status)
      local activated = assert(okta.users:activate(u.id, {send_email = false}))
      assert.matches("^http", activated.activationUrl)
      assert.equal("ACTIVE", okta.users:get(u.id).status)
      local updated = assert(okta.users:update(u.id, {nickName = "Countess"}))
      assert.equal("Countess", updated.profile.nickName)
      assert.equal("R&D", updated.profile.department) -- a partial update keeps the rest
      assert.is_truthy(okta.users:suspend(u.id))
      assert.equal("SUSPENDED", okta.users:get(u.id).status)
      assert.is_truthy(okta.users:unsuspend(u.id))
      emu:control{user_status = {[u.id] = "LOCKED_OUT"}}
      assert.is_truthy(okta.users:unlock(u.id))
      assert.equal("ACTIVE", okta.users:get(u.id).status)
      assert.is_truthy(okta.users:expire_password(u.id))
      assert.equal("PASSWORD_EXPIRED", okta.users:get(u.id).status)
      local reset = assert(okta.users:reset_password(u.id, {send_email = false}))
      assert.matches("^http", reset.resetPasswordUrl)
      assert.is_truthy(okta.users:reset_factors(u.id))
      assert.is_true(okta.users:delete(u.id)) -- deactivates, then deletes
      local gone, err = okta.users:get(u.id)
      assert.is_nil(gone)
      assert.equal(404, err.status)
      local calls = sent()
      assert.equal("POST /api/v1/users?activate=false", calls[1])
      assert.equal("POST /api/v1/users/" .. u.id .. "/lifecycle/activate?sendEmail=false", calls[2])
      assert.equal("POST /api/v1/users/" .. u.id .. "/lifecycle/deactivate", calls[#calls - 2])
      assert.equal("DELETE /api/v1/users/" .. u.id, calls[#calls - 1])
    end)

    it("deletes a deactivated user with one DELETE", function()
      assert.is_truthy(okta.users:deactivate(user_id(40)))
      emu:reset()
      assert.is_true(okta.users:delete(user_id(40)))
      assert.same({"GET /api/v1/users/" .. user_id(40), "DELETE /api/v1/users/" .. user_id(40)}, sent())
    end)

    it("lists a user's groups", function()
      local names = {}
      for g in okta.users:groups(user_id(6)) do names[#names + 1] = g.profile.name end
      table.sort(names)
      assert.same({"Everyone", "Group 2", "Group 3", "Group 6"}, names)
    end)
  end)

  describe("paths", function()
    it("sends an id or login holding / ? # % @ as one escaped segment, never another path", function()
      local login = "q?y#z%w@example.com"
      local u = assert(okta.users:create({firstName = "Q", lastName = "Y", email = login, login = login}, {activate = false}))
      assert.equal(u.id, okta.users:get(login).id)
      local none, err = okta.users:get("a/b?c#d%e@f")
      assert.is_nil(none)
      assert.equal(404, err.status) -- the users/{id} route, not another one
      local ok, walk_err = pcall(function() return collect(okta.users:groups("x/../../groups")) end)
      assert.is_false(ok) -- a proxy that decodes %2F would climb out of the user: refused, never sent
      assert.equal("config", walk_err.kind)
      assert.truthy(walk_err.message:find("dot segment", 1, true))
      local calls = sent()
      assert.equal("GET /api/v1/users/q%3Fy%23z%25w%40example.com", calls[2])
      assert.equal("GET /api/v1/users/a%2Fb%3Fc%23d%25e%40f", calls[3])
      assert.equal(3, #calls)
      assert.is_true(okta.users:delete(u.id))
    end)

    it("refuses an id that is not a non-empty string, and an unknown option", function()
      assert.has_error(function() okta.users:get("") end, "argument 1 must be a non-empty id or login string")
      assert.has_error(function() okta.groups:add("00g1", nil) end, "argument 2 must be a non-empty id or login string")
      assert.has_error(function() okta.users:list{fliter = "x"} end, "unknown option 'fliter'")
      assert.same({}, sent())
    end)
  end)

  describe("groups", function()
    it("lists, gets, creates, and adds and removes members", function()
      local all = collect(okta.groups:list())
      assert.equal(6, #all)
      local g = assert(okta.groups:create{name = "Auditors", description = "read-only reviewers"})
      assert.equal("Auditors", okta.groups:get(g.id).profile.name)
      assert.same({g.id}, (function()
        local ids = {}
        for x in okta.groups:list{q = "Aud"} do ids[#ids + 1] = x.id end
        return ids
      end)())
      assert.is_true(okta.groups:add(g.id, user_id(5)))
      assert.same({user_id(5)}, (function()
        local ids = {}
        for m in okta.groups:members(g.id) do ids[#ids + 1] = m.id end
        return ids
      end)())
      assert.is_true(okta.groups:remove(g.id, user_id(5)))
      assert.same({}, collect(okta.groups:members(g.id)))
    end)
  end)

  describe("apps", function()
    it("lists, gets, shows assignments, and assigns and unassigns users and groups", function()
      assert.equal(5, #collect(okta.apps:list()))
      assert.equal("Slack", okta.apps:get(SLACK).label)
      local direct = {}
      for a in okta.apps:users(SALESFORCE) do direct[a.id] = a.scope end
      assert.equal("USER", direct[user_id(10)])
      assert.equal("GROUP", direct[user_id(3)])
      local groups = collect(okta.apps:groups(SALESFORCE))
      assert.equal(1, #groups)
      local assigned = assert(okta.apps:assign(SLACK, user_id(11)))
      assert.equal(user_id(11), assigned.id)
      assert.equal("USER", assigned.scope)
      assert.is_true(okta.apps:unassign(SLACK, user_id(11)))
      local ag = assert(okta.apps:assign_group(SLACK, "00g000000000000005"))
      assert.equal("00g000000000000005", ag.id)
      assert.is_true(okta.apps:unassign_group(SLACK, "00g000000000000005"))
    end)
  end)

  describe("factors", function()
    it("lists a user's factors and resets one or all", function()
      local list = assert(okta.factors:list(user_id(15))) -- push, TOTP (15 % 3) and SMS (15 % 5)
      assert.equal(3, #list)
      assert.is_true(okta.factors:reset(user_id(15), list[1].id))
      assert.equal(2, #okta.factors:list(user_id(15)))
      assert.is_truthy(okta.factors:reset_all(user_id(15)))
      assert.equal(0, #okta.factors:list(user_id(15)))
    end)
  end)

  describe("logs", function()
    it("queries a bounded window and tails new events", function()
      local now = os.time()
      local events = collect(okta.logs:query{since = os.date("!%Y-%m-%dT%H:%M:%SZ", now - 7200),
        ["until"] = os.date("!%Y-%m-%dT%H:%M:%SZ", now + 60), limit = 5})
      assert.is_true(#events >= 12)
      local tailed = collect(okta.logs:tail{since = os.date("!%Y-%m-%dT%H:%M:%SZ", now - 7200), limit = 5,
        max_items = 12, interval = 0.1})
      assert.equal(12, #tailed)
      assert.equal(events[1].uuid, tailed[1].uuid)
    end)
  end)
end)
