-- Object lifetimes: several clients in one Lua state, clients driven from coroutines, closed
-- clients, a client collected in the middle of pagination, keys that outlive their clients,
-- oversized and special key files, and a GC-stress run over keys, proofs and clients.
local oktadpop = require "oktadpop"
local emulator = require "spec.support.emulator"
local util = require "spec.support.util"

local CLIENT_ID = "0oalifetime000000001"
local USERS = 7

describe("lifetimes", function()
  local emu, cc, lines

  local function client(extra)
    local cfg = {org_url = emu.url, client_id = CLIENT_ID, scopes = "okta.users.read", private_key = cc,
                 max_retries = 0, timeout = 10}
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return assert(oktadpop.new(cfg))
  end

  local function count_users(it)
    local n = 0
    for _ in it do n = n + 1 end
    return n
  end

  setup(function()
    cc = assert(oktadpop.generate_key("ES256", {kid = "life"}))
    emu = emulator.start{tls = false, config = {users = USERS, clients = {
      {client_id = CLIENT_ID, jwks = {keys = {cc:public_jwk()}}, dpop_required = true, scopes = {"okta.users.read"}}}}}
  end)
  teardown(function()
    if emu then emu:stop() end
    util.cleanup()
  end)

  it("keeps several clients in one state apart", function()
    local a, b, c = client(), client(), client{dpop_key = assert(oktadpop.generate_key("ES384"))}
    local ta, tb, tc = assert(a:token()), assert(b:token()), assert(c:token())
    assert.are_not.equal(ta, tb)
    assert.are_not.equal(tb, tc)
    assert.are_not.equal(a.dpop_key:thumbprint(), b.dpop_key:thumbprint())
    assert.equal("ES384", c.dpop_key.alg)
    for _ = 1, 3 do
      for _, x in ipairs({a, b, c}) do assert.equal(2, #assert(x:get("/api/v1/users", {limit = 2}))) end
    end
    b:close()
    assert.is_nil((b:get("/api/v1/users")))
    assert(a:get("/api/v1/users", {limit = 1}))
    assert(c:get("/api/v1/users", {limit = 1}))
    assert.equal(ta, (a:token())) -- each still holds its own token
    assert.equal(2, a.stats.token_requests) -- one exchange: the nonce challenge and the retry
  end)

  it("serves clients from coroutines, interleaved page by page", function()
    local clients = {client(), client(), client()}
    local counts, done = {0, 0, 0}, 0
    local cos = {}
    for i, x in ipairs(clients) do
      cos[i] = coroutine.create(function()
        for _ in x:paginate("/api/v1/users", {limit = 2}) do
          counts[i] = counts[i] + 1
          coroutine.yield()
        end
      end)
    end
    while done < #cos do
      done = 0
      for _, co in ipairs(cos) do
        if coroutine.status(co) == "dead" then done = done + 1 else assert(coroutine.resume(co)) end
      end
    end
    assert.same({USERS, USERS, USERS}, counts)
  end)

  it("survives a debug callback that yields, and a client made in a coroutine that is gone", function()
    local made
    local co = coroutine.wrap(function()
      made = client{debug = function() coroutine.yield("from debug") end}
      return assert(made:get("/api/v1/users", {limit = 1})) -- the callback's yield cannot cross C: ignored
    end)
    local first = co()
    assert.is_table(first)
    co = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.equal(1, #assert(made:get("/api/v1/users", {limit = 1})))
  end)

  it("gives a closed client's every call a clear error", function()
    local okta = client()
    local it = okta:paginate("/api/v1/users", {limit = 2})
    assert.is_table(it())
    okta:close()
    okta:close() -- twice is fine
    for _, call in ipairs({
      function() return okta:token() end, function() return okta:get("/api/v1/users") end,
      function() return okta:post("/api/v1/users", {}) end, function() return okta:request("GET", "/x") end,
      function() return okta:batch({"/api/v1/users"}) end}) do
      local r, err = call()
      assert.is_nil(r)
      assert.equal("config", err.kind)
      assert.matches("closed", err.message, 1, true)
    end
    local ok, err = pcall(okta.paginate, okta, "/api/v1/users")
    assert.is_false(ok)
    assert.matches("closed", err.message, 1, true)
    it() -- the rest of the page in hand
    ok, err = pcall(function() for _ in it do end end) -- the next page needs the client
    assert.is_false(ok)
    assert.matches("closed", err.message, 1, true)
    assert.equal("oktadpop.client (closed)", tostring(okta))
    local session = assert(oktadpop.core.session{org_url = emu.url, client_id = CLIENT_ID, scopes = "okta.users.read",
      private_key = cc})
    local op = assert(session:operation("GET", "/api/v1/users"))
    session:close()
    local a = op:step(nil, os.time())
    assert.equal("fail", a.action)
    assert.matches("closed", a.error.message, 1, true)
  end)

  it("keeps paginating after the client's last reference is dropped and collected", function()
    local okta = client()
    local it = okta:paginate("/api/v1/users", {limit = 2})
    local weak = setmetatable({okta}, {__mode = "v"})
    assert.is_table(it())
    okta = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.is_not_nil(weak[1]) -- the iterator holds it
    assert.equal(USERS - 1, count_users(it))
    it = nil -- luacheck: ignore
    if jit then jit.flush() end -- a LuaJIT trace of the loop may hold the iterator as a constant
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1]) -- and lets it go with itself
  end)

  it("collects operations, iterators and clients in any order mid-flight", function()
    for round = 1, 6 do
      local okta = client()
      local session = assert(oktadpop.core.session{org_url = emu.url, client_id = CLIENT_ID, scopes = "okta.users.read",
        private_key = cc})
      local op = assert(session:operation("GET", "/api/v1/users", {query = {limit = 1}}))
      local action = op:step(nil, os.time()) -- a token fetch under way, never finished
      local it = okta:paginate("/api/v1/users", {limit = 3})
      it()
      if round % 2 == 0 then okta:close() session:close() end
      if round % 3 == 0 then op, action = nil, nil end -- luacheck: ignore
      okta, session = nil, nil -- luacheck: ignore
      collectgarbage()
      if op then assert.is_table(op:step(nil, os.time())) end
      op, action, it = nil, nil, nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
    end
  end)

  it("answers a client whose key was freed by hand (its __gc called) with an error, never a crash", function()
    local dpop = assert(oktadpop.generate_key("ES256"))
    local okta = client{dpop_key = dpop}
    assert(okta:get("/api/v1/users", {limit = 1}))
    getmetatable(dpop).__gc(dpop)
    getmetatable(dpop).__gc(dpop) -- twice is harmless too
    local body, err = okta:get("/api/v1/users", {limit = 1})
    assert.is_nil(body)
    assert.equal("key", err.kind)
    assert.matches("freed", err.message, 1, true)
    local ok, raised = pcall(oktadpop.dpop_proof, dpop, {htm = "GET", htu = "https://a.example/"})
    assert.is_false(ok) -- a freed key as an argument is a programmer's error
    assert.matches("freed", tostring(raised), 1, true)
    assert.matches("freed", tostring(dpop), 1, true)
  end)

  it("lets a key outlive the client that loaded it", function()
    local okta = client()
    local k = okta.dpop_key
    okta = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local proof = assert(oktadpop.dpop_proof(k, {htm = "GET", htu = "https://a.example/x"}))
    assert(oktadpop.verify_dpop_proof(proof, {htm = "GET", htu = "https://a.example/x"}))
  end)

  it("survives the module being opened again in the same state, old objects and all", function()
    local k = assert(oktadpop.generate_key("ES384"))
    local proof = assert(oktadpop.dpop_proof(k, {htm = "GET", htu = "https://a.example/x"}))
    local saved = package.loaded.oktadpop
    package.loaded.oktadpop = nil
    local again = require "oktadpop"
    package.loaded.oktadpop = saved
    assert.are_not.equal(saved, again)
    collectgarbage()
    collectgarbage()
    assert(again.verify_dpop_proof(proof, {htm = "GET", htu = "https://a.example/x"}))
    assert(again.dpop_proof(k, {htm = "GET", htu = "https://a.example/x", access_token = "t"}))
    assert.equal(oktadpop.ath("t"), again.ath("t"))
    local c = client{dpop_key = k}
    assert(again.core.session ~= nil and c:get("/api/v1/users", {limit = 1}))
  end)

  it("refuses a 100 MB key file (or .env) without reading it", function()
    local path = util.tmpfile()
    assert.is_true(util.run("truncate -s 100M " .. path))
    collectgarbage()
    collectgarbage("stop")
    local before, t0 = collectgarbage("count"), os.clock()
    local key, err = oktadpop.load_key(path)
    local grew, took = collectgarbage("count") - before, os.clock() - t0
    local env, err2 = oktadpop.from_env(path)
    collectgarbage("restart")
    assert.is_nil(key)
    assert.matches("larger than 1 MiB", err.message, 1, true)
    assert.is_true(grew < 1024, "grew " .. grew .. " KiB") -- not a 100 MiB buffer
    assert.is_true(took < 0.5)
    assert.is_nil(env)
    assert.matches("under 1 MiB", err2.message, 1, true)
    local okta, err3 = oktadpop.new{org_url = "https://acme.okta.com", client_id = "x", scopes = "a", private_key = path}
    assert.is_nil(okta)
    assert.matches("larger than 1 MiB", err3.message, 1, true)
  end)

  it("refuses a FIFO, a directory and a device as key files at once", function()
    local fifo = util.tmpfile()
    os.remove(fifo)
    assert.is_true(util.run("mkfifo " .. fifo))
    -- the guard: a writer that comes after 5 s, so a blocking open() would not hang forever
    os.execute("timeout 6 sh -c 'sleep 5; : > " .. fifo .. "' >/dev/null 2>&1 &")
    local t0 = os.time()
    for _, p in ipairs({fifo, "/tmp", "/dev/zero"}) do
      local key, err = oktadpop.load_key(p)
      assert.is_nil(key)
      assert.matches("not a regular file", err.message, 1, true)
    end
    local env, err = oktadpop.from_env(fifo)
    assert.is_nil(env)
    assert.matches("not a regular file", err.message, 1, true)
    assert.is_true(os.time() - t0 <= 2)
  end)

  describe("under GC stress", function()
    local modes = {{"setpause 0", function() collectgarbage("setpause", 0) end, function() collectgarbage("setpause", 200) end}}
    if _VERSION == "Lua 5.4" then
      modes[#modes + 1] = {"generational with full collections",
        function() collectgarbage("generational") end, function() collectgarbage("incremental") end}
    end
    for _, mode in ipairs(modes) do
      it("loads, signs, verifies and calls in a loop (" .. mode[1] .. ")", function()
        local htu = emu.url .. "/api/v1/users"
        mode[2]()
        local ok, err = pcall(function()
          for i = 1, 60 do
            local alg = i % 3 == 0 and "ES384" or "ES256"
            local k = assert(oktadpop.generate_key(alg, {kid = "k" .. i}))
            local k2 = assert(oktadpop.load_key(k:to_pem(true)))
            local pub = assert(oktadpop.load_key(k:public_jwk()))
            assert.equal(k:thumbprint(), pub:thumbprint())
            local proof = assert(oktadpop.dpop_proof(k2, {htm = "GET", htu = htu, access_token = "t" .. i, nonce = "n"}))
            assert(oktadpop.verify_dpop_proof(proof, {htm = "GET", htu = htu, access_token = "t" .. i, nonce = "n"}))
            local jwt = assert(oktadpop.sign_jwt(k, {sub = "s" .. i, nested = {a = {1, 2, {b = "c"}}}}))
            assert(oktadpop.verify_jwt(jwt, pub:public_jwk()))
            local c, h = oktadpop.decode_jwt(assert(oktadpop.client_assertion(k, "cid", "aud")))
            assert.equal("cid", c.iss)
            assert.equal(alg, h.alg)
            local okta = client{dpop_key = k2, debug = function(line) lines = line end}
            local session = assert(oktadpop.core.session{org_url = emu.url, client_id = CLIENT_ID, scopes = "s",
              private_key = cc, dpop_key = k2})
            assert.equal("store", session:token_operation():step(nil, os.time()).action)
            if i % 10 == 0 then
              assert.equal(2, #assert(okta:get("/api/v1/users", {limit = 2})))
              assert.equal(USERS, count_users(okta:paginate("/api/v1/users", {limit = 3})))
            end
            if i % 2 == 0 then okta:close() end
            local _ = tostring(okta) .. tostring(k) .. tostring(select(2, oktadpop.load_key("-----BEGIN junk")))
            if mode[1]:find("full") then collectgarbage() end
          end
        end)
        mode[3]()
        collectgarbage()
        assert(ok, tostring(err))
      end)
    end
  end)
end)
