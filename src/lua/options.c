/* options.c: reading option and config tables with one rule: a value of the wrong type or out
 * of range inside a table returns nil, err of kind "config" naming the option; numbers must be
 * finite and in range before any cast (no 1e300 or -inf reaches a long long). */
#include <math.h>
#include <string.h>
#include "lua/oktadpop.h"

int ok_opts_known(lua_State *L, int idx, const char *what, const char *const *names) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int known = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; names[i] && !known; i++) known = strcmp(lua_tostring(L, -1), names[i]) == 0;
    if (!known) {
      const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
      lua_pushfstring(L, "unknown %s option '%s'", what, key);
      ok_fail(L, "config", "%s", lua_tostring(L, -1));
      return 0;
    }
  }
  return 1;
}

int ok_opt_number(lua_State *L, int idx, const char *name, double dflt, double lo, double hi, double *out) {
  int t;
  lua_getfield(L, idx, name);
  t = lua_type(L, -1);
  *out = t == LUA_TNUMBER ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  if (t != LUA_TNUMBER && t != LUA_TNIL) return ok_fail(L, "config", "%s must be a number", name), 0;
  if (!isfinite(*out) || *out < lo || *out > hi)
    return ok_fail(L, "config", "%s must be a number from %g to %g", name, lo, hi), 0;
  return 1;
}

int ok_opt_string(lua_State *L, int idx, const char *name, const char **out, size_t *len) {
  size_t n = 0;
  int t;
  lua_getfield(L, idx, name);
  t = lua_type(L, -1);
  *out = t == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  lua_pop(L, 1); /* the table still holds the string */
  if (len) *len = n;
  if (t != LUA_TSTRING && t != LUA_TNIL) return ok_fail(L, "config", "%s must be a string", name), 0;
  if (*out && strlen(*out) != n) return ok_fail(L, "config", "%s must not contain a NUL byte", name), 0;
  return 1;
}
