/* oktadpop.c: the module entry: luaopen_oktadpop builds the module table: keys and JOSE, the
 * client (oktadpop.new, from_env), pretty, and oktadpop.core for drivers. Safe to call again
 * (busted reloads modules): metatables are made once, global init runs once. */
#include "driver.h"

__attribute__((visibility("default"))) int luaopen_oktadpop(lua_State *L);

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
  ok_pretty_open(L);
  ok_core_open(L); /* the core table, for drivers */
  ok_setup_open(L);
  ok_store_open(L);
  ok_client_open(L);
  lua_setfield(L, -2, "core");
  return 1;
}
