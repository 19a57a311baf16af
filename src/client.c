/* client.c: the public client: oktadpop.new / from_env, and token, request, get, post, put,
 * patch, delete, paginate, close and operation on the client object; the blocking driver
 * that runs the core's actions over curl.c; oktadpop.pretty for the REPL. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "oktadpop.h"

#define OK_MAX_STEPS 128 /* above the core's own bound (about 4 * max_retries + 10 steps) */
#define OK_ENV_FILE_MAX (1024 * 1024)

/* Checks the client at idx is open; raises for a closed one only via nil, err by callers. */
static ok_client *open_client(lua_State *L, int idx) {
  ok_client *c = ok_client_check(L, idx);
  return c->closed ? NULL : c;
}

static void sleep_seconds(double s) {
  struct timespec ts;
  if (!(s > 0)) return;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Runs the operation at opidx to its end over libcurl; pushes the final action table. */
static void drive(lua_State *L, int opidx) {
  ok_client *c;
  int base, step;
  opidx = lua_absindex(L, opidx);
  lua_getuservalue(L, opidx);
  lua_getfield(L, -1, "client");
  c = ok_client_check(L, -1);
  lua_pop(L, 2);
  base = lua_gettop(L);
  lua_pushnil(L); /* base + 1: the last response */
  for (step = 0; step < OK_MAX_STEPS; step++) {
    const char *action;
    ok_op_step(L, opidx, lua_isnil(L, base + 1) ? 0 : base + 1);
    lua_getfield(L, -1, "action");
    action = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (strcmp(action, "send") == 0) {
      ok_curl_send(L, c, -1);
    } else if (strcmp(action, "sleep") == 0) {
      lua_getfield(L, -1, "seconds");
      sleep_seconds(lua_tonumber(L, -1));
      lua_pushnil(L);
    } else {
      lua_replace(L, base + 1);
      lua_settop(L, base + 1);
      return;
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
  }
  lua_settop(L, base);
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "fail");
  lua_setfield(L, -2, "action");
  ok_error_push(L, "network", "gave up after %d steps", OK_MAX_STEPS);
  lua_setfield(L, -2, "error");
}

static int closed_fail(lua_State *L) {
  return ok_fail(L, "config", "the client is closed");
}

/* client:token([force]) -> token, info | nil, err */
static int client_token(lua_State *L) {
  int force = lua_toboolean(L, 2);
  if (!open_client(L, 1)) return closed_fail(L);
  ok_op_create(L, 1, NULL, NULL, force, 0, 0);
  drive(L, -1);
  lua_getfield(L, -1, "error");
  if (!lua_isnil(L, -1)) { lua_pushnil(L); lua_insert(L, -2); return 2; }
  lua_getfield(L, -2, "token");
  lua_getfield(L, -3, "info");
  return 2;
}

/* Refuses headers that oktadpop manages itself, so a caller cannot unbind the request. */
static int check_headers(lua_State *L, int hidx) {
  static const char *const managed[] = {"authorization", "dpop", "host", "content-length",
                                        "transfer-encoding", "x-okta-retry-for", "x-okta-retry-count", NULL};
  if (lua_isnil(L, hidx)) return 1;
  if (!lua_istable(L, hidx)) { ok_fail(L, "config", "headers must be a table"); return 0; }
  lua_pushnil(L);
  while (lua_next(L, hidx)) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (!name || lua_type(L, -1) != LUA_TSTRING) { ok_fail(L, "config", "header names and values must be strings"); return 0; }
    for (int i = 0; managed[i]; i++)
      if (strcasecmp(name, managed[i]) == 0) { ok_fail(L, "config", "header %s is set by oktadpop", name); return 0; }
    if (strpbrk(lua_tostring(L, -1), "\r\n") || strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1)) {
      ok_fail(L, "config", "header %s contains CR, LF or NUL", name);
      return 0;
    }
    /* an RFC 9110 token, refused here rather than by the transport after the token request */
    if (!*name || strlen(name) != lua_rawlen(L, -2) || name[strspn(name, "!#$%&'*+-.^_`|~0123456789"
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")]) {
      ok_fail(L, "config", "header name is not a token: refused");
      return 0;
    }
    lua_pop(L, 1);
  }
  return 1;
}

/* Builds an operation for (method, path, opts at oidx); pushes it, or nil, err. */
static int make_operation(lua_State *L, int cidx, int midx, int pidx, int oidx) {
  ok_client *c = ok_client_check(L, cidx);
  const char *method = luaL_checkstring(L, midx), *path = luaL_checkstring(L, pidx);
  int qidx = 0, bidx = 0, hidx = 0;
  char m[16];
  size_t mlen = strlen(method);
  if (mlen == 0 || mlen >= sizeof m || mlen != lua_rawlen(L, midx)) return ok_fail(L, "config", "invalid HTTP method");
  if (strlen(path) != lua_rawlen(L, pidx)) return ok_fail(L, "config", "path contains a NUL byte");
  for (size_t i = 0; i <= mlen; i++) m[i] = (char)toupper((unsigned char)method[i]);
  for (size_t i = 0; i < mlen; i++)
    if (m[i] < 'A' || m[i] > 'Z') return ok_fail(L, "config", "invalid HTTP method");
  if (oidx && !lua_isnoneornil(L, oidx)) {
    luaL_checktype(L, oidx, LUA_TTABLE);
    lua_getfield(L, oidx, "query"); qidx = lua_gettop(L);
    lua_getfield(L, oidx, "headers"); hidx = lua_gettop(L);
    lua_getfield(L, oidx, "body"); bidx = lua_gettop(L);
    if (!check_headers(L, hidx)) return 2;
    if (lua_istable(L, bidx)) { /* a table body is JSON */
      if (!ok_json_encode(L, bidx)) return 2;
      lua_replace(L, bidx);
    } else if (!lua_isnil(L, bidx) && lua_type(L, bidx) != LUA_TSTRING) {
      return ok_fail(L, "config", "body must be a table (sent as JSON) or a string");
    }
  }
  if (ok_client_url(L, c, path, qidx) != 1) return 2;
  return ok_op_create(L, cidx, m, lua_tostring(L, -1), 0, bidx, hidx);
}

/* client:request(method, path [, {query=, body=, headers=}]) -> res | nil, err */
static int client_request(lua_State *L) {
  if (!open_client(L, 1)) return closed_fail(L);
  if (make_operation(L, 1, 2, 3, 4) != 1) return 2;
  drive(L, -1);
  lua_getfield(L, -1, "error");
  if (!lua_isnil(L, -1)) { lua_pushnil(L); lua_insert(L, -2); return 2; }
  lua_getfield(L, -2, "response");
  return 1;
}

/* client:operation(method, path [, opts]) or client:operation("token" [, force]): the core's
 * state machine for drivers that do their own I/O (see the README). */
static int client_operation(lua_State *L) {
  if (!open_client(L, 1)) return closed_fail(L);
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "token") == 0)
    return ok_op_create(L, 1, NULL, NULL, lua_toboolean(L, 3), 0, 0);
  return make_operation(L, 1, 2, 3, 4) == 1 ? 1 : 2;
}

/* Pushes the error object for a non-2xx response at ridx (method and url for the message). */
static void push_http_error(lua_State *L, int ridx, const char *method, const char *url) {
  long status;
  const char *code = NULL, *summary = NULL, *www = NULL, *rid = NULL;
  char *wcode = NULL, *wdesc = NULL;
  int top = lua_gettop(L), bidx;
  ridx = lua_absindex(L, ridx);
  lua_getfield(L, ridx, "status");
  status = (long)lua_tointeger(L, -1);
  lua_getfield(L, ridx, "headers");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "www-authenticate");
    www = lua_tostring(L, -1);
    lua_getfield(L, -2, "x-okta-request-id");
    rid = lua_tostring(L, -1);
  }
  lua_getfield(L, ridx, "body");
  bidx = lua_gettop(L);
  if (lua_istable(L, bidx)) {
    lua_getfield(L, bidx, "errorCode");
    if (lua_type(L, -1) == LUA_TSTRING) code = lua_tostring(L, -1);
    lua_getfield(L, bidx, "errorSummary");
    if (lua_type(L, -1) == LUA_TSTRING) summary = lua_tostring(L, -1);
    lua_getfield(L, bidx, "error");
    if (!code && lua_type(L, -1) == LUA_TSTRING) code = lua_tostring(L, -1);
    lua_getfield(L, bidx, "error_description");
    if (!summary && lua_type(L, -1) == LUA_TSTRING) summary = lua_tostring(L, -1);
  }
  if (www) {
    wcode = ok_www_auth_param(www, strlen(www), "error");
    wdesc = ok_www_auth_param(www, strlen(www), "error_description");
    lua_pushstring(L, wcode ? wcode : "");
    lua_pushstring(L, wdesc ? wdesc : "");
    free(wcode);
    free(wdesc);
    if (*lua_tostring(L, -2)) code = lua_tostring(L, -2);
    if (*lua_tostring(L, -1) && (!summary || lua_rawlen(L, -2))) summary = lua_tostring(L, -1);
    if (!*lua_tostring(L, -2)) www = NULL; /* a challenge without error says nothing more */
  }
  ok_error_push(L, www ? "oauth" : "http", "%s %s: HTTP %ld%s%s%s%s", method, url, status,
                code ? " " : "", code ? code : "", summary ? ": " : "", summary ? summary : "");
  ok_error_setint(L, "status", status);
  ok_error_setstr(L, "code", code);
  ok_error_setstr(L, "summary", summary);
  ok_error_setstr(L, "request_id", rid);
  if (lua_istable(L, bidx)) {
    lua_getfield(L, bidx, "errorCauses");
    if (lua_istable(L, -1)) { /* errorCauses: [{errorSummary=...}] -> list of strings */
      int n = (int)lua_rawlen(L, -1), causes = lua_gettop(L), list;
      lua_createtable(L, n, 0);
      list = lua_gettop(L);
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, causes, i);
        if (lua_istable(L, -1)) lua_getfield(L, -1, "errorSummary"); else lua_pushvalue(L, -1);
        lua_rawseti(L, list, i);
        lua_pop(L, 1);
      }
      lua_setfield(L, causes - 1, "causes");
    }
    lua_pop(L, 1);
  }
  if (status == 429) {
    lua_getfield(L, ridx, "headers");
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "x-rate-limit-reset");
      lua_getfield(L, -2, "date");
      if (lua_isstring(L, -2)) {
        double d = lua_isstring(L, -1) ? ok_http_date(lua_tostring(L, -1)) : -1;
        double wait = atof(lua_tostring(L, -2)) - (d > 0 ? d : ok_now());
        lua_pushinteger(L, wait > 0 && wait < 86400 ? (lua_Integer)ceil(wait) : wait > 0 ? 86400 : 0);
        lua_setfield(L, -5, "retry_after");
      }
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

/* What get/post/put/patch/delete answer for the response at ridx: body (true when empty), res
 * on 2xx; else nil, err, res. Returns the number of values pushed. */
static int push_call_result(lua_State *L, int ridx, const char *method, const char *path) {
  long status;
  lua_getfield(L, ridx, "status");
  status = (long)lua_tointeger(L, -1);
  if (status < 200 || status > 299) {
    lua_pushnil(L);
    push_http_error(L, ridx, method, path);
    lua_pushvalue(L, ridx);
    return 3;
  }
  lua_getfield(L, ridx, "json_error");
  if (!lua_isnil(L, -1)) {
    ok_fail(L, "json", "%s %s: HTTP %ld but %s", method, path, status, lua_tostring(L, -1));
    ok_error_setint(L, "status", status);
    lua_pushvalue(L, ridx);
    return 3;
  }
  lua_getfield(L, ridx, "body");
  if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) == 0)) lua_pushboolean(L, 1);
  lua_pushvalue(L, ridx);
  return 2;
}

/* The shared tail of get/post/put/patch/delete. */
static int call(lua_State *L, const char *method, int with_body) {
  int oidx;
  if (!open_client(L, 1)) return closed_fail(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  lua_pushstring(L, method); /* 4 */
  lua_createtable(L, 0, 1);  /* 5: opts */
  oidx = 5;
  if (lua_toboolean(L, 3)) { lua_pushvalue(L, 3); lua_setfield(L, oidx, with_body ? "body" : "query"); }
  if (make_operation(L, 1, 4, 2, oidx) != 1) return 2;
  drive(L, -1);
  lua_getfield(L, -1, "error");
  if (!lua_isnil(L, -1)) { lua_pushnil(L); lua_insert(L, -2); return 2; }
  lua_getfield(L, -2, "response");
  return push_call_result(L, lua_gettop(L), method, lua_tostring(L, 2));
}

static int client_get(lua_State *L) { return call(L, "GET", 0); }
static int client_delete(lua_State *L) { return call(L, "DELETE", 0); }
static int client_post(lua_State *L) { return call(L, "POST", 1); }
static int client_put(lua_State *L) { return call(L, "PUT", 1); }
static int client_patch(lua_State *L) { return call(L, "PATCH", 1); }

/* The paginate iterator: upvalues client, next URL (or false), page, index. */
static int paginate_next(lua_State *L) {
  for (int pages = 0; pages < 1000000; pages++) {
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(4));
    if (lua_istable(L, lua_upvalueindex(3)) && i < (lua_Integer)lua_rawlen(L, lua_upvalueindex(3))) {
      lua_pushinteger(L, i + 1);
      lua_replace(L, lua_upvalueindex(4));
      lua_rawgeti(L, lua_upvalueindex(3), (int)(i + 1));
      return 1;
    }
    if (!lua_isstring(L, lua_upvalueindex(2))) return 0;
    lua_settop(L, 0);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushboolean(L, 0); /* the next link carries its own query */
    {
      int r = call(L, "GET", 0);
      if (lua_isnil(L, -r)) { lua_pushvalue(L, -r + 1); lua_error(L); }
    }
    if (!lua_istable(L, -2)) { ok_error_push(L, "json", "paginate: the response is not a JSON array"); lua_error(L); }
    lua_getfield(L, -1, "next");
    if (lua_isstring(L, -1)) { /* only the org's own origin: never send the token elsewhere */
      ok_client *c = ok_client_check(L, lua_upvalueindex(1));
      if (ok_client_url(L, c, lua_tostring(L, -1), 0) != 1) {
        lua_getfield(L, -1, "message");
        ok_error_push(L, "config", "paginate: next link refused: %s", lua_tostring(L, -1));
        lua_error(L);
      }
      lua_pop(L, 1);
    } else {
      lua_pop(L, 1);
      lua_pushboolean(L, 0);
    }
    lua_replace(L, lua_upvalueindex(2));
    lua_pop(L, 1);
    lua_replace(L, lua_upvalueindex(3));
    lua_pushinteger(L, 0);
    lua_replace(L, lua_upvalueindex(4));
  }
  return 0;
}

/* for item in client:paginate(path [, query]) do ... end -- raises the error object */
static int client_paginate(lua_State *L) {
  ok_client *c = open_client(L, 1);
  const char *path = luaL_checkstring(L, 2);
  if (!c) { closed_fail(L); return lua_error(L); }
  if (strlen(path) != lua_rawlen(L, 2)) { ok_fail(L, "config", "path contains a NUL byte"); return lua_error(L); }
  if (ok_client_url(L, c, path, lua_isnoneornil(L, 3) ? 0 : 3) != 1) return lua_error(L);
  lua_pushvalue(L, 1);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, paginate_next, 4);
  return 1;
}

/* client:close(): frees the connection and wipes the token; safe to call twice. */
static int client_close(lua_State *L) {
  ok_client *c = ok_client_check(L, 1);
  if (!c->closed) {
    ok_curl_free(&c->net);
    ok_client_clear_token(c);
    c->closed = 1;
  }
  return 0;
}

/* client:token_state() -> {token=, token_type=, expires_at=, scope=, as_nonce=, rs_nonce=}:
 * what another process needs to reuse this token (nginx workers share it through a shared
 * dict). It holds the token: keep it in memory, never log it. */
static int client_token_state(lua_State *L) {
  ok_client *c = open_client(L, 1);
  if (!c) return closed_fail(L);
  lua_createtable(L, 0, 6);
  if (c->token) {
    lua_pushstring(L, c->token); lua_setfield(L, -2, "token");
    lua_pushstring(L, c->token_type); lua_setfield(L, -2, "token_type");
    lua_pushnumber(L, c->expires_at); lua_setfield(L, -2, "expires_at");
    lua_pushstring(L, c->token_scope); lua_setfield(L, -2, "scope");
  }
  if (c->as_nonce) { lua_pushstring(L, c->as_nonce); lua_setfield(L, -2, "as_nonce"); }
  if (c->rs_nonce) { lua_pushstring(L, c->rs_nonce); lua_setfield(L, -2, "rs_nonce"); }
  return 1;
}

/* client:set_token_state(state): adopts what token_state() gave elsewhere; a token that is
 * expired (or of the wrong type for this client) is ignored. -> true when a token was taken */
static int client_set_token_state(lua_State *L) {
  ok_client *c = open_client(L, 1);
  const char *tok, *type;
  double exp;
  int taken = 0;
  if (!c) return closed_fail(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "as_nonce");
  if (lua_type(L, -1) == LUA_TSTRING) ok_client_set_nonce(c, 1, lua_tostring(L, -1));
  lua_getfield(L, 2, "rs_nonce");
  if (lua_type(L, -1) == LUA_TSTRING) ok_client_set_nonce(c, 0, lua_tostring(L, -1));
  lua_getfield(L, 2, "token");
  lua_getfield(L, 2, "token_type");
  lua_getfield(L, 2, "expires_at");
  lua_getfield(L, 2, "scope");
  tok = lua_type(L, -4) == LUA_TSTRING ? lua_tostring(L, -4) : NULL;
  type = lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : "";
  exp = lua_tonumber(L, -2);
  if (ok_client_token_check(c, tok, type) == OK_TOKEN_OK && exp > ok_now()) {
    ok_client_set_token(c, tok, type, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : c->scopes, exp);
    taken = c->token != NULL;
  }
  lua_pushboolean(L, taken);
  return 1;
}

/* oktadpop.http_error(res, method, path) -> the error object for a non-2xx response, as
 * client:get() builds it (for drivers written in Lua). */
static int http_error(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  push_http_error(L, 1, luaL_checkstring(L, 2), luaL_checkstring(L, 3));
  return 1;
}

/* oktadpop.call_result(res, method, path) -> what client:get() answers for res: body, res on
 * 2xx, else nil, err, res (for drivers written in Lua). */
static int call_result(lua_State *L) {
  const char *method = luaL_checkstring(L, 2), *path = luaL_checkstring(L, 3);
  luaL_checktype(L, 1, LUA_TTABLE);
  return push_call_result(L, 1, method, path);
}

static int client_tostring(lua_State *L) {
  ok_client *c = ok_client_check(L, 1);
  char tok[64] = "none";
  if (c->closed) { lua_pushliteral(L, "oktadpop.client (closed)"); return 1; }
  if (c->token) {
    double left = c->expires_at - ok_now();
    if (left > 0) snprintf(tok, sizeof tok, "%s, expires in %.0f s", c->token_type, left);
    else snprintf(tok, sizeof tok, "expired");
  }
  if (c->dpop)
    lua_pushfstring(L, "oktadpop.client: org=%s, client_id=%s, scopes=\"%s\", dpop=on (%s key, jkt=%s), token: %s",
                    c->org_origin, c->client_id, c->scopes, ok_alg_name(c->dpop_key->alg), c->dpop_key->thumbprint, tok);
  else
    lua_pushfstring(L, "oktadpop.client: org=%s, client_id=%s, scopes=\"%s\", dpop=off, token: %s",
                    c->org_origin, c->client_id, c->scopes, tok);
  return 1;
}

/* client.org_url, client.client_id, client.scopes, client.dpop_key, client.stats, methods */
static int client_index(lua_State *L) {
  ok_client *c = ok_client_check(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "org_url") == 0) lua_pushstring(L, c->org_origin);
  else if (strcmp(k, "client_id") == 0) lua_pushstring(L, c->client_id);
  else if (strcmp(k, "scopes") == 0) lua_pushstring(L, c->scopes);
  else if (strcmp(k, "token_url") == 0) lua_pushstring(L, c->token_url);
  else if (strcmp(k, "dpop_key") == 0 || strcmp(k, "private_key") == 0) {
    lua_getuservalue(L, 1);
    lua_getfield(L, -1, k);
  } else if (strcmp(k, "stats") == 0) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)c->token_requests); lua_setfield(L, -2, "token_requests");
    lua_pushinteger(L, (lua_Integer)c->api_requests); lua_setfield(L, -2, "api_requests");
    lua_pushnumber(L, c->clock_offset); lua_setfield(L, -2, "clock_offset");
  } else lua_getfield(L, lua_upvalueindex(1), k);
  return 1;
}

/* ---- from_env ---- */

typedef struct env_ctx { lua_State *L; int tidx; } env_ctx;

static void env_set(void *ud, const char *k, size_t kn, const char *v, size_t vn) {
  env_ctx *e = ud;
  lua_pushlstring(e->L, k, kn);
  lua_pushlstring(e->L, v, vn);
  lua_rawset(e->L, e->tidx);
}

/* Value of the first of the names set in the environment (which wins) or the .env table. */
static const char *env_get(lua_State *L, int tidx, const char *const *names) {
  for (int i = 0; names[i]; i++) {
    const char *v = getenv(names[i]);
    if (v && *v) return v;
    lua_getfield(L, tidx, names[i]);
    v = lua_tostring(L, -1);
    lua_pop(L, 1); /* the .env table keeps it alive */
    if (v && *v) return v;
  }
  return NULL;
}

/* oktadpop.from_env([dotenv_path]): the seed's .env names, and the Okta SDKs' names. */
static int client_from_env(lua_State *L) {
  static const char *const org[] = {"OKTA_ORG_URL", "OKTA_CLIENT_ORGURL", NULL};
  static const char *const cid[] = {"OKTA_CLIENT_ID", "OKTA_CLIENT_CLIENTID", NULL};
  static const char *const scopes[] = {"OKTA_SCOPES", "OKTA_CLIENT_SCOPES", NULL};
  static const char *const key[] = {"OKTA_CC_PRIVATE_KEY_FILE", "OKTA_CLIENT_PRIVATEKEY", NULL};
  static const char *const kid[] = {"OKTA_CLIENT_KEYID", NULL};
  static const char *const dpop_key[] = {"OKTA_DPOP_PRIVATE_KEY_FILE", NULL};
  static const char *const ca[] = {"OKTADPOP_CA_FILE", NULL};
  const char *path = luaL_optstring(L, 1, NULL), *v;
  int tidx, cfg;
  lua_newtable(L);
  tidx = lua_gettop(L);
  if (path || access(".env", R_OK) == 0) {
    const char *file = path ? path : ".env", *err;
    char *buf;
    size_t got;
    int r;
    env_ctx ctx = {L, tidx};
    /* the parser's scratch space follows the text in the same GC'd block */
    if ((err = ok_read_small_file(L, file, OK_ENV_FILE_MAX, 2, &buf, &got)))
      return ok_fail(L, "config", "%s: %s", file, err == OK_FILE_CANNOT_OPEN ? strerror(errno)
                     : "not a regular file under 1 MiB");
    r = ok_dotenv_parse(buf, got, buf + got + 1, env_set, &ctx);
    OPENSSL_cleanse(buf, 2 * got + 2);
    if (r < 0) return ok_fail(L, "config", "%s: line %d is not KEY=value", file, -r);
  }
  lua_newtable(L);
  cfg = lua_gettop(L);
  if (!(v = env_get(L, tidx, org))) return ok_fail(L, "config", "OKTA_ORG_URL (or OKTA_CLIENT_ORGURL) is not set");
  lua_pushstring(L, v); lua_setfield(L, cfg, "org_url");
  if (!(v = env_get(L, tidx, cid))) return ok_fail(L, "config", "OKTA_CLIENT_ID (or OKTA_CLIENT_CLIENTID) is not set");
  lua_pushstring(L, v); lua_setfield(L, cfg, "client_id");
  if (!(v = env_get(L, tidx, scopes))) return ok_fail(L, "config", "OKTA_SCOPES (or OKTA_CLIENT_SCOPES) is not set");
  lua_pushstring(L, v); lua_setfield(L, cfg, "scopes");
  if (!(v = env_get(L, tidx, key)))
    return ok_fail(L, "config", "OKTA_CC_PRIVATE_KEY_FILE (or OKTA_CLIENT_PRIVATEKEY) is not set");
  if (strstr(v, "-----BEGIN") && strstr(v, "\\n")) { /* a PEM squeezed onto one line */
    luaL_gsub(L, v, "\\n", "\n");
  } else {
    lua_pushstring(L, v);
  }
  lua_setfield(L, cfg, "private_key");
  if ((v = env_get(L, tidx, kid))) { lua_pushstring(L, v); lua_setfield(L, cfg, "kid"); }
  if ((v = env_get(L, tidx, dpop_key))) { lua_pushstring(L, v); lua_setfield(L, cfg, "dpop_key"); }
  if ((v = env_get(L, tidx, ca))) { lua_pushstring(L, v); lua_setfield(L, cfg, "ca_file"); }
  return ok_client_create(L, cfg) == 1 ? 1 : 2;
}

static int client_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  return ok_client_create(L, 1) == 1 ? 1 : 2;
}

/* oktadpop.pretty(value) -> string: sorted keys, two-space indent, JSON null shown as null. */
static const char pretty_lua[] =
    "local null = ...\n"
    "local function key_order(a, b)\n"
    "  local ta, tb = type(a), type(b)\n"
    "  if ta ~= tb then return ta < tb end\n"
    "  return a < b\n"
    "end\n"
    "local function render(v, indent, seen, out)\n"
    "  local t = type(v)\n"
    "  if v == null then out[#out + 1] = 'null'\n"
    "  elseif t == 'string' then out[#out + 1] = string.format('%q', v)\n"
    "  elseif t ~= 'table' then out[#out + 1] = tostring(v)\n"
    "  elseif seen[v] then out[#out + 1] = '<cycle>'\n"
    "  elseif getmetatable(v) and getmetatable(v).__tostring then out[#out + 1] = tostring(v)\n"
    "  else\n"
    "    seen[v] = true\n"
    "    local keys, n = {}, #v\n"
    "    for k in pairs(v) do\n"
    "      if not (type(k) == 'number' and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end\n"
    "    end\n"
    "    table.sort(keys, key_order)\n"
    "    if n == 0 and #keys == 0 then out[#out + 1] = '{}' seen[v] = nil return end\n"
    "    local inner = indent .. '  '\n"
    "    out[#out + 1] = '{\\n'\n"
    "    for i = 1, n do\n"
    "      out[#out + 1] = inner\n"
    "      render(v[i], inner, seen, out)\n"
    "      out[#out + 1] = ',\\n'\n"
    "    end\n"
    "    for _, k in ipairs(keys) do\n"
    "      local name = type(k) == 'string' and k:match('^[%a_][%w_]*$') and k or '[' .. string.format('%q', k) .. ']'\n"
    "      out[#out + 1] = inner .. name .. ' = '\n"
    "      render(v[k], inner, seen, out)\n"
    "      out[#out + 1] = ',\\n'\n"
    "    end\n"
    "    out[#out + 1] = indent .. '}'\n"
    "    seen[v] = nil\n"
    "  end\n"
    "end\n"
    "return function(v)\n"
    "  local out = {}\n"
    "  render(v, '', {}, out)\n"
    "  return table.concat(out)\n"
    "end\n";

void ok_client_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"token", client_token},   {"request", client_request}, {"get", client_get},
      {"post", client_post},     {"put", client_put},         {"patch", client_patch},
      {"delete", client_delete}, {"paginate", client_paginate}, {"close", client_close},
      {"operation", client_operation}, {"token_state", client_token_state},
      {"set_token_state", client_set_token_state}, {NULL, NULL}};
  ok_core_open(L);
  luaL_getmetatable(L, OK_CLIENT_MT);
  lua_pushcfunction(L, client_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "oktadpop.client");
  lua_setfield(L, -2, "__name");
#if LUA_VERSION_NUM >= 504
  lua_pushcfunction(L, client_close);
  lua_setfield(L, -2, "__close");
#endif
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushcclosure(L, client_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, client_new);
  lua_setfield(L, -2, "new");
  lua_pushcfunction(L, client_from_env);
  lua_setfield(L, -2, "from_env");
  lua_pushcfunction(L, http_error);
  lua_setfield(L, -2, "http_error");
  lua_pushcfunction(L, call_result);
  lua_setfield(L, -2, "call_result");
  if (luaL_loadbuffer(L, pretty_lua, sizeof pretty_lua - 1, "=oktadpop.pretty") != 0) lua_error(L);
  ok_json_push_null(L);
  lua_call(L, 1, 1);
  lua_setfield(L, -2, "pretty");
}
