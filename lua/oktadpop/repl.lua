-- oktadpop.repl: the interactive session of `oktadpop repl`. Each line is Lua, run with `okta`
-- (the client from .env) and `oktadpop` at hand; what it returns is printed with
-- oktadpop.pretty (error objects as their message). An unfinished statement reads on. With
-- Debian's lua-readline and a terminal: line editing, history in ~/.oktadpop_history, and
-- completion of names; from a pipe, plain lines without prompts.
local M = {}

local function is_terminal()
  local ok = os.execute("test -t 0 2>/dev/null")
  return ok == true or ok == 0
end

-- Completions for the word under the cursor: the session's names and okta's methods.
local function completer(env)
  return function(text)
    local object, sep, prefix = text:match("^(.-)([.:])([%w_]*)$")
    local source, out = env, {}
    if object then
      local ok, value = pcall(load("return " .. object, "=completion", "t", env))
      source = ok and value or nil
    else
      prefix = text
    end
    local seen = {}
    local function add(name)
      if type(name) == "string" and name:sub(1, #prefix) == prefix and not seen[name] then
        seen[name] = true
        out[#out + 1] = (object and object .. sep or "") .. name
      end
    end
    if type(source) == "table" then for k in pairs(source) do add(k) end end
    if object and (type(source) == "userdata" or type(source) == "table") then
      for _, m in ipairs({"get", "post", "put", "patch", "delete", "request", "paginate", "poll", "batch", "token",
                          "close", "users", "groups", "apps", "factors", "logs"}) do add(m) end
    end
    if not object then for k in pairs(_G) do add(k) end end
    table.sort(out)
    return out
  end
end

-- A line source: readline at a terminal (when installed), else io.read.
local function reader(env)
  local rl
  if is_terminal() then
    local ok, lib = pcall(require, "readline")
    if ok then
      rl = lib
      rl.set_options{histfile = "~/.oktadpop_history", keeplines = 1000, completion = true}
      rl.set_complete_function(completer(env))
    end
  end
  if rl then
    return function(prompt)
      local line = rl.readline(prompt)
      if line and line:find("%S") then rl.add_history(line) end
      return line
    end, function() rl.save_history() end
  end
  local prompts = is_terminal()
  return function(prompt)
    if prompts then io.stdout:write(prompt) io.stdout:flush() end
    return io.read("l")
  end, function() end
end

local function show(pretty, ...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    io.stdout:write(pretty(v), "\n")
  end
end

-- Compiles a chunk as an expression first (so `okta:get(...)` prints its answer), else as
-- statements; "incomplete" when more lines are needed.
local function compile(code, env)
  local fn = load("return " .. code, "=repl", "t", env)
  if fn then return fn end
  local err
  fn, err = load(code, "=repl", "t", env)
  if fn then return fn end
  if err:find("<eof>$") then return nil, "incomplete" end
  return nil, err
end

-- run{okta=, oktadpop=}: reads and runs lines until the end of input.
function M.run(names)
  local oktadpop = names.oktadpop
  local env = setmetatable({okta = names.okta, oktadpop = oktadpop, pretty = oktadpop.pretty},
                           {__index = _G, __newindex = function(t, k, v) rawset(t, k, v) end})
  local read, done = reader(env)
  if not names.okta then
    io.stderr:write("oktadpop repl: no client (set OKTA_ORG_URL and the rest in .env); `oktadpop` is loaded\n")
  end
  local pending = ""
  while true do
    local line = read(pending == "" and "okta> " or "....> ")
    if not line then break end
    local code = pending == "" and line or (pending .. "\n" .. line)
    local fn, err = compile(code, env)
    if err == "incomplete" then
      pending = code
    else
      pending = ""
      if not fn then
        io.stdout:write(err, "\n")
      else
        local results = table.pack(pcall(fn))
        if results[1] then show(oktadpop.pretty, table.unpack(results, 2, results.n))
        else io.stdout:write(tostring(results[2]), "\n") end
      end
    end
  end
  done()
  if names.okta then names.okta:close() end
end

return M
