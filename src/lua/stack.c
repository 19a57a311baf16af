/* stack.c: moving results on the Lua stack, for C functions that build an answer above their
 * working values and hand back only the answer. */
#include "lua/oktadpop.h"

int ok_keep(lua_State *L, int base, int n) {
  int top = lua_gettop(L);
  for (int i = 1; i <= n; i++) lua_copy(L, top - n + i, base + i); /* targets never pass sources */
  lua_settop(L, base + n);
  return n;
}
