-- examples/nginx as shipped: nginx.conf itself (not a copy) served by a real nginx against the
-- emulator through examples/nginx/with-emulator (keys 0600 owned by the worker user, the token
-- fetched once at start for every worker, the guard finding the keys by issuer discovery), and
-- okta_app.lua's clear answer when the OKTA_* environment did not reach the workers.
local util = require "spec.support.util"
local nginx = require "spec.support.nginx"

describe("examples/nginx #nginx #once", function()
  it("serves nginx.conf as shipped against the emulator: admin calls, one token, the guard", function()
    local out = util.sh("examples/nginx/with-emulator 2>&1; echo \"exit $?\"")
    assert.matches("exit 0\n$", out)
    assert.matches("nginx %-p /tmp/oktadpop%-nginx%.%w+/ %-c examples/nginx/nginx.conf", out)
    local users = require("cjson").decode(out:match("/admin/users%?q=user1\n(%b[])"))
    assert.equal(11, #users) -- user1, user10 to user19 of 30
    assert.same({id = "00u000000000000001", login = "user1@example.com", status = "ACTIVE"}, users[1])
    -- q=user2%40example is "user2@example" to Okta: one user, not none (an escape sent on escaped)
    local escaped = require("cjson").decode(out:match("/admin/users%?q=user2%%40example[^\n]*\n(%b[])"))
    assert.same({{id = "00u000000000000002", login = "user2@example.com", status = "ACTIVE"}}, escaped)
    assert.matches("== token requests so far: 1 ", out, 1, true)
    assert.matches("HTTP/1.1 401 Unauthorized\nWWW%-Authenticate: DPoP algs=", out)
    assert.matches("hello 0oanginxexample00001, your key is [%w_-]+\n", out)
    assert.matches("warnings and errors:\n%(none%)\n", out)
    assert.not_matches("Permission denied", out)
  end)

  it("runs the README's fleet with --fleet: two nodes and a job host on one Redis, one token, one replay cache", function()
    local out = util.sh("examples/nginx/with-emulator --fleet 2>&1; echo \"exit $?\"")
    assert.matches("exit 0\n$", out)
    assert.matches("== redis%-server on 127%.0%.0%.1:%d+; OKTA_REDIS_URL", out)
    local a = require("cjson").decode(out:match("/admin/users%?q=user1\n(%b[])"))
    local b = require("cjson").decode(out:match("%(node B%)\n(%b[])"))
    assert.equal(11, #a)
    assert.same(a, b)
    assert.matches("%(OKTA_REDIS_URL, the same keys%)\nid,status,login[^\n]*\n00u000000000000001,ACTIVE,user1@example%.com,", out)
    assert.matches("== token requests so far: 1 (both nodes and the job host share one, in Redis)", out, 1, true)
    -- the warm-up proof, then one proof to node A (accepted) and to node B (a replay)
    local refused = out:match("hello 0oanginxexample00001, your key is [%w_-]+\nhello 0oanginxexample00001, your key is [%w_-]+\n"
      .. "(%b{})")
    assert.same({error = "invalid_dpop_proof", error_description = "the DPoP proof has been used before"},
                require("cjson").decode(refused))
    assert.matches("warnings and errors:\n%(none%)\n", out)
    assert.is_nil(out:find("fleet pass", 1, true))
  end)

  it("keeps keys put beside the example out of git", function()
    for _, path in ipairs{"examples/nginx/keys/cc.pem", "examples/nginx/dpop.pem", "examples/nginx/cc_private_key.pem"} do
      assert.is_true(util.run("git check-ignore -q " .. path), path)
    end
  end)

  it("says which variable is missing when the environment did not reach the workers", function()
    local dir = util.sh("mktemp -d"):gsub("%s+$", "")
    util.write(dir .. "/okta_app.lua", ("return dofile(%q)"):format(nginx.ROOT .. "/examples/nginx/okta_app.lua"))
    local server = nginx.start{dir = dir, http = [[
  lua_shared_dict oktadpop 1m;
  init_worker_by_lua_block { require("okta_app").init_worker() }
]], server = [[
    location = /admin/users { content_by_lua_block { require("okta_app").list_users() } }
]]}
    local out = util.sh("curl -s -w ' %{http_code}' " .. server.url .. "/admin/users")
    local log = server:error_log()
    server:stop()
    os.execute("rm -rf " .. dir)
    assert.equal('{"error":"okta_app is not configured: OKTA_ORG_URL is not set: export it before starting nginx '
      .. '(nginx.conf passes it to the workers with `env OKTA_ORG_URL;`)"} 500', out:gsub("\n", ""))
    assert.matches("okta_app: OKTA_ORG_URL is not set", log, 1, true)
  end)
end)
