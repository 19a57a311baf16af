-- The `oktadpop` command, the REPL and the examples, run as a user runs them: their commands
-- and exit codes, a REPL fed from a pipe, and the rules that keep data safe: output only to a
-- file named with --out, written whole then renamed, never over an existing file (or key)
-- without --force, nothing opened before the configuration is checked, CSV formulas defused.
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local emulator = require "spec.support.emulator"
local util = require "spec.support.util"

local CLIENT_ID = "0oacli00000000000001"
local ENV = 'LUA_PATH="lua/?.lua;;" LUA_CPATH="build/5.4/?.so;;" '

-- Runs a command line; returns its stdout, its stderr and its exit code.
local function run(cmd, stdin)
  local out, err = os.tmpname(), os.tmpname()
  local full = ENV .. cmd .. " >" .. out .. " 2>" .. err
  if stdin then full = "printf '%s' " .. util.shell_quote(stdin) .. " | " .. full end
  local status = util.sh("(" .. full .. "; echo rc=$?)"):match("rc=(%d+)")
  local o, e = util.readfile(out), util.readfile(err)
  os.remove(out)
  os.remove(err)
  return o, e, tonumber(status)
end

local function sha(path) return util.sh("sha256sum " .. path .. " 2>/dev/null"):match("^%x+") end

describe("the oktadpop command and the examples", function()
  local emu, dir, env_file

  setup(function()
    dir = util.sh("mktemp -d"):gsub("%s+$", "")
    local cc = assert(oktadpop.generate_key("RS256", {kid = "cli"}))
    assert(cc:save_pem(dir .. "/cc.pem", true))
    emu = emulator.start{tls = false, config = {users = 25, clients = {{client_id = CLIENT_ID,
      jwks = {keys = {cc:public_jwk()}}, scopes = {"okta.users.read", "okta.users.manage", "okta.groups.read"}}}}}
    env_file = dir .. "/.env"
    util.write(env_file, ("OKTA_ORG_URL=%s\nOKTA_CLIENT_ID=%s\nOKTA_SCOPES=okta.users.read okta.users.manage\n" ..
      "OKTA_CC_PRIVATE_KEY_FILE=%s\nOKTA_CLIENT_KEYID=cli\n"):format(emu.url, CLIENT_ID, dir .. "/cc.pem"))
  end)
  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  describe("oktadpop", function()
    it("makes raw calls with query parameters and prints JSON", function()
      local out, err, rc = run("bin/oktadpop --env " .. env_file .. " get /api/v1/users limit=3")
      assert.equal(0, rc, err)
      local users = cjson.decode(out)
      assert.equal(3, #users)
      assert.equal("user1@example.com", users[1].profile.login)
    end)

    it("lists users as a table, JSON or CSV", function()
      local out, err, rc = run("bin/oktadpop --env " .. env_file .. " users list --limit 10")
      assert.equal(0, rc, err)
      assert.matches("^id\tstatus\tlogin", out)
      assert.equal(26, select(2, out:gsub("\n", ""))) -- the header and 25 users (pages followed)
      out = run("bin/oktadpop --env " .. env_file .. " --format json users list")
      assert.equal(25, #cjson.decode(out))
      out = run("bin/oktadpop --env " .. env_file .. " --format csv users list --filter 'status eq \"ACTIVE\"'")
      assert.matches("^id,status,login,email,firstName,lastName,lastLogin\n", out)
    end)

    it("describes the token but never prints it unless asked", function()
      local out, err, rc = run("bin/oktadpop --env " .. env_file .. " token --info")
      assert.equal(0, rc, err)
      local info = cjson.decode(out)
      assert.equal("DPoP", info.token_type)
      assert.is_nil(info.access_token)
      assert.is_nil(out:match("eyJ"))
      out = run("bin/oktadpop --env " .. env_file .. " token --show-token")
      assert.matches("^eyJ", cjson.decode(out).access_token)
    end)

    it("answers usage errors with 2, API errors with 1, and the message on stderr", function()
      local _, err, rc = run("bin/oktadpop users frobnicate")
      assert.equal(2, rc)
      assert.matches("Usage", err)
      _, err, rc = run("bin/oktadpop --env " .. env_file .. " users get nobody@example.com")
      assert.equal(1, rc)
      assert.matches("E0000007", err)
      _, err, rc = run("bin/oktadpop --env " .. dir .. "/missing.env users list")
      assert.equal(1, rc)
      assert.matches("missing.env", err, 1, true)
      local out
      out, _, rc = run("bin/oktadpop --help")
      assert.equal(0, rc)
      assert.matches("Usage: oktadpop", out)
    end)

    it("makes a key pair without ever replacing an existing key", function()
      local key = dir .. "/new.pem"
      local out, err, rc = run("bin/oktadpop keygen --alg ES256 --kid k1 --out " .. key)
      assert.equal(0, rc, err)
      assert.equal("k1", cjson.decode(out).kid)
      assert.equal("600", util.sh("stat -c %a " .. key):match("%d+"))
      local before = sha(key)
      _, err, rc = run("bin/oktadpop keygen --out " .. key)
      assert.equal(1, rc)
      assert.matches("exists", err)
      assert.equal(before, sha(key))
      _, _, rc = run("bin/oktadpop keygen --out " .. key .. " --force")
      assert.equal(0, rc)
      assert.are_not.equal(before, sha(key))
      _, _, rc = run("bin/oktadpop keygen --alg")
      assert.equal(2, rc) -- a flag without its value is a usage error, not ES256
      _, _, rc = run("bin/oktadpop keygen --alg HS256 --out " .. dir .. "/x.pem")
      assert.equal(2, rc)
    end)

    it("writes --out through a temporary file, and not over an existing file without --force", function()
      local file = dir .. "/users.csv"
      local _, err, rc = run("bin/oktadpop --env " .. env_file .. " --format csv --out " .. file .. " users list")
      assert.equal(0, rc, err)
      local first = util.readfile(file)
      assert.matches("user1@example.com", first)
      _, err, rc = run("bin/oktadpop --env " .. env_file .. " --format csv --out " .. file .. " users list")
      assert.equal(1, rc)
      assert.matches("exists", err)
      assert.equal(first, util.readfile(file))
      assert.equal("", util.sh("ls " .. dir .. " | grep tmp- || true"))
    end)
  end)

  describe("the REPL", function()
    it("runs lines from a pipe with okta ready, pretty-printing what they return", function()
      local out, err, rc = run("bin/oktadpop --env " .. env_file .. " repl",
        'u = okta:get("/api/v1/users", {limit = 1})\nu[1].profile.login\nreturn #u\nfunction f(x)\n return x * 2\nend\nf(21)\nokta.users:get("nobody@example.com")\n')
      assert.equal(0, rc, err)
      assert.matches('"user1@example.com"', out, 1, true)
      assert.matches("\n1\n", out, 1, true)
      assert.matches("\n42\n", out, 1, true)
      assert.matches("E0000007", out, 1, true) -- an error object shows as its message
      assert.is_nil(out:match("1%.0\n"), "integers stay integers")
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

  describe("CSV cells", function()
    local output = require "oktadpop.output"
    it("neutralise what a spreadsheet would run as a formula (OWASP)", function()
      assert.equal("'=HYPERLINK(\"\"http://x\"\")", output.csv_cell('=HYPERLINK("http://x")'):gsub('^"', ""):gsub('"$', ""))
      for _, lead in ipairs({"=", "+", "-", "@", "\t", "\r"}) do
        assert.equal("'", output.csv_cell(lead .. "1"):gsub('^"', ""):sub(1, 1), "lead " .. lead)
      end
      assert.equal("plain", output.csv_cell("plain"))
      assert.equal('"a,b"', output.csv_cell("a,b"))
      assert.equal("", output.csv_cell(oktadpop.null))
      assert.equal("12", output.csv_cell(12))
    end)
  end)
end)
