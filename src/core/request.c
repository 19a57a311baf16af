/* request.c: requests as they go on the wire, each checked before anything is sent: URLs on
 * the org's own origin (a path, or a next link), percent-encoded query strings, methods and
 * caller headers that cannot smuggle a line; the token request (a fresh client assertion and
 * proof every time) and API requests (a fresh proof every time, DPoP or Bearer scheme). Part
 * of the core: no I/O. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "core/core.h"

#define OK_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define OK_ASSERTION_LIFETIME 300

/* Pushes k=v percent-encoded, built in a GC'd scratch userdata so nothing can leak. */
static void push_pair(lua_State *L, const char *k, size_t kn, const char *v, size_t vn) {
  char *out = lua_newuserdata(L, 3 * (kn + vn) + 2);
  size_t o = ok_pct_encode(k, kn, out);
  out[o++] = '=';
  o += ok_pct_encode(v, vn, out + o);
  lua_pushlstring(L, out, o);
  lua_remove(L, -2);
}

/* Appends to the list at parts the k=v pairs of one query key (a list value repeats the key);
 * 0 with nil, err on a bad value. */
static int add_query_key(lua_State *L, int parts, int qidx, const char *k, size_t kn) {
  int vals, nv;
  lua_pushlstring(L, k, kn);
  lua_rawget(L, qidx);
  vals = lua_gettop(L);
  nv = lua_istable(L, vals) ? (int)lua_rawlen(L, vals) : 1;
  for (int j = 1; j <= nv; j++) {
    size_t vn;
    const char *v;
    if (lua_istable(L, vals)) lua_rawgeti(L, vals, j); else lua_pushvalue(L, vals);
    if (lua_isboolean(L, -1)) lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
      ok_fail(L, "config", "query value for '%s' must be a string, number or boolean", k);
      return 0;
    }
    v = lua_tolstring(L, -1, &vn);
    push_pair(L, k, kn, v, vn);
    lua_rawseti(L, parts, (int)lua_rawlen(L, parts) + 1);
    lua_settop(L, vals);
  }
  lua_pop(L, 1);
  return 1;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of the query table at qidx, sorted (URLs are reproducible) in a GC'd array; the
 * strings stay alive in the table. Pushes the array; 0 with nil, err on a key that is not a
 * string. */
static int sorted_keys(lua_State *L, int qidx, const char ***keys, int *n) {
  int count = 0;
  lua_pushnil(L);
  while (lua_next(L, qidx)) { lua_pop(L, 1); count++; }
  *keys = lua_newuserdata(L, sizeof **keys * (size_t)(count ? count : 1));
  *n = 0;
  lua_pushnil(L);
  while (lua_next(L, qidx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) { ok_fail(L, "config", "query keys must be strings"); return 0; }
    (*keys)[(*n)++] = lua_tostring(L, -1);
  }
  qsort((void *)*keys, (size_t)*n, sizeof **keys, by_name);
  return 1;
}

/* Pushes the query string of the table at qidx ("a=1&b=2"), keys in byte order. */
static int push_query(lua_State *L, int qidx) {
  const char **keys;
  int n, parts, arr;
  luaL_Buffer b;
  if (!sorted_keys(L, qidx, &keys, &n)) return 0;
  arr = lua_gettop(L);
  lua_newtable(L);
  parts = lua_gettop(L);
  for (int i = 0; i < n; i++)
    if (!add_query_key(L, parts, qidx, keys[i], strlen(keys[i]))) return 0;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= (int)lua_rawlen(L, parts); i++) {
    if (i > 1) luaL_addchar(&b, '&');
    lua_rawgeti(L, parts, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_replace(L, arr);
  lua_settop(L, arr);
  return 1;
}

/* Appends the part of an absolute URL after its origin, refusing any origin but the org's. */
static int add_absolute(lua_State *L, luaL_Buffer *b, ok_session *s, const char *url) {
  char origin[300];
  const char *why = NULL, *path;
  if (ok_url_origin(url, strlen(url), origin, sizeof origin, &why) != 0)
    return ok_fail(L, "config", "invalid URL: %s", why), 0;
  if (strcmp(origin, s->cfg.org_origin) != 0)
    return ok_fail(L, "config", "refusing a request to %s: only %s receives the token", origin, s->cfg.org_origin), 0;
  path = ok_url_path(url);
  luaL_addstring(b, s->cfg.org_origin);
  if (*path != '/') luaL_addchar(b, '/');
  luaL_addstring(b, path);
  return 1;
}

/* A path with a dot segment is refused before anything is signed or sent: libcurl, a proxy or
 * the server would remove it, and the request would reach another resource than the one the
 * caller named (factors/.. is the user itself). Returns 1, or 0 with nil, err pushed. */
static int refuse_dot_segment(lua_State *L, const char *url) {
  const char *path = ok_url_path(url), *seg;
  size_t n = 0, shown;
  if (!path || !(seg = ok_path_dot_segment(path, strlen(path), &n))) return 1;
  shown = strcspn(path, "?#"); /* the path alone: a query is the caller's data */
  return ok_fail(L, "config", "refusing a path with a dot segment (\"%.*s\" in %.*s): it would reach another "
                 "resource; ids are data, never paths", (int)(n > 60 ? 60 : n), seg, (int)(shown > 300 ? 300 : shown), path), 0;
}

int ok_request_url(lua_State *L, ok_session *s, const char *path, int qidx) {
  luaL_Buffer b;
  int query = 0;
  const char *why = NULL;
  char *norm;
  if (qidx) qidx = lua_absindex(L, qidx);
  for (const char *p = path; *p; p++)
    if ((unsigned char)*p <= 0x20 || *p == 0x7f) return ok_fail(L, "config", "path contains a space or control character: encode it"), 0;
  if (qidx && !lua_isnil(L, qidx)) {
    if (!lua_istable(L, qidx)) return ok_fail(L, "config", "query must be a table"), 0;
    if (!push_query(L, qidx)) return 0;
    query = lua_gettop(L);
  }
  if (path[0] != '/' && strncasecmp(path, "https://", 8) != 0 && strncasecmp(path, "http://", 7) != 0)
    return ok_fail(L, "config", "path must start with / (e.g. /api/v1/users), or be a URL on %s: got \"%s\"",
                   s->cfg.org_origin, path), 0;
  if (path[0] == '/' && path[1] == '/') return ok_fail(L, "config", "path must not start with //"), 0;
  luaL_buffinit(L, &b);
  if (path[0] == '/') {
    luaL_addstring(&b, s->cfg.org_origin);
    luaL_addstring(&b, path);
  } else if (!add_absolute(L, &b, s, path)) {
    return 0;
  }
  if (query && lua_rawlen(L, query) > 0) {
    luaL_addchar(&b, strchr(path, '?') ? '&' : '?');
    lua_pushvalue(L, query);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  if (query) lua_remove(L, query);
  if (!(norm = ok_htu_normalize(lua_tostring(L, -1), lua_rawlen(L, -1), &why))) /* bad escapes fail now */
    return ok_fail(L, "config", "invalid URL: %s", why), 0;
  free(norm);
  return refuse_dot_segment(L, lua_tostring(L, -1));
}

const char *ok_request_method(const char *method, size_t len, char m[16]) {
  if (len == 0 || len >= 16 || strlen(method) != len) return "invalid HTTP method";
  for (size_t i = 0; i <= len; i++) m[i] = (char)toupper((unsigned char)method[i]);
  for (size_t i = 0; i < len; i++)
    if (m[i] < 'A' || m[i] > 'Z') return "invalid HTTP method";
  return NULL;
}

/* An RFC 9110 token: refused here, before the token exchange, not by a transport after it. */
static int header_name_ok(const char *name, size_t len) {
  static const char tchar[] = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  return len > 0 && len < 128 && strlen(name) == len && strspn(name, tchar) == len;
}

int ok_request_headers(lua_State *L, int hidx) {
  static const char *const managed[] = {"authorization", "dpop", "host", "content-length", "transfer-encoding",
                                        "connection", "x-okta-retry-for", "x-okta-retry-count", NULL};
  if (lua_isnil(L, hidx)) return 1;
  if (!lua_istable(L, hidx)) return ok_fail(L, "config", "headers must be a table"), 0;
  hidx = lua_absindex(L, hidx);
  lua_pushnil(L);
  while (lua_next(L, hidx)) {
    size_t nlen = 0, vlen = 0;
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nlen) : NULL;
    const char *value = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vlen) : NULL;
    if (!name || !value) return ok_fail(L, "config", "header names and values must be strings"), 0;
    if (!header_name_ok(name, nlen)) return ok_fail(L, "config", "header name is not an RFC 9110 token: refused"), 0;
    for (int i = 0; managed[i]; i++)
      if (strcasecmp(name, managed[i]) == 0) return ok_fail(L, "config", "header %s is set by oktadpop", name), 0;
    if (strpbrk(value, "\r\n") || strlen(value) != vlen) return ok_fail(L, "config", "header %s contains CR, LF or NUL", name), 0;
    lua_pop(L, 1);
  }
  return 1;
}

/* Starts an action {action="send", kind=, method=, url=, timeout=, headers={...}} with the
 * headers table on top of it. */
static void send_begin(lua_State *L, ok_session *s, const char *kind, const char *method, const char *url) {
  lua_createtable(L, 0, 7);
  lua_pushliteral(L, "send"); lua_setfield(L, -2, "action");
  lua_pushstring(L, kind); lua_setfield(L, -2, "kind");
  lua_pushstring(L, method); lua_setfield(L, -2, "method");
  lua_pushstring(L, url); lua_setfield(L, -2, "url");
  lua_createtable(L, 0, 8);
  lua_pushstring(L, s->cfg.user_agent); lua_setfield(L, -2, "User-Agent");
  lua_pushliteral(L, "application/json"); lua_setfield(L, -2, "Accept");
}

/* Pushes the form body of a token request around the assertion at aidx. */
static void push_token_form(lua_State *L, ok_session *s, int aidx) {
  luaL_Buffer b;
  int pairs;
  push_pair(L, "scope", 5, s->cfg.scopes, strlen(s->cfg.scopes));
  push_pair(L, "client_assertion_type", 21, OK_ASSERTION_TYPE, strlen(OK_ASSERTION_TYPE));
  pairs = lua_gettop(L) - 1;
  luaL_buffinit(L, &b); /* absolute indexes: 5.4 pushes a placeholder, 5.1 does not */
  luaL_addstring(&b, "grant_type=client_credentials&");
  lua_pushvalue(L, pairs);
  luaL_addvalue(&b);
  luaL_addchar(&b, '&');
  lua_pushvalue(L, pairs + 1);
  luaL_addvalue(&b);
  luaL_addstring(&b, "&client_assertion=");
  lua_pushvalue(L, aidx); /* base64url and dots: nothing to escape */
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_replace(L, pairs);
  lua_pop(L, 1);
}

/* Okta consumes an assertion's jti even when it answers use_dpop_nonce, so every attempt
 * gets a fresh assertion and a fresh proof. */
/* X-Okta-Retry-For and -Count: Okta's SDKs say which request a retry repeats. */
static void add_retry_headers(lua_State *L, const char *retry_for, int retry_count) {
  if (!retry_count) return;
  if (retry_for) { lua_pushstring(L, retry_for); lua_setfield(L, -2, "X-Okta-Retry-For"); }
  lua_pushfstring(L, "%d", retry_count);
  lua_setfield(L, -2, "X-Okta-Retry-Count");
}

int ok_request_token(lua_State *L, ok_session *s, long long iat, const char *retry_for, int retry_count) {
  const ok_config *c = &s->cfg;
  int top = lua_gettop(L);
  if (!ok_assertion_make(L, s->assertion_key, c->client_id, c->token_url, iat, OK_ASSERTION_LIFETIME)) return 0;
  if (c->dpop && !ok_dpop_make(L, s->dpop_key, "POST", c->token_url, s->as_nonce, NULL, iat)) return 0;
  send_begin(L, s, "token", "POST", c->token_url);
  lua_pushliteral(L, "application/x-www-form-urlencoded");
  lua_setfield(L, -2, "Content-Type");
  if (c->dpop) { lua_pushvalue(L, top + 2); lua_setfield(L, -2, "DPoP"); }
  add_retry_headers(L, retry_for, retry_count);
  lua_setfield(L, -2, "headers");
  lua_pushnumber(L, c->timeout);
  lua_setfield(L, -2, "timeout");
  push_token_form(L, s, top + 1);
  lua_setfield(L, -2, "body");
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  s->token_requests++;
  return 1;
}

/* Copies the caller's headers at hidx into the headers table on top (ours are set after). */
static int add_caller_headers(lua_State *L, int hidx) {
  int has_type = 0;
  if (!hidx || !lua_istable(L, hidx)) return 0;
  lua_pushnil(L);
  while (lua_next(L, hidx)) {
    has_type |= strcasecmp(lua_tostring(L, -2), "content-type") == 0;
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_settable(L, -4);
  }
  return has_type;
}

int ok_request_api(lua_State *L, ok_session *s, const char *method, const char *url, int hidx, int bidx,
                   long long iat, const char *retry_for, int retry_count) {
  int top = lua_gettop(L), has_type;
  if (s->cfg.dpop && !ok_dpop_make(L, s->dpop_key, method, url, s->rs_nonce, s->token_ath, iat)) return 0;
  send_begin(L, s, "api", method, url);
  has_type = add_caller_headers(L, hidx);
  if (bidx && !lua_isnil(L, bidx)) {
    lua_pushvalue(L, bidx);
    lua_setfield(L, -3, "body");
    if (!has_type) { lua_pushliteral(L, "application/json"); lua_setfield(L, -2, "Content-Type"); }
  }
  lua_pushfstring(L, "%s %s", s->cfg.dpop ? "DPoP" : "Bearer", s->token);
  lua_setfield(L, -2, "Authorization");
  if (s->cfg.dpop) { lua_pushvalue(L, top + 1); lua_setfield(L, -2, "DPoP"); }
  add_retry_headers(L, retry_for, retry_count);
  lua_setfield(L, -2, "headers");
  lua_pushnumber(L, s->cfg.timeout);
  lua_setfield(L, -2, "timeout");
  if (s->cfg.dpop) lua_remove(L, top + 1);
  s->api_requests++;
  return 1;
}
