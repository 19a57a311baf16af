/* core_lua.c: the core's Lua face (oktadpop.core) for drivers: session objects and the
 * operations they make (op:step, op:abort), the response-to-result rule and error objects.
 * Both drivers (lua/oktadpop/curl.lua and lua/oktadpop/resty.lua) run the one client surface
 * (lua/oktadpop/client.lua) over these, so a rule lives in the core once. */
/*** @module oktadpop */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include "binding/binding.h"

/* Checks (method, path, {query=, body=, headers=} at oidx), pushes an operation of kind and
 * returns 1; or nil, err and 0. */
static int make_call(lua_State *L, int sidx, enum ok_op_kind kind, int midx, int pidx, int oidx) {
  static const char *const names[] = {"query", "body", "headers", NULL};
  ok_session *s = ok_session_usable(L, sidx);
  size_t mlen;
  const char *method = luaL_checklstring(L, midx, &mlen), *path = luaL_checkstring(L, pidx), *why;
  int qidx = 0, bidx = 0, hidx = 0;
  char m[16];
  if (!s) return 0;
  if ((why = ok_request_method(method, mlen, m))) return ok_fail(L, "config", "%s", why), 0;
  if (strlen(path) != lua_rawlen(L, pidx)) return ok_fail(L, "config", "path contains a NUL byte"), 0;
  if (oidx && !lua_isnoneornil(L, oidx)) {
    luaL_checktype(L, oidx, LUA_TTABLE);
    if (!ok_opts_known(L, oidx, "request", names)) return 0;
    lua_getfield(L, oidx, "query"); qidx = lua_gettop(L);
    lua_getfield(L, oidx, "headers"); hidx = lua_gettop(L);
    lua_getfield(L, oidx, "body"); bidx = lua_gettop(L);
    if (!ok_request_headers(L, hidx)) return 0;
    if (lua_istable(L, bidx)) { /* a table body is JSON */
      if (!ok_json_encode(L, bidx)) return 0;
      lua_replace(L, bidx);
    } else if (!lua_isnil(L, bidx) && lua_type(L, bidx) != LUA_TSTRING) {
      return ok_fail(L, "config", "body must be a table (sent as JSON) or a string"), 0;
    }
  }
  if (!ok_request_url(L, s, path, qidx)) return 0;
  return ok_op_create(L, sidx, kind, m, lua_tostring(L, -1), hidx, bidx);
}

/*** session:operation(method, path [, {query=, body=, headers=}]) -> op | nil, err
 * @function session:operation
 */
static int session_operation(lua_State *L) {
  return make_call(L, 1, OK_OP_CALL, 2, 3, 4) ? 1 : 2;
}

/*** session:token_operation([force]) -> op | nil, err
 * @function session:token_operation
 */
static int session_token_operation(lua_State *L) {
  int force = lua_toboolean(L, 2);
  if (!ok_session_usable(L, 1)) return 2;
  ok_op_create(L, 1, OK_OP_TOKEN, NULL, NULL, 0, 0);
  if (force) ok_op_force(L, -1);
  return 1;
}

/* Pushes a pages or poll operation: GET opts.from (a saved next link, which carries its own
 * query) or path?query, with the page options at optidx. */
static int pages_op(lua_State *L, enum ok_op_kind kind, int qidx, int optidx) {
  ok_session *s = ok_session_usable(L, 1);
  const char *from = NULL, *path = luaL_checkstring(L, 2);
  if (!s) return 2;
  if (optidx && !lua_isnil(L, optidx) && !ok_opt_string(L, optidx, "from", &from, NULL)) return 2;
  if (strlen(path) != lua_rawlen(L, 2)) return ok_fail(L, "config", "path contains a NUL byte");
  if (!ok_request_url(L, s, from ? from : path, from ? 0 : qidx)) return 2;
  ok_op_create(L, 1, kind, "GET", lua_tostring(L, -1), 0, 0);
  if (!ok_op_page_options(L, lua_gettop(L), optidx)) return 2;
  return 1;
}

/*** session:pages(path [, query [, {from=, max_pages=, max_items=}]]) -> op | nil, err; max_items
 * cuts the last page: done.next is then that page and done.skip its items already handed out.
 * @function session:pages
 */
static int session_pages(lua_State *L) {
  lua_settop(L, 4);
  if (!lua_isnil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  return pages_op(L, OK_OP_PAGES, 3, 4);
}

/*** session:poll(path [, {interval=, max_items=, max_pages=, duration=, from=, <query>...}]): the
 * keys that are not poll options are the query (since=, filter=, ...).
 * @function session:poll
 */
static int session_poll(lua_State *L) {
  lua_settop(L, 3);
  lua_newtable(L); /* 4: the query */
  lua_newtable(L); /* 5: the poll options */
  if (!lua_isnil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      int is_option = 0;
      for (int i = 0; ok_page_option_names[i] && lua_type(L, -2) == LUA_TSTRING; i++)
        is_option |= strcmp(lua_tostring(L, -2), ok_page_option_names[i]) == 0;
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, is_option ? 5 : 4);
    }
  }
  return pages_op(L, OK_OP_POLL, 4, 5);
}

/*** session:degrade(on): while on, the session uses a quarter of max_capacity and of
 * max_concurrency (a driver whose shared store failed runs on its own store meanwhile).
 * @function session:degrade
 */
static int session_degrade(lua_State *L) {
  ok_session *s = ok_session_check(L, 1);
  s->degraded = lua_toboolean(L, 2);
  return 0;
}

static int session_close(lua_State *L) {
  ok_session *s = ok_session_check(L, 1);
  ok_session_clear_token(s);
  s->closed = 1;
  return 0;
}

/* Org, client, scopes, DPoP key and token expiry; never a secret. */
static int session_tostring(lua_State *L) {
  ok_session *s = ok_session_check(L, 1);
  char token[64] = "none";
  if (s->closed) { lua_pushliteral(L, "oktadpop.client (closed)"); return 1; }
  if (s->token) snprintf(token, sizeof token, "%s, expires_at %.0f", s->token_type, s->expires_at);
  if (s->cfg.dpop)
    lua_pushfstring(L, "oktadpop.client: org=%s, client_id=%s, scopes=\"%s\", dpop=on (%s key, jkt=%s), token: %s",
                    s->cfg.org_origin, s->cfg.client_id, s->cfg.scopes, ok_alg_name(s->dpop_key->alg),
                    s->dpop_key->thumbprint, token);
  else
    lua_pushfstring(L, "oktadpop.client: org=%s, client_id=%s, scopes=\"%s\", dpop=off, token: %s", s->cfg.org_origin,
                    s->cfg.client_id, s->cfg.scopes, token);
  return 1;
}

/* What the session knows of each bucket: {[name] = {limit=, used=, reset=, counted_as=} or
 * {unlimited_until=}}, in server seconds. */
static void push_buckets(lua_State *L, const ok_session *s) {
  lua_createtable(L, 0, s->nbuckets);
  for (int i = 0; i < s->nbuckets; i++) {
    const ok_bucket *b = &s->buckets[i];
    if (!(b->limit > 0) && !(b->unlimited_until > 0)) continue;
    lua_createtable(L, 0, 4);
    if (b->unlimited_until > 0) { lua_pushnumber(L, b->unlimited_until); lua_setfield(L, -2, "unlimited_until"); }
    else {
      lua_pushnumber(L, b->limit); lua_setfield(L, -2, "limit");
      lua_pushnumber(L, b->seen_used); lua_setfield(L, -2, "used");
      lua_pushnumber(L, b->reset); lua_setfield(L, -2, "reset");
      if (b->counted_as[0]) { lua_pushstring(L, b->counted_as); lua_setfield(L, -2, "counted_as"); }
    }
    lua_setfield(L, -2, b->name);
  }
}

/* Fields drivers and callers read: the config, the keys and counters. */
static int session_field(lua_State *L, ok_session *s, const char *k) {
  const ok_config *c = &s->cfg;
  static const char *const numbers[] = {"timeout", "connect_timeout", "max_body", "max_concurrency", NULL};
  const double values[] = {c->timeout, c->connect_timeout, c->max_body, c->max_concurrency};
  for (int i = 0; numbers[i]; i++)
    if (strcmp(k, numbers[i]) == 0) return lua_pushnumber(L, values[i]), 1;
  if (strcmp(k, "org_url") == 0) lua_pushstring(L, c->org_origin);
  else if (strcmp(k, "client_id") == 0) lua_pushstring(L, c->client_id);
  else if (strcmp(k, "scopes") == 0) lua_pushstring(L, c->scopes);
  else if (strcmp(k, "token_url") == 0) lua_pushstring(L, c->token_url);
  else if (strcmp(k, "ca_file") == 0) lua_pushstring(L, c->ca_file);
  else if (strcmp(k, "proxy") == 0) lua_pushstring(L, c->proxy);
  else if (strcmp(k, "allow_http") == 0) lua_pushboolean(L, c->allow_http);
  else if (strcmp(k, "debug") == 0) lua_pushboolean(L, c->debug);
  else if (strcmp(k, "closed") == 0) lua_pushboolean(L, s->closed);
  else if (strcmp(k, "dpop_key") == 0 || strcmp(k, "private_key") == 0) {
    lua_getuservalue(L, 1);
    lua_getfield(L, -1, k);
  } else if (strcmp(k, "stats") == 0) {
    lua_createtable(L, 0, 11);
    lua_pushinteger(L, (lua_Integer)s->token_requests); lua_setfield(L, -2, "token_requests");
    lua_pushinteger(L, (lua_Integer)s->api_requests); lua_setfield(L, -2, "api_requests");
    lua_pushinteger(L, (lua_Integer)s->rate_waits); lua_setfield(L, -2, "rate_waits");
    lua_pushinteger(L, (lua_Integer)s->retries); lua_setfield(L, -2, "retries");
    lua_pushinteger(L, (lua_Integer)s->rate_limited); lua_setfield(L, -2, "rate_limited");
    lua_pushinteger(L, (lua_Integer)s->budget_cuts); lua_setfield(L, -2, "budget_cuts");
    lua_pushinteger(L, (lua_Integer)s->concurrency_cuts); lua_setfield(L, -2, "concurrency_cuts");
    lua_pushnumber(L, ok_session_concurrency(s)); lua_setfield(L, -2, "concurrency");
    push_buckets(L, s);
    lua_setfield(L, -2, "buckets");
    lua_pushnumber(L, s->clock_offset); lua_setfield(L, -2, "clock_offset");
  } else return 0;
  return 1;
}

static int session_index(lua_State *L) {
  ok_session *s = ok_session_check(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (session_field(L, s, k)) return 1;
  lua_getfield(L, lua_upvalueindex(1), k);
  return 1;
}

/*** oktadpop.core.result(res) -> what client:get() answers for a request's res: body, res on 2xx,
 * else nil, err, res.
 * @function core.result
 */
static int core_result(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  return ok_result_call(L, 1);
}

/*** oktadpop.core.headers(block) -> headers | nil, err: a response's status line and header
 * lines as the transports hand them on (lower-case names, repeats joined by ", ").
 * @function core.headers
 */
static int core_headers(lua_State *L) {
  size_t n;
  const char *block = luaL_checklstring(L, 1, &n);
  return ok_headers_push(L, block, n) ? 1 : 2;
}

/*** oktadpop.core.redis_url(url) -> {host=, port=, user=, password=, db=, tls=} | nil, err: the
 * Redis URL as both Redis stores read it.
 * @function core.redis_url
 */
static int core_redis_url(lua_State *L) {
  ok_redis_target t;
  const char *why = ok_redis_url(luaL_checkstring(L, 1), &t);
  if (why) return ok_fail(L, "config", "redis_store: %s", why);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, t.host); lua_setfield(L, -2, "host");
  lua_pushinteger(L, t.port); lua_setfield(L, -2, "port");
  lua_pushinteger(L, t.db); lua_setfield(L, -2, "db");
  lua_pushboolean(L, t.tls); lua_setfield(L, -2, "tls");
  if (t.user[0]) { lua_pushstring(L, t.user); lua_setfield(L, -2, "user"); }
  if (t.password[0]) { lua_pushstring(L, t.password); lua_setfield(L, -2, "password"); }
  OPENSSL_cleanse(&t, sizeof t);
  return 1;
}

/*** oktadpop.core.redis_key(prefix, key) -> the key a Redis store keeps (a hash tag per client).
 * @function core.redis_key
 */
static int core_redis_key(lua_State *L) {
  char out[512];
  size_t n = ok_redis_key(luaL_checkstring(L, 1), luaL_checkstring(L, 2), out, sizeof out);
  luaL_argcheck(L, n > 0, 2, "key too long");
  lua_pushlstring(L, out, n);
  return 1;
}

/*** oktadpop.core.error(kind, message) -> an error object, for drivers written in Lua.
 * @function core.error
 */
static int core_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1), *msg = luaL_checkstring(L, 2);
  return ok_error_push(L, kind, "%s", msg);
}

/*** op:step([input], now) -> action
 * @function op:step
 */
static int op_step(lua_State *L) {
  luaL_checkudata(L, 1, OK_OP_MT);
  return ok_op_step(L, 1, lua_isnoneornil(L, 2) ? 0 : 2, luaL_checknumber(L, 3));
}

/*** op:abort() -> list of store actions giving back what the operation holds
 * @function op:abort
 */
static int op_abort(lua_State *L) {
  luaL_checkudata(L, 1, OK_OP_MT);
  return ok_op_abort(L, 1);
}

void ok_core_open(lua_State *L) {
  static const luaL_Reg session_methods[] = {
      {"operation", session_operation}, {"token_operation", session_token_operation}, {"pages", session_pages},
      {"poll", session_poll}, {"degrade", session_degrade}, {"close", session_close}, {NULL, NULL}};
  static const luaL_Reg session_meta[] = {
      {"__gc", ok_session_gc}, {"__tostring", session_tostring}, {"__index", session_index}, {NULL, NULL}};
  static const luaL_Reg op_methods[] = {{"step", op_step}, {"abort", op_abort}, {NULL, NULL}};
  static const luaL_Reg op_meta[] = {{"__gc", ok_op_gc}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"result", core_result}, {"error", core_error}, {"headers", core_headers},
                                   {"redis_url", core_redis_url}, {"redis_key", core_redis_key}, {NULL, NULL}};
  ok_class(L, OK_SESSION_MT, session_methods, session_meta);
  ok_class(L, OK_OP_MT, op_methods, op_meta);
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_createtable(L, 0, 2); /* core.redis_scripts: what both Redis stores run */
  lua_pushstring(L, OK_REDIS_INCR); lua_setfield(L, -2, "incr");
  lua_pushstring(L, OK_REDIS_REPLAY); lua_setfield(L, -2, "replay");
  lua_setfield(L, -2, "redis_scripts");
}
