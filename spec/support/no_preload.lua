-- spec/support/no_preload.lua: busted --helper for `make asan` (scripts/asan). The interpreter
-- runs with the ASan runtime in LD_PRELOAD; the programs the specs start through the shell
-- (sh's children: node, curl, openssl) must not inherit it, or their own leaks and reports
-- would be taken for oktadpop's. Every io.popen and os.execute command is prefixed so that
-- the shell drops the sanitizer variables before it runs anything.
local drop = "unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; "
local popen, execute = io.popen, os.execute
io.popen = function(cmd, ...) return popen(drop .. cmd, ...) end -- luacheck: ignore
os.execute = function(cmd, ...) -- luacheck: ignore
  if cmd == nil then return execute() end
  return execute(drop .. cmd, ...)
end
