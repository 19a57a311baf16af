-- The test infrastructure for a fleet on Redis: spec/support/redis.lua (a private redis-server:
-- start, cli, restart, kill, pause, stop, auth) and two nginx instances (spec/support/nginx.lua)
-- up at once, sharing that Redis through Debian's lua-nginx-redis (`require "nginx.redis"`).
local redis = require "spec.support.redis"
local nginx = require "spec.support.nginx"
local util = require "spec.support.util"
local emulator = require "spec.support.emulator"
local alive = emulator.alive -- a zombie no one has reaped yet counts as gone

local function now() -- wall-clock seconds with sub-second precision (date +%s.%N)
  return tonumber((util.sh("date +%s.%N"):gsub("%s+$", "")))
end

-- Is something listening on 127.0.0.1:port? (Bash's /dev/tcp, no extra tool.)
local function listening(port)
  return util.run("bash -c " .. util.shell_quote("exec 3<>/dev/tcp/127.0.0.1/" .. port))
end

describe("spec/support/redis.lua #once", function()
  local r

  after_each(function()
    if r then r:stop() end
    r = nil
  end)

  it("starts a private redis-server on a free loopback port, without persistence", function()
    r = redis.start()
    assert.matches("^redis://127%.0%.0%.1:%d+$", r.url)
    assert.equal("redis://127.0.0.1:" .. r.port, r.url)
    assert.equal(r.url, r.auth_url)
    assert.is_true(r:running())
    assert.is_true(listening(r.port))
    assert.equal("PONG", r:cli("PING"))
    assert.equal("OK", r:cli("SET", "greeting", "hello world"))
    assert.equal("hello world", r:cli("GET", "greeting"))
    assert.equal("", r:cli("GET", "missing"))
    assert.equal("2", (r:cli("INCRBY", "n", "2")))
    local out, err = r:cli("INCR", "greeting")
    assert.is_nil(out)
    assert.matches("not an integer", err)
    assert.equal("save\n", r:cli("CONFIG", "GET", "save"))
    assert.equal("appendonly\nno", r:cli("CONFIG", "GET", "appendonly"))
    assert.equal("bind\n127.0.0.1", r:cli("CONFIG", "GET", "bind"))
    -- A second one at the same time: its own port and data.
    local r2 = redis.start()
    finally(function() r2:stop() end)
    assert.are_not.equal(r.port, r2.port)
    assert.equal("", r2:cli("GET", "greeting"))
  end)

  it("restarts on the same port with every key gone", function()
    r = redis.start()
    local port, pid = r.port, r.pid
    assert.equal("OK", r:cli("SET", "k", "v"))
    r:restart()
    assert.equal(port, r.port)
    assert.are_not.equal(pid, r.pid)
    assert.equal("PONG", r:cli("PING"))
    assert.equal("", r:cli("GET", "k"))
  end)

  it("kills it (SIGKILL) for fault specs, and restarts after", function()
    r = redis.start()
    local pid = r.pid
    assert.equal("OK", r:cli("SET", "k", "v"))
    r:kill()
    assert.is_false(r:running())
    assert.is_false(alive(pid))
    assert.is_false(listening(r.port))
    local out, err = r:cli("PING")
    assert.is_nil(out)
    assert.matches("Could not connect", err)
    r:restart()
    assert.equal("PONG", r:cli("PING"))
    assert.equal("", r:cli("GET", "k"))
  end)

  it("pauses: commands wait (CLIENT PAUSE), or the whole server hangs (DEBUG SLEEP)", function()
    r = redis.start()
    for _, mode in ipairs({"client", "sleep"}) do
      local t0 = now()
      assert.is_true(r:pause(1, mode))
      assert.equal("PONG", r:cli("PING"))
      local took = now() - t0
      assert.is_true(took >= 0.9 and took < 4, mode .. ": PING answered after " .. took .. " s")
      t0 = now()
      assert.equal("PONG", r:cli("PING"))
      assert.is_true(now() - t0 < 0.8, mode .. ": still slow after the pause")
    end
  end)

  it("requires a password with requirepass, kept out of r.url and off the command line", function()
    r = redis.start{requirepass = "s3cret pass", config = {maxmemory = "2mb", ["maxmemory-policy"] = "allkeys-lru"}}
    assert.equal("redis://127.0.0.1:" .. r.port, r.url)
    assert.equal("redis://:s3cret pass@127.0.0.1:" .. r.port, r.auth_url)
    assert.equal("PONG", r:cli("PING"))
    assert.equal("maxmemory-policy\nallkeys-lru", r:cli("CONFIG", "GET", "maxmemory-policy"))
    local anonymous, rc = emulator.run("redis-cli -e -h 127.0.0.1 -p " .. r.port .. " PING")
    assert.matches("NOAUTH", anonymous)
    assert.equal(1, rc)
    local wrong = emulator.run("REDISCLI_AUTH=nope redis-cli -e -h 127.0.0.1 -p " .. r.port .. " PING")
    assert.matches("WRONGPASS", wrong)
    assert.is_nil(util.sh("ps -eo args"):find("s3cret", 1, true))
  end)

  it("stops (twice is fine): process, port and folder gone", function()
    r = redis.start()
    local pid, port, dir = r.pid, r.port, r.dir
    r:stop()
    r:stop()
    assert.is_false(alive(pid))
    assert.is_false(listening(port))
    assert.is_false(util.run("test -e " .. util.shell_quote(dir)))
    assert.has_error(function() r:restart() end)
  end)

  it("goes away by itself when the process that started it is gone", function()
    local lua = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
    -- os.exit without closing the state: no finalizer runs, only the watcher is left.
    local out = util.sh(lua .. " -e " .. util.shell_quote([[
      package.path = "./?.lua;" .. package.path
      local r = require("spec.support.redis").start()
      io.write(r.pid, " ", r.port, " ", r.dir, "\n")
      io.stdout:flush()
      os.exit(0, false)
    ]]))
    local pid, port, dir = out:match("^(%d+) (%d+) (%S+)")
    assert.is_truthy(pid, out)
    local t0 = now()
    while alive(pid) and now() - t0 < 10 do util.run("sleep 0.1") end
    assert.is_false(alive(pid), "redis-server " .. pid .. " still running")
    assert.is_false(listening(tonumber(port)))
    util.run("sleep 0.2")
    assert.is_false(util.run("test -e " .. util.shell_quote(dir)))
  end)
end)

describe("two nginx instances sharing one Redis #nginx #once", function()
  local r, dirs, servers = nil, {}, {}

  setup(function()
    r = redis.start{requirepass = "fleet"}
    for i = 1, 2 do
      dirs[i] = util.sh("mktemp -d"):gsub("%s+$", "")
      servers[i] = nginx.start{dir = dirs[i], workers = 2, main = "env REDIS_PORT=" .. r.port .. ";",
        http = "lua_shared_dict node 1m;", server = ([[
    location = /node { content_by_lua_block { ngx.say(%d, " ", ngx.worker.pid()) } }
    location /kv/ { content_by_lua_block {
      local redis = require "nginx.redis"
      local red = redis:new()
      red:set_timeout(1000)
      local ok, err = red:connect("127.0.0.1", tonumber(os.getenv("REDIS_PORT")))
      if ok then ok, err = red:auth("fleet") end
      local key = ngx.var.uri:sub(5)
      local res
      if ok and ngx.var.arg_set then res, err = red:set(key, ngx.var.arg_set) elseif ok then res, err = red:get(key) end
      if res == nil then ngx.status = 500; ngx.say("error: ", err); return end
      red:set_keepalive(10000, 10)
      ngx.say(res == ngx.null and "(nil)" or res, " via node ", %d)
    } }
]]):format(i, i)}
    end
  end)

  teardown(function()
    for i = 1, 2 do
      if servers[i] then servers[i]:stop() end
      if dirs[i] then os.execute("rm -rf " .. dirs[i]) end
    end
    if r then r:stop() end
  end)

  local function get(i, path) return util.sh("curl -s " .. servers[i].url .. path) end

  it("are up at once, each on its own port, prefix and pid", function()
    assert.are_not.equal(servers[1].port, servers[2].port)
    assert.are_not.equal(servers[1].pid, servers[2].pid)
    assert.are_not.equal(servers[1].dir, servers[2].dir)
    assert.matches("^1 %d+\n$", get(1, "/node"))
    assert.matches("^2 %d+\n$", get(2, "/node"))
  end)

  it("share the keys of one Redis through nginx.redis", function()
    assert.equal("OK via node 1\n", get(1, "/kv/token?set=abc"))
    assert.equal("abc via node 2\n", get(2, "/kv/token"))
    assert.equal("abc", r:cli("GET", "token"))
    assert.equal("(nil) via node 1\n", get(1, "/kv/nothing"))
    assert.equal("", servers[1]:error_log():match("%[error%].*") or "")
  end)
end)
