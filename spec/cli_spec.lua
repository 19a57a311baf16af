-- The `oktadpop` command, the REPL and the examples, run as a user runs them, against the
-- emulator: limits that limit, Okta's reasons, progress on long waits, every format, bulk runs
-- from a file, profiles, the REPL at a terminal (tmux) and from a pipe, and the rules that keep
-- data safe: output only to a file named with --out, never over an existing path (whatever its
-- mode, a symlink included) without --force, nothing opened before the configuration is
-- checked, formula cells defused in every cell format.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local emulator = require "spec.support.emulator"
local util = require "spec.support.util"

local CLIENT_ID = "0oacli00000000000001"
local ROOT = util.sh("pwd"):gsub("%s+$", "")
local ENV = ('LUA_PATH="%s/lua/?.lua;;" LUA_CPATH="%s/build/5.4/?.so;;" '):format(ROOT, ROOT) -- assignments
local CMD = "lua5.4 " .. ROOT .. "/bin/oktadpop"
local q = util.shell_quote

-- Runs a command line; returns its stdout, its stderr and its exit code.
local function run(cmd, stdin)
  local out, err = os.tmpname(), os.tmpname()
  local full = "(export " .. ENV .. "; " .. cmd .. ") >" .. out .. " 2>" .. err
  if stdin then full = "printf '%s' " .. q(stdin) .. " | " .. full end
  local status = util.sh("(" .. full .. "; echo rc=$?)"):match("rc=(%d+)")
  local o, e = util.readfile(out), util.readfile(err)
  os.remove(out)
  os.remove(err)
  return o, e, tonumber(status)
end

-- Runs a command line at a terminal (a pty of `cols` columns): what the terminal showed (stdout
-- and stderr), and the exit code.
local function run_at_terminal(cmd, cols)
  local file = os.tmpname()
  local status = util.sh(("(script -qefc %s /dev/null >%s </dev/null; echo rc=$?)"):format(
    q("stty cols " .. (cols or 100) .. "; export " .. ENV .. "; " .. cmd), file)):match("rc=(%d+)")
  local shown = util.readfile(file):gsub("\r\n", "\n")
  os.remove(file)
  return shown, tonumber(status)
end

local function sha(path) return util.sh("sha256sum " .. path .. " 2>/dev/null"):match("^%x+") end
local function lines(s) return select(2, s:gsub("\n", "")) end

describe("the oktadpop command and the examples #once", function()
  local emu, dir, env_file, okta

  -- The management API requests the emulator has seen since the last reset, for a path.
  local function api_requests(prefix)
    local n = 0
    for _, e in ipairs(emu:log()) do
      if e.kind == "api" and e.path:sub(1, #prefix) == prefix then n = n + 1 end
    end
    return n
  end

  setup(function()
    dir = util.sh("mktemp -d"):gsub("%s+$", "")
    local cc = assert(oktadpop.generate_key("RS256", {kid = "cli"}))
    assert(cc:save_pem(dir .. "/cc.pem", true))
    emu = emulator.start{tls = false, config = {users = 25, groups = 6, log_events = 30, clients = {{client_id = CLIENT_ID,
      jwks = {keys = {cc:public_jwk()}}, scopes = {"okta.users.read", "okta.users.manage", "okta.groups.read",
      "okta.groups.manage", "okta.apps.read", "okta.apps.manage", "okta.logs.read"}}}}}
    env_file = dir .. "/.env"
    util.write(env_file, ("OKTA_ORG_URL=%s\nOKTA_CLIENT_ID=%s\nOKTA_SCOPES=okta.users.read okta.users.manage " ..
      "okta.groups.read okta.groups.manage okta.apps.read okta.apps.manage okta.logs.read\n" ..
      "OKTA_CC_PRIVATE_KEY_FILE=%s\nOKTA_CLIENT_KEYID=cli\n"):format(emu.url, CLIENT_ID, dir .. "/cc.pem"))
    okta = assert(oktadpop.from_env(env_file))
  end)
  teardown(function()
    if okta then okta:close() end
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)
  before_each(function() emu:reset() end)

  local function oktadpop_cmd(args, stdin) return run(CMD .. " --env " .. env_file .. " " .. args, stdin) end

  describe("limits that limit", function()
    it("--limit caps the rows and asks for no page more than needed; --page-size sets the page", function()
      local out, err, rc = oktadpop_cmd("users list --limit 5")
      assert.equal(0, rc, err)
      assert.equal(6, lines(out)) -- the header and five users
      assert.equal(1, api_requests("/api/v1/users"))
      emu:reset()
      out = oktadpop_cmd("--format json users list --limit 12 --page-size 5")
      local users = cjson.decode(out)
      assert.equal(12, #users)
      assert.equal("user12@example.com", users[12].profile.login)
      assert.equal(3, api_requests("/api/v1/users")) -- 5 + 5 + 2 of the third page
      emu:reset()
      out = oktadpop_cmd("users list")
      assert.equal(26, lines(out)) -- no --limit: every user, pages followed
    end)

    it("max_items stops paginate, poll and logs:tail at exactly N, in the middle of a page", function()
      local n = 0
      for _ in okta:paginate("/api/v1/users", {limit = 10}, {max_items = 3}) do n = n + 1 end
      assert.equal(3, n)
      n = 0
      for _ in okta.users:list{limit = 10, max_items = 13} do n = n + 1 end
      assert.equal(13, n)
      n = 0
      local since = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - 3600)
      for _ in okta.logs:tail{since = since, max_items = 3, interval = 0.2} do n = n + 1 end
      assert.equal(3, n) -- one page of 30 events, cut
      local out, err, rc = oktadpop_cmd("logs tail --since " .. since .. " --limit 4")
      assert.equal(0, rc, err)
      assert.equal(4, lines(out))
      out, err, rc = oktadpop_cmd("logs tail --since " .. since .. " --max-items 2") -- 0.1.0's name
      assert.equal(0, rc, err)
      assert.equal(2, lines(out))
    end)

    it("describes every option of every subcommand in its --help", function()
      local commands = {"get", "post", "users", "users list", "users get", "users create", "users activate",
        "users expire-password", "users delete", "users reset-password", "groups list", "groups members", "groups add",
        "apps list", "apps users", "apps assign", "factors list", "logs query", "logs tail", "keygen", "token",
        "profiles", "repl"}
      for _, c in ipairs(commands) do
        local out, _, rc = run(CMD .. " " .. c .. " --help")
        assert.equal(0, rc, c)
        local option_lines, described = 0, true
        for line in out:gmatch("[^\n]+") do
          if line:find("^%s+%-") then
            option_lines = option_lines + 1
            described = line:find("^%s+%-%S+.-%s%s+%S") ~= nil
          elseif line:find("^%s%s%s%s%s%s+%S") then -- a description on the line after a long option
            described = true
          elseif line:find("^%S") or line == "" then
            assert.is_true(described, c .. ": an option without a description")
          end
        end
        assert.is_true(described, c)
        assert.is_true(option_lines > 0, c)
      end
      local out = run(CMD .. " --help")
      assert.matches("--profile <name>", out, 1, true)
      assert.matches("--quiet", out, 1, true)
      out = run(CMD .. " users --help")
      assert.matches("expire-password", out, 1, true)
      assert.is_nil(out:find("expire password a user", 1, true))
    end)
  end)

  describe("errors", function()
    it("show Okta's reason (errorCauses) in tostring(err) and on the command's stderr, with one prefix", function()
      local user = {login = "user1@example.com", email = "user1@example.com", firstName = "A", lastName = "B"}
      local _, err = okta.users:create(user)
      assert.matches("An object with this field already exists", tostring(err), 1, true)
      local out, stderr, rc = oktadpop_cmd("users create --data " .. q(cjson.encode(user)))
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("^oktadpop: http error: POST .- E0000001: Api validation failed: login: login: An object with this " ..
        "field already exists in the current organization %(request [%w_-]+%)\n$", stderr)
      assert.is_nil(stderr:find("oktadpop: oktadpop", 1, true))
    end)

    it("exit 2 for every usage error, with the usage of the subcommand concerned", function()
      local cases = {
        {"users frobnicate", "Usage: oktadpop users "},
        {"users list --limit x", "Usage: oktadpop users list "},
        {"users list --limit 0", "Usage: oktadpop users list "},
        {"get api/v1/users", "Usage: oktadpop get "},
        {"get /api/v1/users limit", "Usage: oktadpop get "},
        {"post /api/v1/users --data '{nope'", "Usage: oktadpop post "},
        {"keygen --alg", "Usage: oktadpop keygen "},
        {"keygen --alg HS256 --out " .. dir .. "/x.pem", "Usage: oktadpop keygen "},
        {"keygen", "Usage: oktadpop keygen "},
        {"users suspend", "Usage: oktadpop users suspend "},
        {"users suspend 00u1 --from " .. env_file, "Usage: oktadpop users suspend "},
        {"users suspend --from " .. dir .. "/none.txt", "Usage: oktadpop users suspend "},
        {"--profile ../etc users list", "Usage: oktadpop "},
        {"--env a --profile b users list", "Usage: oktadpop "},
        {"logs tail --format json", "Usage: oktadpop logs tail "},
      }
      for _, case in ipairs(cases) do
        local out, err, rc = oktadpop_cmd(case[1])
        assert.equal(2, rc, case[1])
        assert.equal("", out, case[1])
        assert.equal(1, select(2, err:gsub("Usage: ", "")), case[1])
        assert.matches(case[2], err, 1, true)
        assert.matches("\n\noktadpop: [^\n]+\n$", err, nil, false, case[1])
      end
      assert.is_false(util.run("test -e " .. dir .. "/x.pem"))
    end)

    it("exit 1 for what the API or the configuration refused, the message on stderr", function()
      local _, err, rc = oktadpop_cmd("users get nobody@example.com")
      assert.equal(1, rc)
      assert.matches("^oktadpop: http error: .-E0000007", err)
      _, err, rc = run(CMD .. " --env " .. dir .. "/missing.env users list")
      assert.equal(1, rc)
      assert.matches("missing.env", err, 1, true)
      util.write(dir .. "/nul.env", "OKTA_ORG_URL=" .. emu.url .. "\nOKTA_CLIENT_ID=c\0x\n")
      _, err, rc = run(CMD .. " --env " .. dir .. "/nul.env users list")
      assert.equal(1, rc)
      assert.matches("nul.env: line 2 holds a NUL byte", err, 1, true)
    end)

    it("--version is the rockspec's", function()
      local rockspec = util.sh("ls " .. ROOT .. "/oktadpop-[0-9]*.rockspec"):gsub("%s+$", "")
      local version = util.sh(("lua5.4 -e 'dofile(%q) print(version)'"):format(rockspec)):match("^(.-)%-%d+%s*$")
      local out, _, rc = run(CMD .. " --version")
      assert.equal(0, rc)
      assert.equal("oktadpop " .. version .. "\n", out)
    end)
  end)

  describe("progress", function()
    it("announces a wait over 5 s on stderr with the server's figures, unless --quiet", function()
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "rate_limit", reset_in = 6, times = 1}}}
      local out, err, rc = oktadpop_cmd("users list --limit 2")
      assert.equal(0, rc, err)
      assert.equal(3, lines(out))
      assert.matches("^oktadpop: users list: rate limited %(429%), retrying: %d s, until %d%d:%d%d:%d%d " ..
        "%(/api/v1/users, limit %d+ a minute, 0 remaining, resets at %d%d:%d%d:%d%d%)\n$", err)
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "rate_limit", reset_in = 6, times = 1}}}
      out, err, rc = oktadpop_cmd("--quiet users list --limit 2")
      assert.equal(0, rc, err)
      assert.equal("", err)
    end)

    it("keeps one updating line at a terminal: what it contacts, items, rate", function()
      emu:control{latency_ms = 300}
      local shown, rc = run_at_terminal(CMD .. " --env " .. env_file .. " users list --page-size 5 --limit 15")
      emu:control{latency_ms = 0}
      assert.equal(0, rc, shown)
      assert.matches(("\r\27[Kusers list: 0 items; contacting 127.0.0.1:%d"):format(emu.port), shown, 1, true)
      assert.matches("users list: %d+ items", shown)
      assert.is_nil(shown:match("\n[^\n]*users list: [^\n]*\n"), "the progress line never ends a line of its own")
      shown = run_at_terminal(CMD .. " --quiet --env " .. env_file .. " users list --limit 2")
      assert.is_nil(shown:find("users list:", 1, true))
    end)
  end)

  describe("formats", function()
    it("json, ndjson and csv for listings and answers alike; JSON with no \\/", function()
      local out = oktadpop_cmd("--format json users get user1")
      local user = cjson.decode(out)
      assert.equal("user1@example.com", user.profile.login)
      assert.matches('"href":"http://127.0.0.1:%d+/api/v1/users/00u000000000000001"', out) -- not \/
      assert.equal(1, lines(out)) -- compact when not at a terminal
      out = oktadpop_cmd("--format ndjson users list --limit 3")
      assert.equal(3, lines(out))
      for line in out:gmatch("[^\n]+") do assert.is_table(cjson.decode(line)) end
      out = oktadpop_cmd("--format csv users get user2")
      assert.matches("^id,status,login,email,firstName,lastName,lastLogin\n00u000000000000002,ACTIVE,user2@example.com,", out)
      out = oktadpop_cmd("--format csv factors list user15")
      assert.equal("id,factorType,provider,status\nopf000000000000015,push,OKTA,ACTIVE\n" ..
        "uft000000000000015,token:software:totp,GOOGLE,ACTIVE\nmbl000000000000015,sms,OKTA,ACTIVE\n", out)
      out = oktadpop_cmd("users get user2")
      assert.matches("^id\tstatus\tlogin\t", out) -- a table: TSV when stdout is not a terminal
      out = oktadpop_cmd("get /api/v1/users limit=1")
      assert.equal("user1@example.com", cjson.decode(out)[1].profile.login) -- raw calls: JSON by default
      out = oktadpop_cmd("--format csv get /api/v1/groups limit=2")
      assert.matches("^_links,created,id,", out)
    end)

    it("pretty JSON and an aligned table at a terminal", function()
      local shown = run_at_terminal(CMD .. " --quiet --env " .. env_file .. " --format json users get user1")
      assert.matches('^{\n  "_links": {\n    "self": {\n      "href": "http://', shown)
      shown = run_at_terminal(CMD .. " --quiet --env " .. env_file .. " users list --limit 3", 200)
      assert.matches("^id                  status  login              email              firstName  lastName  lastLogin%s*\n" ..
        "00u000000000000001  ACTIVE  user1@example.com  user1@example.com  Ada        Lovelace  %d", shown)
      shown = run_at_terminal(CMD .. " --quiet --env " .. env_file .. " users list --limit 3", 60)
      for line in shown:gmatch("[^\n]+") do assert.is_true(select(2, line:gsub("[^\128-\191]", "")) <= 60, line) end
      assert.matches("…", shown, 1, true)
    end)

    it("writes nothing on stdout for a failed listing", function()
      local out, err, rc = oktadpop_cmd("--format csv groups members 00gnosuchgroup0000")
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("E0000007", err)
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "server_error", times = 1}}}
      out, _, rc = oktadpop_cmd("users list --limit 3")
      assert.equal(1, rc)
      assert.equal("", out)
    end)

    it("streams logs tail as ndjson, an event a line", function()
      local since = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - 3600)
      local out, err, rc = oktadpop_cmd("logs tail --since " .. since .. " --limit 2")
      assert.equal(0, rc, err)
      local first, second = out:match("^([^\n]+)\n([^\n]+)\n$")
      assert.is_string(cjson.decode(first).uuid)
      assert.is_string(cjson.decode(second).eventType)
      out = oktadpop_cmd("--format csv logs tail --since " .. since .. " --limit 1")
      assert.matches("^published,eventType,actor,outcome,message\n[^\n]+\n$", out)
    end)

    it("neutralises formula cells in every cell format: leading blanks and full-width signs too", function()
      local names = {"=HYPERLINK(\"http://x\")", "  +1", "＝1+2", "＋x", "－3", "＠SUM(A1)", "\t=1", "-5", "@x"}
      local ids = {}
      for i, name in ipairs(names) do
        local user = assert(okta.users:create({login = "f" .. i .. "@example.com", email = "f" .. i .. "@example.com",
                                               firstName = name, lastName = "L"}))
        ids[#ids + 1] = user.id
      end
      for _, format in ipairs({"table", "csv"}) do
        local out = oktadpop_cmd("--format " .. format .. " users list --q f")
        local cells = 0
        for _, name in ipairs(names) do
          local plain = format == "table" and name:gsub("\t", " ") or name:gsub('"', '""')
          assert.is_nil(out:find("[\t,]" .. plain:gsub("%p", "%%%0") .. "[\t,]"), format .. ": " .. name)
          if out:find("'" .. plain, 1, true) then cells = cells + 1 end
        end
        assert.equal(#names, cells, format)
      end
      local shown = run_at_terminal(CMD .. " --quiet --env " .. env_file .. " users list --q f", 200)
      assert.matches("'＝1+2", shown, 1, true)
      assert.matches("'  +1", shown, 1, true)
      assert.is_nil(shown:find(" =HYPERLINK", 1, true))
      for _, id in ipairs(ids) do assert(okta.users:delete(id)) end
    end)
  end)

  describe("bulk runs from a file", function()
    it("acts on ids and logins from a file through batch, writes --results, exits 1 when any failed", function()
      util.write(dir .. "/users.txt", "# to suspend\n00u000000000000003\nuser4@example.com\n\nnobody@example.com\n")
      local results = dir .. "/results.csv"
      local out, err, rc = oktadpop_cmd("users suspend --from " .. dir .. "/users.txt --concurrency 2 --results " .. results)
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("oktadpop: nobody@example.com: http error: .- E0000007", err)
      assert.matches("users suspend: 2 of 3 done, 1 failed; outcomes in " .. results, err, 1, true)
      local csv = util.readfile(results)
      assert.matches("^input,status,error,request_id\n", csv)
      -- a request id is base64url: one that starts with "-" is a neutralised cell, "'-..."
      assert.matches("\n00u000000000000003,ok,,'?[%w_-]+\n", csv)
      assert.matches("\nuser4@example.com,ok,,'?[%w_-]+\n", csv)
      assert.matches("\nnobody@example.com,failed,\"?'?http error: [^\n]*E0000007[^\n]*,'?[%w_-]+\n", csv)
      assert.equal(3, api_requests("/api/v1/users/"))
      assert.equal("SUSPENDED", okta.users:get("user4").status)
      -- the failures again, from the results file: only they are sent
      out, err, rc = oktadpop_cmd("users unsuspend --from " .. results .. " --only-failed --dry-run")
      assert.equal(0, rc, err)
      assert.equal("POST /api/v1/users/nobody%40example.com/lifecycle/unsuspend\n", out)
      _, err, rc = oktadpop_cmd("users suspend --from " .. dir .. "/users.txt --results " .. results)
      assert.equal(1, rc)
      assert.matches("results.csv exists: pass --force", err, 1, true)
      oktadpop_cmd("users unsuspend --from " .. dir .. "/users.txt")
      assert.equal("ACTIVE", okta.users:get("user4").status)
    end)

    it("reads a CSV column, sends nothing on --dry-run, and adds to groups and apps", function()
      util.write(dir .. "/people.csv", 'name,login\n"Lovelace, Ada",user5@example.com\nGrace,user6@example.com\n')
      local group = okta.groups:create{name = "bulk " .. os.time()}.id
      emu:reset()
      local out, err, rc = oktadpop_cmd("groups add " .. group .. " --from " .. dir .. "/people.csv --column login --dry-run")
      assert.equal(0, rc, err)
      -- Okta's group endpoints take ids: each login is looked up first
      assert.equal(("GET /api/v1/users/user5%%40example.com\nPUT /api/v1/groups/%s/users/{id of user5@example.com}\n"
        .. "GET /api/v1/users/user6%%40example.com\nPUT /api/v1/groups/%s/users/{id of user6@example.com}\n")
        :format(group, group), out)
      assert.equal(0, api_requests("/api/v1/groups"))
      out, err, rc = oktadpop_cmd("groups add " .. group .. " --from " .. dir .. "/people.csv --column login")
      assert.equal(0, rc, err)
      local members = {}
      for u in okta.groups:members(group) do members[#members + 1] = u.profile.login end
      table.sort(members)
      assert.same({"user5@example.com", "user6@example.com"}, members)
      _, err, rc = oktadpop_cmd("groups remove " .. group .. " --from " .. dir .. "/people.csv --column login")
      assert.equal(0, rc, err)
      assert.is_nil(okta.groups:members(group)())
      util.write(dir .. "/ids.txt", "00u000000000000007\n00u000000000000008\n")
      _, err, rc = oktadpop_cmd("apps assign 0oa000000000000005 --from " .. dir .. "/ids.txt")
      assert.equal(0, rc, err)
      local assigned = {}
      for au in okta.apps:users("0oa000000000000005") do assigned[au.id] = true end
      assert.is_true(assigned["00u000000000000007"] and assigned["00u000000000000008"])
      _, err, rc = oktadpop_cmd("apps unassign 0oa000000000000005 --from " .. dir .. "/ids.txt")
      assert.equal(0, rc, err)
      emu:reset()
      out, err, rc = oktadpop_cmd("apps assign 0oa000000000000005 --from " .. dir .. "/ids.txt --dry-run")
      assert.equal(0, rc, err) -- ids only: no lookups
      assert.equal(2, select(2, out:gsub("\nPOST", "\nPOST")) + (out:find("^POST") and 1 or 0))
      assert.is_nil(out:find("GET", 1, true))
      -- one user by login, and a login nobody has: the lookup's 404 is that input's failure
      _, err, rc = oktadpop_cmd("groups add " .. group .. " user9@example.com")
      assert.equal(0, rc, err)
      local results = dir .. "/assign-results.csv"
      util.write(dir .. "/mixed.txt", "00u000000000000010\nuser11@example.com\nnobody@example.com\n")
      _, err, rc = oktadpop_cmd("apps assign 0oa000000000000005 --from " .. dir .. "/mixed.txt --results " .. results)
      assert.equal(1, rc, err)
      assert.matches("nobody@example.com: http error: [^\n]*E0000007", err)
      assigned = {}
      for au in okta.apps:users("0oa000000000000005") do assigned[au.id] = true end
      assert.is_true(assigned["00u000000000000010"] and assigned["00u000000000000011"])
      assert.matches("\nnobody@example.com,failed,", util.readfile(results))
      members = {}
      for u in okta.groups:members(group) do members[#members + 1] = u.profile.login end
      assert.same({"user9@example.com"}, members)
      _, _, rc = oktadpop_cmd("groups add " .. group .. " --from " .. dir .. "/people.csv --column nope")
      assert.equal(2, rc)
    end)

    it("deletes in two steps, deactivating first", function()
      local user = assert(okta.users:create({login = "gone@example.com", email = "gone@example.com", firstName = "G",
                                             lastName = "One"}))
      util.write(dir .. "/gone.txt", user.id .. "\n")
      local out, err, rc = oktadpop_cmd("users delete --from " .. dir .. "/gone.txt --dry-run")
      assert.equal(0, rc, err)
      assert.equal(("POST /api/v1/users/%s/lifecycle/deactivate\nDELETE /api/v1/users/%s\n"):format(user.id, user.id), out)
      _, err, rc = oktadpop_cmd("users delete --from " .. dir .. "/gone.txt")
      assert.equal(0, rc, err)
      local _, gerr = okta.users:get(user.id)
      assert.equal("E0000007", gerr.code)
    end)
  end)

  describe("profiles", function()
    it("--profile NAME reads $XDG_CONFIG_HOME/oktadpop/NAME.env, key paths relative to its folder", function()
      local config = dir .. "/config"
      os.execute(("mkdir -p %s/oktadpop/keys && cp %s/cc.pem %s/oktadpop/keys/cc.pem"):format(config, dir, config))
      util.write(config .. "/oktadpop/dev.env", ("OKTA_ORG_URL=%s\nOKTA_CLIENT_ID=%s\nOKTA_SCOPES=okta.users.read\n" ..
        "OKTA_CC_PRIVATE_KEY_FILE=./keys/cc.pem\nOKTA_CLIENT_KEYID=cli\n"):format(emu.url, CLIENT_ID))
      local xdg = "cd / && XDG_CONFIG_HOME=" .. config .. " "
      local out, err, rc = run(xdg .. CMD .. " --profile dev users list --limit 1")
      assert.equal(0, rc, err)
      assert.matches("\n00u000000000000001\t", out)
      out, err, rc = run(xdg .. CMD .. " profiles")
      assert.equal(0, rc, err)
      assert.equal(("name\torg_url\tclient_id\tfile\ndev\t%s\t%s\t%s/oktadpop/dev.env\n"):format(emu.url, CLIENT_ID, config), out)
      _, err, rc = run(xdg .. CMD .. " --profile prod users list")
      assert.equal(1, rc)
      assert.matches("no profile prod", err, 1, true)
      out = run("cd / && HOME=" .. dir .. " XDG_CONFIG_HOME= " .. CMD .. " profiles")
      assert.equal("name\torg_url\tclient_id\tfile\n", out) -- ~/.config/oktadpop: none there
    end)
  end)

  describe("files", function()
    it("makes a key pair without ever replacing an existing key", function()
      local key = dir .. "/new.pem"
      local out, err, rc = run(CMD .. " keygen --alg ES256 --kid k1 --out " .. key)
      assert.equal(0, rc, err)
      assert.equal("k1", cjson.decode(out).kid)
      assert.equal("600", util.sh("stat -c %a " .. key):match("%d+"))
      local before = sha(key)
      _, err, rc = run(CMD .. " keygen --out " .. key)
      assert.equal(1, rc)
      assert.matches("new.pem exists (it may be the key registered in Okta): pass --force", err, 1, true)
      assert.equal(before, sha(key))
      _, _, rc = run(CMD .. " keygen --out " .. key .. " --force")
      assert.equal(0, rc)
      assert.are_not.equal(before, sha(key))
      assert.equal("600", util.sh("stat -c %a " .. key):match("%d+"))
    end)

    it("writes --out whole, and not over an existing file without --force", function()
      local file = dir .. "/users.csv"
      local _, err, rc = oktadpop_cmd("--format csv --out " .. file .. " users list")
      assert.equal(0, rc, err)
      local first = util.readfile(file)
      assert.matches("user1@example.com", first)
      _, err, rc = oktadpop_cmd("--format csv --out " .. file .. " users list")
      assert.equal(1, rc)
      assert.matches("users.csv exists: pass --force", err, 1, true)
      assert.equal(first, util.readfile(file))
      _, err, rc = oktadpop_cmd("--format json --out " .. file .. " --force users list --limit 2")
      assert.equal(0, rc, err)
      assert.equal(2, #cjson.decode(util.readfile(file)))
      emu:control{faults = {{path_prefix = "/api/v1/users", kind = "server_error", times = 1}}}
      _, _, rc = oktadpop_cmd("--out " .. file .. " --force users list")
      assert.equal(1, rc)
      assert.equal(2, #cjson.decode(util.readfile(file))) -- a failed run leaves the old file
      assert.equal("", util.sh("ls " .. dir .. " | grep tmp- || true"))
    end)

    it("refuses a file its user cannot read, as an unprivileged user (mode 0200)", function()
      local home = util.sh("mktemp -d"):gsub("%s+$", "")
      os.execute(("cp %s/cc.pem %s/cc.pem && chown -R nobody %s && chmod 0700 %s"):format(dir, home, home, home))
      util.write(home .. "/.env", ("OKTA_ORG_URL=%s\nOKTA_CLIENT_ID=%s\nOKTA_SCOPES=okta.users.read\n" ..
        "OKTA_CC_PRIVATE_KEY_FILE=%s/cc.pem\n"):format(emu.url, CLIENT_ID, home))
      for _, name in ipairs({"key.pem", "out.csv"}) do
        util.write(home .. "/" .. name, "precious\n")
        os.execute(("chown nobody %s/%s %s/.env && chmod 0200 %s/%s"):format(home, name, home, home, name))
      end
      -- the command as an install would have it, readable by anyone: the checkout may sit in a
      -- folder only root can enter (a CI workspace, a fresh clone under a private /tmp dir)
      local install = home .. "-install"
      os.execute(("mkdir -p %s/build/5.4 %s/bin && cp -R %s/lua %s/ && cp %s/build/5.4/oktadpop.so %s/build/5.4/ && "
        .. "cp %s/bin/oktadpop %s/bin/ && chmod -R a+rX %s"):format(install, install, ROOT, install, ROOT, install,
        ROOT, install, install))
      local as_nobody = ('cd / && runuser -u nobody -- env LUA_PATH="%s/lua/?.lua;;" LUA_CPATH="%s/build/5.4/?.so;;" '
        .. 'lua5.4 %s/bin/oktadpop'):format(install, install, install)
      local _, err, rc = run(as_nobody .. " keygen --out " .. home .. "/key.pem")
      assert.equal(1, rc, err)
      assert.matches("key.pem exists", err, 1, true)
      _, err, rc = run(as_nobody .. " --env " .. home .. "/.env --format csv --out " .. home .. "/out.csv users list")
      assert.equal(1, rc, err)
      assert.matches("out.csv exists: pass --force", err, 1, true)
      assert.equal("precious\n", util.readfile(home .. "/key.pem"))
      assert.equal("precious\n", util.readfile(home .. "/out.csv"))
      assert.equal("200", util.sh("stat -c %a " .. home .. "/out.csv"):match("%d+"))
      assert.equal("nobody", util.sh("whoami 2>/dev/null; runuser -u nobody -- whoami"):match("(%S+)%s*$"))
      os.execute("rm -rf " .. home .. " " .. install)
    end)

    it("refuses a symlink unless forced, and then replaces the link, not what it points to", function()
      local victim, link = dir .. "/victim.txt", dir .. "/link.pem"
      util.write(victim, "not yours\n")
      os.execute("ln -sf " .. victim .. " " .. link)
      local _, err, rc = run(CMD .. " keygen --out " .. link)
      assert.equal(1, rc)
      assert.matches("link.pem exists (a symbolic link)", err, 1, true)
      _, err, rc = run(CMD .. " keygen --out " .. link .. " --force")
      assert.equal(0, rc, err)
      assert.equal("not yours\n", util.readfile(victim))
      assert.is_false(util.run("test -L " .. link))
      assert.matches("BEGIN PRIVATE KEY", util.readfile(link))
      os.execute(("ln -sf %s/nowhere %s/dangling.csv"):format(dir, dir)) -- a dangling link exists too
      _, _, rc = oktadpop_cmd("--out " .. dir .. "/dangling.csv users list --limit 1")
      assert.equal(1, rc)
      assert.is_false(util.run("test -e " .. dir .. "/nowhere"))
    end)

    it("never replaces a file that appears while it writes: the last check is the link itself", function()
      local path = dir .. "/race.txt"
      local file = assert(oktadpop.outfile(path))
      assert(file:write("mine\n"))
      util.write(path, "theirs\n") -- created between the open and the commit
      local ok, err = file:commit()
      assert.is_nil(ok)
      assert.is_true(err.exists)
      assert.equal("file", err.kind)
      assert.equal("theirs\n", util.readfile(path))
      assert.equal("", util.sh("ls " .. dir .. " | grep race.txt.tmp- || true"))
      file = assert(oktadpop.outfile(dir .. "/dropped.txt"))
      file:write("half")
      file:discard()
      assert.equal("", util.sh("ls " .. dir .. " | grep dropped || true"))
    end)
  end)

  describe("the REPL", function()
    it("runs lines from a pipe: each value once, errors as messages, iterators shown in part", function()
      local out, err, rc = oktadpop_cmd("repl", 'okta:get("/api/v1/users", {limit = 2})\n')
      assert.equal(0, rc, err)
      assert.equal(1, select(2, out:gsub('login = "user1@example.com"', ""))) -- the body once, no response after it
      assert.is_nil(out:find("headers", 1, true))
      out, err, rc = oktadpop_cmd("repl", '= 1 + 1\nfunction f(x)\n return x * 2\nend\nf(21)\n' ..
        'okta.users:get("nobody@example.com")\nokta.users:list{limit = 2}\nrest().id\n')
      assert.equal(0, rc, err)
      assert.matches("^2\n42\n", out)
      assert.matches("E0000007", out, 1, true)
      assert.matches("(the first 5 items: `rest` holds the others", out, 1, true)
      assert.matches('\n"00u000000000000006"\n', out, 1, true)
      assert.is_nil(out:match("function: 0x"))
    end)

    it("starts with a broken config, showing its real error, with oktadpop loaded", function()
      util.write(dir .. "/broken.env", "OKTA_ORG_URL=" .. emu.url .. "\nOKTA_CLIENT_ID=c\nOKTA_SCOPES=s\n" ..
        "OKTA_CC_PRIVATE_KEY_FILE=" .. dir .. "/no-such-key.pem\n")
      local out, err, rc = run(CMD .. " --env " .. dir .. "/broken.env repl", "oktadpop._VERSION\n")
      assert.equal(0, rc)
      assert.matches("no client: config error: private_key: ", err, 1, true)
      assert.matches("no-such-key.pem", err, 1, true)
      assert.is_nil(err:find("set OKTA_ORG_URL", 1, true))
      assert.equal('"' .. oktadpop._VERSION .. '"\n', out)
    end)

    it("completes what follows the object at a terminal, and takes = expr (tmux)", function()
      -- A tmux server of this test's own (its socket name), started and killed here, and only it.
      local tmux = "tmux -L oktadpop-spec-" .. os.time() .. "-" .. math.random(1e6) .. " "
      local function keys(...)
        local k = {}
        for i, s in ipairs({...}) do k[i] = q(s) end
        os.execute(tmux .. "send-keys -t repl " .. table.concat(k, " "))
      end
      -- The screen once it shows text (waited for up to 15 s: the machine may be busy).
      local function screen_with(text)
        local shown = ""
        for _ = 1, 150 do
          shown = util.sh(tmux .. "capture-pane -p -t repl")
          if shown:find(text, 1, true) then break end
          os.execute("sleep 0.1")
        end
        return shown
      end
      os.execute(tmux .. "new-session -d -s repl -x 150 -y 40 " .. q(ENV .. CMD .. " --env " .. env_file .. " repl"))
      screen_with("okta> ")
      keys("okta.users:li", "Tab")
      assert.matches("okta> okta.users:list", screen_with("okta.users:list"), 1, true)
      keys("{limit = 1}", "Enter")
      assert.matches('login = "user5@example.com"', screen_with("user5@example.com"), 1, true) -- the fifth item shown
      keys("okta.gr", "Tab", ":", "Tab", "Tab")
      local s = screen_with("okta.groups:members")
      assert.matches("okta.groups:members", s, 1, true)
      assert.matches("okta.groups:list", s, 1, true)
      assert.is_nil(s:find("okta.groups:client", 1, true)) -- after ":", methods only
      keys("C-u", "= 6 * 7", "Enter")
      assert.matches("okta> = 6 * 7\n42\n", screen_with("\n42\n"), 1, true)
      keys("oktadpop.gen", "Tab")
      s = screen_with("oktadpop.generate_key")
      os.execute(tmux .. "kill-server")
      assert.matches("okta> oktadpop.generate_key", s, 1, true)
    end)
  end)

  describe("the examples", function()
    it("answer --help with 0 and a bad flag with 2, creating no file", function()
      for _, ex in ipairs({"export_users", "keygen", "deactivate_stale_users", "list_users"}) do
        local before = util.sh("ls")
        local _, _, rc = run("lua5.4 examples/" .. ex .. ".lua --help")
        assert.equal(0, rc, ex)
        _, _, rc = run("lua5.4 examples/" .. ex .. ".lua --no-such-flag")
        assert.equal(2, rc, ex)
        assert.equal(before, util.sh("ls"), ex .. " made a file")
      end
    end)

    it("export_users never touches the .env or an existing CSV, and checks the config before writing", function()
      local env_before = sha(env_file)
      local _, _, rc = run("lua5.4 examples/export_users.lua " .. env_file) -- the old calling convention
      assert.equal(2, rc)
      assert.equal(env_before, sha(env_file))
      local csv = dir .. "/old.csv"
      util.write(csv, "precious\n")
      _, _, rc = run("lua5.4 examples/export_users.lua --out " .. csv .. " --env " .. dir .. "/missing.env")
      assert.equal(1, rc)
      assert.equal("precious\n", util.readfile(csv))
      _, _, rc = run("lua5.4 examples/export_users.lua --out " .. csv .. " --env " .. env_file)
      assert.equal(1, rc) -- exists, no --force
      assert.equal("precious\n", util.readfile(csv))
      local err
      _, err, rc = run("lua5.4 examples/export_users.lua --out " .. csv .. " --env " .. env_file .. " --force")
      assert.equal(0, rc, err)
      assert.matches("^id,status,login", util.readfile(csv))
    end)

    it("keygen never overwrites a key, and refuses --alg without a value", function()
      local key = dir .. "/registered.pem"
      util.write(key, "the key registered in Okta\n")
      local _, _, rc = run("lua5.4 examples/keygen.lua --out " .. key)
      assert.equal(1, rc)
      assert.equal("the key registered in Okta\n", util.readfile(key))
      _, _, rc = run("lua5.4 examples/keygen.lua --out " .. dir .. "/k.pem --alg")
      assert.equal(2, rc)
    end)
  end)

  describe("cells", function()
    local output = require "oktadpop.output"
    it("neutralise what a spreadsheet would run as a formula (OWASP), in every cell format", function()
      assert.equal("'=HYPERLINK(\"\"http://x\"\")", output.csv_cell('=HYPERLINK("http://x")'):gsub('^"', ""):gsub('"$', ""))
      for _, lead in ipairs({"=", "+", "-", "@", "\t", "\r", " =", "  +", "＝", "＋", "－", "＠", " ＝"}) do
        assert.equal("'", output.csv_cell(lead .. "1"):gsub('^"', ""):sub(1, 1), "lead " .. lead)
        assert.equal("'", output.neutral(lead .. "1"):sub(1, 1), "lead " .. lead)
      end
      assert.equal("plain", output.csv_cell("plain"))
      assert.equal("a-b", output.csv_cell("a-b"))
      assert.equal("-5", output.csv_cell(-5)) -- a number is not a formula
      assert.equal('"a,b"', output.csv_cell("a,b"))
      assert.equal("", output.csv_cell(oktadpop.null))
      assert.equal("12", output.csv_cell(12))
      for _, width in ipairs({false, 80}) do
        local buf = {}
        local sink = {write = function(_, ...) for _, s in ipairs({...}) do buf[#buf + 1] = s end end}
        local w = output.writer(sink, "table", {{"name", "name"}}, {width = width or nil})
        w:add({name = " =cmd|' /C calc'!A0"})
        w:add({name = "x\27[2Jy"})
        w:finish()
        local text = table.concat(buf)
        assert.matches("' =cmd", text, 1, true)
        assert.matches("x [2Jy", text, 1, true) -- no escape reaches the terminal
      end
    end)
  end)
end)
