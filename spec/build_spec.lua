-- The build and the design, checked on the built objects: what the .so needs and exports,
-- that the protocol core does no I/O and calls no driver (its objects' undefined symbols, and
-- its includes), and that the Makefile rebuilds on a flag change and names a missing package.
local util = require "spec.support.util"

local sh = util.sh

-- The layers, innermost first (README: The design). An object may call what its own folder
-- or an inner layer defines, never an outer one; transport and core sit side by side and
-- never call each other.
local LAYERS = {pure = 0, lua = 1, jose = 2, core = 3, transport = 3, binding = 4}

-- Names the core must never call: a driver's, libcurl's, or any I/O, clock or environment.
local FORBIDDEN = {
  "^curl_", "^ok_store_", "^ok_setup_", "^ok_transport_", "^ok_read_small_file$", "^ok_key_file_mode$",
  "^open", "^read$", "^write$", "^close$", "^fopen", "^fread$", "^fwrite$", "^v?fprintf$", "^__v?fprintf_chk$",
  "^printf$", "^__printf_chk$", "^puts$", "^fputs$", "^f?stat", "^__x?stat", "^access$", "^getenv$", "^secure_getenv$",
  "^time$", "^clock_gettime$", "^gettimeofday$", "^nanosleep$", "^u?sleep$", "^socket$", "^connect$", "^send",
  "^recv", "^poll$", "^select$", "^lua_[pc]?call", "^lua_callk$", "^lua_pcallk$",
}

local function undefined(obj)
  local names = {}
  for name in sh("nm -u " .. obj):gmatch("U ([%w_@.]+)") do names[#names + 1] = name:gsub("@.*$", "") end
  return names
end

-- Every object of the 5.4 build: {path=, folder=, name=}.
local function objects()
  local out = {}
  for path in sh("ls build/5.4/*/*.o"):gmatch("%S+") do
    local folder, name = path:match("build/5%.4/([%w_]+)/([%w_]+)%.o$")
    out[#out + 1] = {path = path, folder = folder, name = name}
  end
  return out
end

-- Which object defines each of our global symbols.
local function definers(objs)
  local by = {}
  for _, o in ipairs(objs) do
    for name in sh("nm --defined-only " .. o.path):gmatch("%x+ [TDBR] ([%w_]+)") do by[name] = o end
  end
  return by
end

describe("the build #once", function()
  for _, so in ipairs({"build/5.4/oktadpop.so", "build/5.1/oktadpop.so"}) do
    it(so .. " needs libcrypto, libcurl, libhiredis and libm, and exports only luaopen_oktadpop", function()
      local dyn = sh("readelf -d " .. so)
      for _, lib in ipairs({"libcrypto.so", "libcurl.so", "libhiredis.so", "libm.so"}) do
        assert.matches("NEEDED.-%[" .. lib:gsub("%.", "%%."), dyn)
      end
      assert.is_nil(dyn:match("liblua"), "the host supplies Lua: never linked")
      local exported = {}
      for name in sh("nm -D --defined-only " .. so):gmatch("%x+ [TDBRV] ([%w_]+)") do exported[#exported + 1] = name end
      assert.same({"luaopen_oktadpop"}, exported)
    end)
  end

  it("keeps the protocol core free of I/O, clocks, the environment and drivers", function()
    for _, o in ipairs(objects()) do
      if o.folder == "core" then
        for _, name in ipairs(undefined(o.path)) do
          for _, bad in ipairs(FORBIDDEN) do
            assert.is_nil(name:match(bad), ("src/core/%s.c calls %s"):format(o.name, name))
          end
        end
        local src = util.readfile("src/core/" .. o.name .. ".c")
        assert.is_nil(src:match('#include "binding/'), "src/core/" .. o.name .. ".c includes the binding")
        assert.is_nil(src:match('#include "transport/'), "src/core/" .. o.name .. ".c includes a transport")
        assert.is_nil(src:match("#include <curl/"), "src/core/" .. o.name .. ".c includes curl")
      end
    end
    for _, h in ipairs({"core/core.h", "core/op.h", "jose/jose.h", "lua/oktadpop.h", "pure/pure.h"}) do
      assert.is_nil(util.readfile("src/" .. h):match("#include [<\"]curl"), h .. " includes curl")
      assert.is_nil(util.readfile("src/" .. h):match('#include "binding/'), h .. " includes the binding")
    end
  end)

  it("keeps the pure helpers free of Lua", function()
    for _, o in ipairs(objects()) do
      if o.folder == "pure" then
        for _, name in ipairs(undefined(o.path)) do
          assert.is_nil(name:match("^lua"), ("src/pure/%s.c calls %s"):format(o.name, name))
        end
      end
    end
  end)

  it("points every arrow inward, and has no circle between object files", function()
    local objs = objects()
    local by, edges = definers(objs), {}
    for _, o in ipairs(objs) do
      assert.is_not_nil(LAYERS[o.folder], "src/" .. o.folder .. " is not a known layer")
      edges[o.path] = {}
      for _, name in ipairs(undefined(o.path)) do
        local d = by[name]
        if d and d ~= o then
          local inward = LAYERS[d.folder] < LAYERS[o.folder] or d.folder == o.folder
          assert.is_true(inward, ("src/%s/%s.c calls %s of src/%s/%s.c, an outer or parallel layer"):format(
            o.folder, o.name, name, d.folder, d.name))
          edges[o.path][d.path] = name
        end
      end
    end
    local state = {} -- depth-first search: "open" while on the path, "done" after
    local function visit(path, trail)
      if state[path] == "done" then return end
      assert.is_nil(state[path] == "open" and path or nil, "a circle: " .. table.concat(trail, " -> ") .. " -> " .. path)
      state[path] = "open"
      trail[#trail + 1] = path
      for next_path in pairs(edges[path]) do visit(next_path, trail) end
      trail[#trail] = nil
      state[path] = "done"
    end
    for _, o in ipairs(objs) do visit(o.path, {}) end
  end)

  it("keeps every C file under 500 lines and every C function under 60", function()
    for path in sh("ls src/*/*.c src/*/*.h"):gmatch("%S+") do
      local lines, name, start, n = {}, nil, nil, 0
      for line in util.readfile(path):gmatch("([^\n]*)\n") do
        n = n + 1
        if line:match("^[%a_].*%(.*%) {$") then name, start = line, n
        elseif line == "}" and name then
          assert.is_true(n - start + 1 <= 60, ("%s: %s is %d lines"):format(path, name, n - start + 1))
          name = nil
        end
        lines[#lines + 1] = line
      end
      assert.is_true(n <= 500, ("%s is %d lines"):format(path, n))
    end
  end)

  it("names the package pkg-config cannot find, and stops", function()
    local out, rc = sh("(make -s BUILD=build/spec-nopc PKG_CONFIG=false 2>&1; echo rc=$?)"):match("^(.*)rc=(%d+)")
    assert.are_not.equal("0", rc)
    assert.matches("pkg-config cannot find lua5.4: install the Debian package liblua5.4-dev", out, 1, true)
    assert.is_nil(out:match("\ncc "), "nothing is compiled without the flags")
    os.execute("rm -rf build/spec-nopc")
  end)

  it("rebuilds when a flag changes, and only then; refuses an unknown LUA", function()
    local dir = "build/spec-flags"
    os.execute("rm -rf " .. dir)
    local function build(cflags)
      return sh(("(make -j2 BUILD=%s CFLAGS='%s' %s/oktadpop.so 2>&1)"):format(dir, cflags, dir))
    end
    assert.matches("src/core/session.c", build("-O0"))
    assert.is_nil(build("-O0"):match("src/core/session.c"), "nothing changed: nothing rebuilt")
    assert.matches("src/core/session.c", build("-O0 -DOKTADPOP_SPEC"))
    os.execute("rm -rf " .. dir)
    assert.matches("LUA must be lua5.4 or luajit", sh("(make -n LUA=lua5.3 2>&1)"), 1, true)
  end)

  it("makes the API reference: every documented function, in the README's order", function()
    os.execute("rm -rf build/docs")
    sh("make -s docs 2>&1")
    local index = util.readfile("build/docs/index.html")
    for _, module in ipairs{"oktadpop", "oktadpop.admin", "oktadpop.resty", "oktadpop.resty.redis", "oktadpop.resty.guard"} do
      assert.matches(">" .. module .. "<", index, 1, true)
    end
    local main = util.readfile("build/docs/modules/oktadpop.html")
    local documented = {}
    for name in main:gmatch('<a name = "([%w_.:]+)"></a>') do documented[#documented + 1] = name end
    -- every function the C sources document is in the reference
    for name in util.sh("cat src/*/*.c"):gmatch("@function ([%w_.:]+)") do
      assert.matches('<a name = "' .. name .. '">', main, 1, true)
    end
    -- in the README's order: each name's first mention in the API section comes after the last's
    local readme = util.readfile("README.md")
    local api = readme:sub(readme:find("\n### Keys and JOSE\n", 1, true), readme:find("\n## Inside nginx", 1, true))
    local last, seen = 0, 0
    for _, name in ipairs(documented) do
      local at
      for _, form in ipairs({"oktadpop." .. name .. "(", "oktadpop." .. name .. "{", name .. "("}) do
        local found = api:find(form, 1, true)
        while found and api:sub(found - 1, found - 1):find("[%w_.:]") do found = api:find(form, found + 1, true) end
        if found and (not at or found < at) then at = found end
      end
      if at and not name:find("^store:") and not name:find("^core%.") and not name:find("^session:")
         and not name:find("^op:") then
        assert.is_true(at > last, name .. " comes before the function above it in the README")
        last, seen = at, seen + 1
      end
    end
    assert.is_true(seen >= 30, "names found in the README: " .. seen)
    for _, fn in ipairs{"client:get", "client:delete", "key:thumbprint", "pretty", "outfile"} do
      assert.matches('<a name = "' .. fn .. '">', main, 1, true)
    end
    assert.matches('<a name = "logs:query">', util.readfile("build/docs/modules/oktadpop.admin.html"), 1, true)
  end)

  it("lists every C source and Lua module in both rockspecs", function()
    local sources = {}
    for f in sh("ls src/*/*.c"):gmatch("%S+") do sources[#sources + 1] = f end
    local modules = {}
    for f in sh("find lua -name '*.lua' | sort"):gmatch("%S+") do modules[#modules + 1] = f end
    for _, rockspec in ipairs({"oktadpop-scm-1.rockspec", "oktadpop-0.1.0-1.rockspec"}) do
      local env = {}
      assert(load(util.readfile(rockspec), rockspec, "t", env))()
      local listed = env.build.modules.oktadpop.sources
      table.sort(listed)
      assert.same(sources, listed, rockspec)
      local lua_files = {}
      for name, file in pairs(env.build.modules) do
        if type(file) == "string" then
          assert.equal("lua/" .. name:gsub("%.", "/") .. ".lua", file)
          lua_files[#lua_files + 1] = file
        end
      end
      table.sort(lua_files)
      assert.same(modules, lua_files, rockspec)
    end
  end)

  it("makes a release: the tarball of HEAD, and a rock luarocks builds offline from it", function()
    local version = sh("sed -n 's/^#define OKTADPOP_VERSION \"\\(.*\\)\"$/\\1/p' src/lua/oktadpop.h"):gsub("%s+$", "")
    local name = "oktadpop-" .. version
    assert.equal(version .. "-1", (sh("lua5.4 -e 'dofile(\"" .. name .. "-1.rockspec\") print(version)'"):gsub("%s+$", "")))
    assert.matches(name .. "-1.src.rock", sh("make -s dist 2>&1"), 1, true)
    assert.equal(sh("git ls-files | sort"), sh("tar -tzf dist/" .. name .. ".tar.gz | sed -n 's|^" .. name
      .. "/||p' | grep -v -e '/$' -e '^$' | sort"))
    local rock = "dist/" .. name .. "-1.src.rock"
    assert.equal(name .. "-1.rockspec\n" .. name .. ".tar.gz\n", sh("unzip -Z1 " .. rock .. " | sort"))
    assert.matches('url = "' .. name .. '.tar.gz"', sh("unzip -p " .. rock .. " " .. name .. "-1.rockspec"), 1, true)
    local tree = sh("mktemp -d"):gsub("%s+$", "")
    local out = sh(("root=$(pwd) && cd /tmp && luarocks --tree %s build --deps-mode=none \"$root/%s\" 2>&1"):format(tree, rock))
    assert.matches("oktadpop " .. version .. "-1 is now installed", out, 1, true)
    local loaded = sh(("luajit -e \"package.cpath='%s/lib/lua/5.1/?.so;'..package.cpath package.path='%s/share/lua/5.1/?.lua;'..package.path "
      .. "local o = require 'oktadpop' require 'oktadpop.admin' io.write(o._VERSION, ' ', o.generate_key('ES256').alg)\"")
      :format(tree, tree))
    os.execute("rm -rf " .. tree)
    assert.equal(version .. " ES256", loaded)
  end)
end)
