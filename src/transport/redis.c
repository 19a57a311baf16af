/* transport/redis.c: the plain driver's Redis store, over hiredis (Debian's libhiredis, linked
 * into the module: C does the work, and no Lua socket library is needed). It has the five
 * calls of an nginx shared dict, each one atomic on the server (add is SET NX PX; incr with an
 * initial value and ttl is one script), plus the guard's replay record; every call waits at
 * most `timeout`, and a failure answers nil, err (kind "store") and drops the connection, which
 * the next call makes again. hiredis 0.14 (Debian 12) has no TLS: rediss:// is refused. The
 * password is kept for AUTH and shown nowhere. */
/*** @module oktadpop */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include "transport/transport.h"

#define OK_REDIS_MT "oktadpop.redis_store"
#define OK_REDIS_KEY 512

typedef struct redis_store {
  redisContext *ctx;
  ok_redis_target to;
  char prefix[128];
  double timeout;
} redis_store;

static redis_store *store_check(lua_State *L) { return luaL_checkudata(L, 1, OK_REDIS_MT); }

static struct timeval tv_of(double s) {
  struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
  return tv;
}

static void drop(redis_store *r) {
  if (r->ctx) redisFree(r->ctx);
  r->ctx = NULL;
}

/* Pushes nil, err for a failed call and drops the connection; returns 2. */
static int failed(lua_State *L, redis_store *r, const char *what, const char *why) {
  int n = ok_fail(L, "store", "redis %s:%d: %s: %s", r->to.host, r->to.port, what, why ? why : "no answer");
  drop(r);
  return n;
}

/* One command's reply (NULL on an I/O error: the context says why). */
static redisReply *command(redis_store *r, int argc, const char **argv, const size_t *lens) {
  return redisCommandArgv(r->ctx, argc, argv, lens);
}

/* A connection, AUTHed and on its db; 1, or 0 with nil, err pushed. */
static int connected(lua_State *L, redis_store *r) {
  redisReply *reply;
  if (r->ctx) return 1;
  r->ctx = redisConnectWithTimeout(r->to.host, r->to.port, tv_of(r->timeout));
  if (!r->ctx || r->ctx->err) return failed(L, r, "connect", r->ctx ? r->ctx->errstr : "out of memory"), 0;
  redisSetTimeout(r->ctx, tv_of(r->timeout));
  if (r->to.password[0]) {
    const char *argv[3] = {"AUTH", r->to.user, r->to.password};
    size_t lens[3] = {4, strlen(r->to.user), strlen(r->to.password)};
    int user = r->to.user[0] != '\0';
    reply = user ? command(r, 3, argv, lens) : command(r, 2, (const char *[]){"AUTH", r->to.password}, (size_t[]){4, lens[2]});
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
      freeReplyObject(reply);
      return failed(L, r, "AUTH", "refused (check the URL's user and password)"), 0;
    }
    freeReplyObject(reply);
  }
  if (r->to.db) {
    reply = redisCommand(r->ctx, "SELECT %d", r->to.db);
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
      failed(L, r, "SELECT", reply ? reply->str : r->ctx->errstr);
      freeReplyObject(reply);
      return 0;
    }
    freeReplyObject(reply);
  }
  return 1;
}

/* The Redis key of the store key at idx, into key; its length. */
static size_t key_arg(lua_State *L, redis_store *r, int idx, char key[OK_REDIS_KEY]) {
  size_t n = ok_redis_key(r->prefix, luaL_checkstring(L, idx), key, OK_REDIS_KEY);
  luaL_argcheck(L, n > 0, idx, "key too long");
  return n;
}

/* Runs the command; its reply, or NULL with nil, err pushed. */
static redisReply *run(lua_State *L, redis_store *r, const char *what, int argc, const char **argv, const size_t *lens) {
  redisReply *reply;
  if (!connected(L, r)) return NULL;
  if (!(reply = command(r, argc, argv, lens))) return failed(L, r, what, r->ctx->errstr), NULL;
  if (reply->type == REDIS_REPLY_ERROR) {
    failed(L, r, what, reply->str);
    freeReplyObject(reply);
    return NULL;
  }
  return reply;
}

/* A Lua value at idx as a command argument: a string, or a number or boolean written out. */
static const char *value_arg(lua_State *L, int idx, size_t *len) {
  if (lua_isboolean(L, idx)) lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
  else lua_pushvalue(L, idx);
  if (!lua_isstring(L, -1)) luaL_argerror(L, idx, "a string, number or boolean");
  lua_replace(L, idx);
  return lua_tolstring(L, idx, len);
}

/*** store:get(key) -> value | nil (absent) | nil, err
 * @function redis_store:get
 */
static int store_get(lua_State *L) {
  redis_store *r = store_check(L);
  char key[OK_REDIS_KEY];
  size_t klen = key_arg(L, r, 2, key);
  redisReply *reply = run(L, r, "GET", 2, (const char *[]){"GET", key}, (size_t[]){3, klen});
  if (!reply) return 2;
  if (reply->type == REDIS_REPLY_STRING) lua_pushlstring(L, reply->str, reply->len);
  else lua_pushnil(L);
  freeReplyObject(reply);
  return 1;
}

/* set (only_new 0) and add (1): SET key value [NX] [PX ttl]. */
static int store_write(lua_State *L, int only_new) {
  redis_store *r = store_check(L);
  char key[OK_REDIS_KEY], ms[32];
  size_t klen = key_arg(L, r, 2, key), vlen;
  const char *value = value_arg(L, 3, &vlen), *argv[6] = {"SET", key, value};
  size_t lens[6] = {3, klen, vlen};
  double ttl = luaL_optnumber(L, 4, 0);
  int argc = 3, stored;
  redisReply *reply;
  if (only_new) { argv[argc] = "NX"; lens[argc++] = 2; }
  if (ttl > 0) {
    snprintf(ms, sizeof ms, "%.0f", ttl * 1000);
    argv[argc] = "PX"; lens[argc++] = 2;
    argv[argc] = ms; lens[argc++] = strlen(ms);
  }
  if (!(reply = run(L, r, only_new ? "SET NX" : "SET", argc, argv, lens))) return 2;
  stored = reply->type == REDIS_REPLY_STATUS;
  freeReplyObject(reply);
  lua_pushboolean(L, stored);
  if (stored) return 1;
  lua_pushliteral(L, "exists");
  return 2;
}

/*** store:set(key, value [, ttl]) -> true | nil, err
 * @function redis_store:set
 */
static int store_set(lua_State *L) { return store_write(L, 0); }
/*** store:add(key, value [, ttl]) -> true | false, "exists" | nil, err
 * @function redis_store:add
 */
static int store_add(lua_State *L) { return store_write(L, 1); }

/*** store:incr(key, by [, init [, init_ttl]]) -> the new value | nil, err
 * @function redis_store:incr
 */
static int store_incr(lua_State *L) {
  redis_store *r = store_check(L);
  char key[OK_REDIS_KEY], by[32], init[32], ms[32];
  size_t klen = key_arg(L, r, 2, key);
  redisReply *reply;
  snprintf(by, sizeof by, "%.0f", luaL_checknumber(L, 3));
  snprintf(init, sizeof init, "%.0f", luaL_optnumber(L, 4, 0));
  snprintf(ms, sizeof ms, "%.0f", luaL_optnumber(L, 5, 0) * 1000);
  reply = run(L, r, "incr", 7, (const char *[]){"EVAL", OK_REDIS_INCR, "1", key, by, init, ms},
              (size_t[]){4, strlen(OK_REDIS_INCR), 1, klen, strlen(by), strlen(init), strlen(ms)});
  if (!reply) return 2;
  lua_pushinteger(L, reply->type == REDIS_REPLY_INTEGER ? (lua_Integer)reply->integer : 0);
  freeReplyObject(reply);
  return 1;
}

/*** store:delete(key) -> true | nil, err
 * @function redis_store:delete
 */
static int store_delete(lua_State *L) {
  redis_store *r = store_check(L);
  char key[OK_REDIS_KEY];
  size_t klen = key_arg(L, r, 2, key);
  redisReply *reply = run(L, r, "DEL", 2, (const char *[]){"DEL", key}, (size_t[]){3, klen});
  if (!reply) return 2;
  freeReplyObject(reply);
  lua_pushboolean(L, 1);
  return 1;
}

/*** store:replay_add(jti, ttl, now, iat) -> true | false, "exists" | false, "predates" | nil, err:
 * the guard's record of a proof's first use, refused when the proof is older than the replay
 * cache (a Redis that lost its data cannot say whether it saw it).
 * @function redis_store:replay_add
 */
static int store_replay_add(lua_State *L) {
  redis_store *r = store_check(L);
  char key[OK_REDIS_KEY], epoch[OK_REDIS_KEY], ms[32], now[32], iat[32];
  size_t klen, elen;
  long long got;
  redisReply *reply;
  lua_pushfstring(L, "{replay}:jti:%s", luaL_checkstring(L, 2));
  klen = ok_redis_key(r->prefix, lua_tostring(L, -1), key, sizeof key);
  elen = ok_redis_key(r->prefix, "{replay}:epoch", epoch, sizeof epoch);
  luaL_argcheck(L, klen > 0 && elen > 0, 2, "key too long");
  snprintf(ms, sizeof ms, "%.0f", luaL_checknumber(L, 3) * 1000);
  snprintf(now, sizeof now, "%.0f", luaL_checknumber(L, 4));
  snprintf(iat, sizeof iat, "%.0f", luaL_checknumber(L, 5));
  reply = run(L, r, "replay", 8, (const char *[]){"EVAL", OK_REDIS_REPLAY, "2", key, epoch, ms, now, iat},
              (size_t[]){4, strlen(OK_REDIS_REPLAY), 1, klen, elen, strlen(ms), strlen(now), strlen(iat)});
  if (!reply) return 2;
  got = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
  freeReplyObject(reply);
  lua_pushboolean(L, got == 1);
  if (got == 1) return 1;
  lua_pushstring(L, got < 0 ? "predates" : "exists");
  return 2;
}

/* Where it connects, never the password. */
static int store_tostring(lua_State *L) {
  redis_store *r = store_check(L);
  lua_pushfstring(L, "oktadpop.redis_store: redis://%s%s:%d/%d (prefix \"%s\")", r->to.user[0] || r->to.password[0] ? "***@" : "",
                  r->to.host, r->to.port, r->to.db, r->prefix);
  return 1;
}

/* close and __gc: the connection goes, the password is wiped; safe twice. */
static int store_close(lua_State *L) {
  redis_store *r = store_check(L);
  drop(r);
  OPENSSL_cleanse(r->to.password, sizeof r->to.password);
  return 0;
}

/*** oktadpop.redis_store{url=, prefix=, timeout=2} -> store | nil, err: a store for oktadpop.new's
 * store= and the guard's replay_store=, shared by every process and host that uses it.
 * @function redis_store
 */
static int store_new(lua_State *L) {
  static const char *const names[] = {"url", "prefix", "timeout", NULL};
  const char *url, *prefix, *why;
  double timeout;
  redis_store *r;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!ok_opts_known(L, 1, "redis_store", names) || !ok_opt_string(L, 1, "url", &url, NULL) ||
      !ok_opt_string(L, 1, "prefix", &prefix, NULL) || !ok_opt_number(L, 1, "timeout", 2, 0.001, 60, &timeout))
    return 2;
  if (!url) return ok_fail(L, "config", "redis_store needs url = \"redis://[user:password@]host:port[/db]\"");
  r = lua_newuserdata(L, sizeof *r); /* first: a raise below still ends in __gc */
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, OK_REDIS_MT);
  if ((why = ok_redis_url(url, &r->to))) return ok_fail(L, "config", "redis_store: %s", why);
  if (r->to.tls)
    return ok_fail(L, "config", "redis_store: rediss:// needs TLS, which Debian 12's hiredis 0.14 does not have: "
                   "reach Redis over a local TLS tunnel (stunnel, spiped) with redis://, or use the nginx driver's store");
  if (prefix && strlen(prefix) >= sizeof r->prefix) return ok_fail(L, "config", "redis_store: prefix is longer than 127 bytes");
  snprintf(r->prefix, sizeof r->prefix, "%s", prefix ? prefix : "oktadpop:");
  r->timeout = timeout;
  return 1;
}

void ok_redis_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"get", store_get}, {"set", store_set}, {"add", store_add}, {"incr", store_incr},
                                     {"delete", store_delete}, {"replay_add", store_replay_add}, {"close", store_close},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", store_close}, {"__tostring", store_tostring}, {NULL, NULL}};
  ok_class(L, OK_REDIS_MT, methods, meta);
  lua_pushcfunction(L, store_new);
  lua_setfield(L, -2, "redis_store");
}
