/* module.c: the module entry: luaopen_oktadpop builds the module table: keys and JOSE, the
 * client constructors (oktadpop.new, from_env: the plain driver, lua/oktadpop/curl.lua),
 * oktadpop.core for drivers, oktadpop.libcurl (the plain driver's transport) and, when the
 * Lua files are installed, oktadpop.pretty. Safe to call again (busted reloads modules):
 * metatables are made once, global init runs once. */
/*** @module oktadpop */
#include "binding/binding.h"

__attribute__((visibility("default"))) int luaopen_oktadpop(lua_State *L);

/* Calls the plain driver's function `name` (lua/oktadpop/curl.lua) with this call's
 * arguments; required at the call, when this module is loaded and can be required back. */
static int to_driver(lua_State *L, const char *name) {
  int nargs = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "oktadpop.curl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, name);
  lua_replace(L, -2);
  lua_insert(L, 1);
  lua_call(L, nargs, LUA_MULTRET);
  return lua_gettop(L);
}

/*** oktadpop.new(config) -> client | nil, err
 * @function new
 */
static int client_new(lua_State *L) { return to_driver(L, "new"); }

/*** oktadpop.from_env([dotenv_path [, config]]) -> client | nil, err: the .env and environment's
 * settings, then config's own (debug=, timeout=, ...) over them.
 * @function from_env
 */
static int client_from_env(lua_State *L) { return to_driver(L, "from_env"); }

/* oktadpop.pretty from lua/oktadpop/pretty.lua, when the Lua files are installed. */
static void open_pretty(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "oktadpop.pretty");
  if (lua_pcall(L, 1, 1, 0) != 0) { /* the .so alone: no pretty, nothing else lost */
    lua_pushnil(L);
    lua_replace(L, -2);
  }
  lua_setfield(L, -2, "pretty");
}

int luaopen_oktadpop(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"load_key", ok_key_loadkey},
      {"generate_key", ok_key_generate},
      {"sign_jwt", ok_jws_sign_jwt},
      {"decode_jwt", ok_jws_decode_jwt},
      {"verify_jwt", ok_jws_verify_jwt},
      {"client_assertion", ok_client_assertion},
      {"dpop_proof", ok_dpop_proof},
      {"ath", ok_dpop_ath},
      {"random", ok_random},
      {"escape", ok_escape},
      {"verify_dpop_proof", ok_dpop_verify},
      {"htu", ok_htu},
      {"outfile", ok_outfile_new},
      {"new", client_new},
      {"from_env", client_from_env},
      {NULL, NULL}};
  ok_json_open(L);
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_pushliteral(L, OKTADPOP_VERSION);
  lua_setfield(L, -2, "_VERSION");
  ok_json_push_null(L);
  lua_setfield(L, -2, "null");
  ok_errors_open(L);
  ok_keys_open(L);
  ok_keycache_open(L);
  ok_outfile_open(L);
  ok_transport_open(L);
  ok_redis_open(L);
  open_pretty(L);
  ok_core_open(L); /* the core table, for drivers */
  ok_setup_open(L);
  ok_store_open(L);
  lua_setfield(L, -2, "core");
  return 1;
}
