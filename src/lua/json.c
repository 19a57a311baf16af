/* json.c: JSON through lua-cjson, reached with require "cjson.safe" (OpenResty bundles its
 * own cjson, so the module never links one). A private instance keeps users' settings out. */
/*** @module oktadpop */
#include <math.h>
#include "lua/oktadpop.h"

/* Untrusted bodies are decoded with a nesting bound well above any Okta document. */
#define OK_JSON_MAX_DEPTH 128

void ok_json_open(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson.safe");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  lua_call(L, 0, 1);
  lua_getfield(L, -1, "decode_max_depth");
  lua_pushinteger(L, OK_JSON_MAX_DEPTH);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "encode_invalid_numbers");
  lua_pushboolean(L, 0);
  lua_call(L, 1, 0);
  /* RFC 8259 numbers only: cjson's default takes NaN, Infinity and hex, and a NaN exp or iat
   * passes every comparison, so it would never expire. */
  lua_getfield(L, -1, "decode_invalid_numbers");
  lua_pushboolean(L, 0);
  lua_call(L, 1, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, OK_JSON_REG);
  lua_pop(L, 1);
}

static void push_json_fn(lua_State *L, const char *name) {
  lua_getfield(L, LUA_REGISTRYINDEX, OK_JSON_REG);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

int ok_json_encode(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  push_json_fn(L, "encode");
  lua_pushvalue(L, idx);
  lua_call(L, 1, 2);
  if (lua_isstring(L, -2)) { lua_pop(L, 1); return 1; }
  {
    const char *why = lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown";
    lua_pop(L, 2);
    ok_fail(L, "json", "cannot encode JSON: %s", why);
    return 0;
  }
}

#if LUA_VERSION_NUM >= 503
/* cjson 2.1 decodes every number as a float; on Lua 5.3+ whole numbers within 2^53 (ids,
 * counts, timestamps) become integers again, so 1795972228 does not print as 1795972228.0. */
static void integers(lua_State *L, int idx, int depth) {
  if (depth > OK_JSON_MAX_DEPTH) return;
  lua_checkstack(L, 4);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -1) == LUA_TTABLE && lua_getmetatable(L, -1) == 0) {
      integers(L, lua_gettop(L), depth + 1);
    } else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      double d = lua_tonumber(L, -1);
      if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, (lua_Integer)d);
        lua_rawset(L, idx); /* assigning an existing field during traversal is allowed */
      }
    } else if (lua_type(L, -1) == LUA_TTABLE) {
      lua_pop(L, 1); /* the metatable */
    }
    lua_pop(L, 1);
  }
}
#endif

int ok_json_decode(lua_State *L, const char *s, size_t n) {
  push_json_fn(L, "decode");
  lua_pushlstring(L, s, n);
  lua_call(L, 1, 2);
  if (!lua_isnil(L, -2)) {
    lua_pop(L, 1);
#if LUA_VERSION_NUM >= 503
    if (lua_istable(L, -1)) integers(L, lua_gettop(L), 0);
    else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) && lua_tonumber(L, -1) == floor(lua_tonumber(L, -1)) &&
             fabs(lua_tonumber(L, -1)) <= 9007199254740992.0) {
      lua_Integer i = (lua_Integer)lua_tonumber(L, -1);
      lua_pop(L, 1);
      lua_pushinteger(L, i);
    }
#endif
    return 1;
  }
  {
    const char *why = lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown";
    lua_pop(L, 2);
    ok_fail(L, "json", "invalid JSON: %s", why);
    return 0;
  }
}

void ok_json_add_string(lua_State *L, luaL_Buffer *b, const char *s, size_t n) {
  push_json_fn(L, "encode");
  lua_pushlstring(L, s, n);
  lua_call(L, 1, 1);
  luaL_addvalue(b);
}

/*** oktadpop.null: the value JSON null decodes to (cjson.null).
 * @function null
 */
void ok_json_push_null(lua_State *L) {
  push_json_fn(L, "null");
}
