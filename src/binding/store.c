/* store.c: the in-process store. A store has
 * five calls with the signatures of nginx's ngx.shared.DICT: get(key), set(key, value, ttl),
 * add(key, value, ttl) (false when the key exists), incr(key, by, init, init_ttl), delete(key).
 * The memory store is one process's (the libcurl driver's default, and a worker's in nginx
 * without a shared dict); a shared dict, or Redis behind those five calls, shares the token,
 * the concurrency count and the rate-limit counts between processes. */
/*** @module oktadpop */
#include <time.h>
#include "binding/binding.h"

#define OK_SWEEP_EVERY 1024 /* writes between sweeps of expired keys */

typedef struct ok_store { unsigned writes; } ok_store;

static double monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The uservalue holds two tables: [1] values, [2] expiry times (monotonic seconds). */
static void tables(lua_State *L, int idx) {
  lua_getuservalue(L, idx);
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);
  lua_remove(L, -3);
}

static void sweep(lua_State *L, int vals, int exps, double now) {
  lua_pushnil(L);
  while (lua_next(L, exps)) {
    if (lua_tonumber(L, -1) <= now) { /* clearing fields during traversal is allowed */
      lua_pushvalue(L, -2); lua_pushnil(L); lua_rawset(L, vals);
      lua_pushvalue(L, -2); lua_pushnil(L); lua_rawset(L, exps);
    }
    lua_pop(L, 1);
  }
}

/* Pushes the live value of key (nil when absent or expired). */
static void live(lua_State *L, int vals, int exps, int key, double now) {
  lua_pushvalue(L, key);
  lua_rawget(L, exps);
  if (lua_isnumber(L, -1) && lua_tonumber(L, -1) <= now) {
    lua_pushvalue(L, key); lua_pushnil(L); lua_rawset(L, vals);
    lua_pushvalue(L, key); lua_pushnil(L); lua_rawset(L, exps);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, key);
  lua_rawget(L, vals);
}

static void put(lua_State *L, int vals, int exps, int key, int val, double ttl, double now) {
  ok_store *st = luaL_checkudata(L, 1, OK_STORE_MT);
  lua_pushvalue(L, key); lua_pushvalue(L, val); lua_rawset(L, vals);
  lua_pushvalue(L, key);
  if (ttl > 0) lua_pushnumber(L, now + ttl); else lua_pushnil(L);
  lua_rawset(L, exps);
  if (++st->writes % OK_SWEEP_EVERY == 0) sweep(L, vals, exps, now);
}

/*** store:get(key) -> value | nil
 * @function store:get
 */
static int store_get(lua_State *L) {
  luaL_checkudata(L, 1, OK_STORE_MT);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  tables(L, 1);
  live(L, 3, 4, 2, monotonic());
  return 1;
}

/* store:set(key, value [, ttl]) -> true;  store:add(key, value [, ttl]) -> true | false, "exists" */
static int store_write(lua_State *L, int only_new) {
  double now = monotonic(), ttl = luaL_optnumber(L, 4, 0);
  luaL_checkudata(L, 1, OK_STORE_MT);
  luaL_checkany(L, 2);
  lua_settop(L, 4);
  tables(L, 1);
  if (only_new) {
    live(L, 5, 6, 2, now);
    if (!lua_isnil(L, -1)) { lua_pushboolean(L, 0); lua_pushliteral(L, "exists"); return 2; }
  }
  put(L, 5, 6, 2, 3, ttl, now);
  lua_pushboolean(L, 1);
  return 1;
}
static int store_set(lua_State *L) { return store_write(L, 0); }
static int store_add(lua_State *L) { return store_write(L, 1); }

/*** store:incr(key, by [, init [, init_ttl]]) -> new value (init, default 0, when absent)
 * @function store:incr
 */
static int store_incr(lua_State *L) {
  double now = monotonic(), by = luaL_checknumber(L, 3), init = luaL_optnumber(L, 4, 0), ttl = luaL_optnumber(L, 5, 0);
  luaL_checkudata(L, 1, OK_STORE_MT);
  lua_settop(L, 5);
  tables(L, 1);
  live(L, 6, 7, 2, now);
  if (lua_isnumber(L, -1)) {
    double v = lua_tonumber(L, -1) + by;
    lua_pushvalue(L, 2); lua_pushnumber(L, v); lua_rawset(L, 6); /* keeps its expiry */
    lua_pushnumber(L, v);
    return 1;
  }
  lua_pushnumber(L, init + by);
  put(L, 6, 7, 2, lua_gettop(L), ttl, now);
  return 1;
}

/*** store:delete(key)
 * @function store:delete
 */
static int store_delete(lua_State *L) {
  luaL_checkudata(L, 1, OK_STORE_MT);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  tables(L, 1);
  lua_pushvalue(L, 2); lua_pushnil(L); lua_rawset(L, 3);
  lua_pushvalue(L, 2); lua_pushnil(L); lua_rawset(L, 4);
  return 0;
}

/*** oktadpop.core.memory_store() -> a new in-process store
 * @function core.memory_store
 */
static int store_new(lua_State *L) {
  ok_store *st = lua_newuserdata(L, sizeof *st);
  st->writes = 0;
  luaL_setmetatable(L, OK_STORE_MT);
  lua_createtable(L, 2, 0);
  lua_newtable(L); lua_rawseti(L, -2, 1);
  lua_newtable(L); lua_rawseti(L, -2, 2);
  lua_setuservalue(L, -2);
  return 1;
}

void ok_store_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"get", store_get}, {"set", store_set}, {"add", store_add},
                                     {"incr", store_incr}, {"delete", store_delete}, {NULL, NULL}};
  ok_class(L, OK_STORE_MT, methods, NULL);
  lua_pushcfunction(L, store_new);
  lua_setfield(L, -2, "memory_store");
}
