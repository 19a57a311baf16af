/* class.c: one way to make a Lua class of userdata, as luaossl's pk_luainit does: its metatable
 * registered once under its name (a second luaopen finds it made), with __name, the
 * metamethods, and __index to the methods (or, when the metamethods bring their own __index,
 * that function with the methods table as its upvalue). */
#include "lua/oktadpop.h"

void ok_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods) {
  lua_CFunction index;
  if (!luaL_newmetatable(L, name)) { lua_pop(L, 1); return; }
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  if (metamethods) luaL_setfuncs(L, metamethods, 0);
  lua_getfield(L, -1, "__index");
  index = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    if (index) lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}
