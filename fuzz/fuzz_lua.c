/* fuzz_lua: the driver of the Lua-level targets (fuzz_key, fuzz_jwt). It makes one Lua 5.4
 * state, opens oktadpop from the objects linked into this binary (luaopen_oktadpop; cjson
 * comes from Debian's lua-cjson through the default package.cpath) and runs the target's
 * Lua harness (fuzz/<target>.lua, path baked in as HARNESS, or $FUZZ_HARNESS). The harness
 * returns function(data); any error it raises is a finding: it raises when a call that must
 * answer nil, err raised instead, or when a property of a successful answer is false. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "../src/jose/jose.h"

#ifndef HARNESS
#error "build with -DHARNESS=\"path/to/harness.lua\""
#endif

int luaopen_oktadpop(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static unsigned long runs;

/* fuzz_sign(key, header_json, payload_json) -> compact JWS over those exact bytes, so the
 * harness can reach the checks behind the signature with any header and claims. */
static int fuzz_sign(lua_State *Ls) {
  ok_key *k = ok_key_check(Ls, 1);
  size_t hn, pn;
  const char *h = luaL_checklstring(Ls, 2, &hn), *p = luaL_checklstring(Ls, 3, &pn);
  ok_b64url_push(Ls, (const unsigned char *)h, hn);
  h = lua_tolstring(Ls, -1, &hn);
  return ok_jws_sign(Ls, k, h, hn, p, pn) ? 1 : 2;
}

/* fuzz_b64(s) -> base64url(s), for harnesses that wrap fuzzed JSON in a token's form. */
static int fuzz_b64(lua_State *Ls) {
  size_t n;
  const char *s = luaL_checklstring(Ls, 1, &n);
  ok_b64url_push(Ls, (const unsigned char *)s, n);
  return 1;
}

static int traceback(lua_State *Ls) {
  luaL_traceback(Ls, Ls, lua_tostring(Ls, 1), 1);
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *harness = getenv("FUZZ_HARNESS") ? getenv("FUZZ_HARNESS") : HARNESS;
  (void)argc; (void)argv;
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushcfunction(L, luaopen_oktadpop);
  lua_call(L, 0, 1);
  lua_pushvalue(L, -1);
  lua_setglobal(L, "oktadpop");
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "oktadpop");
  lua_pop(L, 2);
  lua_register(L, "fuzz_sign", fuzz_sign);
  lua_register(L, "fuzz_b64", fuzz_b64);
  lua_pushcfunction(L, traceback);
  if (luaL_loadfile(L, harness) != 0 || lua_pcall(L, 0, 1, 1) != 0 || !lua_isfunction(L, -1)) {
    fprintf(stderr, "fuzz_lua: cannot load %s: %s\n", harness, lua_tostring(L, -1));
    exit(2);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.run");
  lua_settop(L, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_pushcfunction(L, traceback);
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.run");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 1) != 0) {
    fprintf(stderr, "fuzz_lua: finding: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, 0);
  /* Collect every time: freed objects are poisoned for ASan at once, and libFuzzer's leak
   * check sees balanced malloc/free instead of Lua's garbage. */
  lua_gc(L, LUA_GCCOLLECT, 0);
  runs++;
  return 0;
}
