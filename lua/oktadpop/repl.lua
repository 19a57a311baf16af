-- oktadpop.repl: the interactive session of `oktadpop repl`. Each line is Lua, run with `okta`
-- (the client from .env) and `oktadpop` at hand; `= expr` works as in lua5.1. What a line gives
-- is printed once, with oktadpop.pretty: the value (a call's extra values, such as get's
-- response, are not repeated), the error of a nil, err answer, and for an iterator its first
-- items, the rest kept in `rest`. With Debian's lua-readline at a terminal: line editing,
-- history in ~/.oktadpop_history, and completion that follows the object (okta.users:li<Tab>);
-- from a pipe, plain lines without prompts.
local M = {}

-- How many items of an iterator are shown.
M.FIRST_ITEMS = 5

local function is_terminal()
  local ok = os.execute("test -t 0 2>/dev/null")
  return ok == true or ok == 0
end

-- Names a userdata answers to that no table lists (their __index is C): the client's methods,
-- helpers and fields, and a key's.
local CLIENT_NAMES = {"get", "post", "put", "patch", "delete", "request", "paginate", "poll", "batch", "token", "close",
                      "users", "groups", "apps", "factors", "logs", "org_url", "client_id", "scopes", "token_url",
                      "stats", "timeout", "connect_timeout", "max_body", "max_concurrency", "dpop_key", "private_key",
                      "closed"}
local KEY_NAMES = {"alg", "kid", "kty", "private", "bits", "public_jwk", "thumbprint", "to_pem", "save_pem"}

-- Every name of value: its keys and those of its __index chain, or a client's or a key's
-- known names (a client's fields are its workings, and __index answers for it).
local function names_of(value, client_mt)
  local names, seen = {}, {}
  local function add(k) if type(k) == "string" and not seen[k] then seen[k] = true names[#names + 1] = k end end
  local mt = getmetatable(value)
  if type(value) == "userdata" or (client_mt and mt == client_mt) then
    local list = mt == client_mt and CLIENT_NAMES or (mt and mt.__name == "oktadpop.key") and KEY_NAMES or {}
    for _, k in ipairs(list) do add(k) end
    return names
  end
  local t, depth = value, 0
  while type(t) == "table" and depth < 8 do
    for k in pairs(t) do add(k) end
    local mt = getmetatable(t)
    t, depth = mt and type(mt.__index) == "table" and mt.__index or nil, depth + 1
  end
  return names
end

--- Completions for the word before the cursor (readline's text, from, to): names of the
-- session, or the fields of the object a dotted path names; after ":" its methods only. The
-- path is walked field by field, never run, so a Tab never calls anything.
function M.completions(env, word, client_mt)
  local object, sep, prefix = word:match("^([%a_][%w_%.]*)([.:])([%w_]*)$")
  local out, value = {}, env
  if object then
    for part in object:gmatch("[^.]+") do
      local ok, v = pcall(function() return value[part] end)
      if not ok or v == nil or (type(v) ~= "table" and type(v) ~= "userdata") then return out end
      value = v
    end
  else
    prefix = word
  end
  local names = names_of(value, client_mt)
  if not object then for k in pairs(_G) do names[#names + 1] = k end end
  local seen = {}
  for _, name in ipairs(names) do
    if not seen[name] and name:sub(1, #prefix) == prefix and name:find("^[%a_][%w_]*$") then
      seen[name] = true
      local ok, v = pcall(function() return value[name] end)
      if sep ~= ":" or (ok and (type(v) == "function" or type(v) == "table" and getmetatable(v) and getmetatable(v).__call)) then
        out[#out + 1] = (object and object .. sep or "") .. name
      end
    end
  end
  table.sort(out)
  return out
end

-- A line source: readline at a terminal (when installed), else io.read.
local function reader(env, client_mt)
  local rl
  if is_terminal() then
    local ok, lib = pcall(require, "readline")
    if ok then
      rl = lib
      rl.set_options{histfile = "~/.oktadpop_history", keeplines = 1000, completion = true}
      rl.set_complete_function(function(text, from, to)
        rl.set_completion_append_character("") -- a name is followed by . : ( or a space, as the user goes on
        return M.completions(env, text:sub(from, to), client_mt)
      end)
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

-- Compiles a chunk as an expression first (so `okta:get(...)` prints its answer), else as
-- statements; "incomplete" when more lines are needed. The second result says it was a call
-- (whose function answer is an iterator to show).
local function compile(code, env)
  code = code:gsub("^%s*=", "", 1) -- `= expr`, as lua5.1 has it
  local fn = load("return " .. code, "=repl", "t", env)
  if fn then return fn, nil, code:find("[%)}\"']%s*$") ~= nil end -- f(...), f{...}, f"..."
  local err
  fn, err = load(code, "=repl", "t", env)
  if fn then return fn end
  if err:find("<eof>$") then return nil, "incomplete" end
  return nil, err
end

-- Prints what a line gave: its first value once; an error for nil, err; an iterator's first items.
local function show(env, pretty, was_call, n, first, second)
  if n == 0 then return end
  if first == nil and second ~= nil then
    io.stdout:write(tostring(second), "\n")
    return
  end
  if type(first) == "function" and was_call then
    local shown = 0
    while shown < M.FIRST_ITEMS do
      local item = first()
      if item == nil then
        if shown == 0 then io.stdout:write("(no items)\n") end
        return
      end
      shown = shown + 1
      io.stdout:write(pretty(item), "\n")
    end
    env.rest = first
    io.stdout:write(("(the first %d items: `rest` holds the others; rest() gives the next, "):format(shown),
                    "`for item in rest do ... end` walks them)\n")
    return
  end
  io.stdout:write(pretty(first), "\n")
end

--- run{okta=, oktadpop=, config_error=}: reads and runs lines until the end of input.
function M.run(names)
  local oktadpop = names.oktadpop
  local env = setmetatable({okta = names.okta, oktadpop = oktadpop, pretty = oktadpop.pretty},
                           {__index = _G, __newindex = function(t, k, v) rawset(t, k, v) end})
  local read, done = reader(env, names.okta and getmetatable(names.okta))
  if not names.okta then
    io.stderr:write("oktadpop repl: no client: ", tostring(names.config_error or "no configuration"):gsub("^oktadpop ", ""),
                    "\n`oktadpop` is loaded: okta = oktadpop.from_env(path) or oktadpop.new{...} makes one\n")
  end
  local pending = ""
  while true do
    local line = read(pending == "" and "okta> " or "....> ")
    if not line then break end
    local code = pending == "" and line or (pending .. "\n" .. line)
    local fn, err, was_call = compile(code, env)
    if err == "incomplete" then
      pending = code
    else
      pending = ""
      if not fn then
        io.stdout:write(err, "\n")
      else
        local results = table.pack(pcall(fn))
        if results[1] then
          local ok, perr = pcall(show, env, oktadpop.pretty, was_call, results.n - 1, results[2], results[3])
          if not ok then io.stdout:write(tostring(perr), "\n") end
        else
          io.stdout:write(tostring(results[2]), "\n")
        end
      end
    end
  end
  done()
  if env.okta then env.okta:close() end
end

return M
