/* result.c: responses turned into what callers get. A response becomes {status=, headers=,
 * body=, next=}, its JSON body decoded; a non-2xx one becomes an error object that keeps what
 * Okta said: the errorCode/errorSummary/errorId/errorLink/errorCauses of a JSON body, and the
 * error, error_description and scope of a WWW-Authenticate challenge (Okta answers DPoP,
 * token and scope errors on /api/v1 with an empty body and only the challenge:
 * okta-sdk-golang #554, terraform-provider-okta #2375 and #2392). Part of the core: no I/O. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/core.h"

const char *ok_header(lua_State *L, int hidx, const char *name) {
  const char *v;
  lua_getfield(L, hidx, name);
  v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the headers table keeps it alive */
  return v;
}

/* Pushes the decoded body (JSON when the content type says so, else the string, nil when
 * empty); sets *json_err when a JSON body does not parse. */
static void push_body(lua_State *L, int ridx, int hidx, const char **json_err) {
  size_t n = 0;
  const char *ct = ok_header(L, hidx, "content-type"), *body;
  lua_getfield(L, ridx, "body");
  body = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  *json_err = NULL;
  if (!body || n == 0) { lua_pop(L, 1); lua_pushnil(L); return; }
  if (ct && strstr(ct, "json")) {
    if (ok_json_decode(L, body, n)) { lua_remove(L, -2); return; }
    *json_err = "the response says JSON but its body does not parse";
    lua_pop(L, 2);
  }
}

void ok_result_response(lua_State *L, int ridx) {
  const char *json_err, *link;
  int hidx;
  ridx = lua_absindex(L, ridx);
  lua_createtable(L, 0, 5);
  lua_getfield(L, ridx, "status");
  lua_setfield(L, -2, "status");
  lua_getfield(L, ridx, "headers");
  if (!lua_istable(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
  hidx = lua_gettop(L);
  lua_pushvalue(L, hidx);
  lua_setfield(L, -3, "headers");
  push_body(L, ridx, hidx, &json_err);
  lua_setfield(L, -3, "body");
  if (json_err) { lua_pushstring(L, json_err); lua_setfield(L, -3, "json_error"); }
  if ((link = ok_header(L, hidx, "link"))) {
    char *next = ok_link_next(link, strlen(link));
    lua_pushstring(L, next); /* may raise on OOM: nothing else is held */
    free(next);
    lua_setfield(L, -3, "next");
  }
  lua_pop(L, 1);
}

double ok_result_rate_wait(lua_State *L, int hidx, double server_now) {
  double reset = ok_header_min(ok_header(L, hidx, "x-rate-limit-reset"));
  const char *after = ok_header(L, hidx, "retry-after"), *date = ok_header(L, hidx, "date");
  double d = date ? ok_http_date(date) : -1, now = d > 0 ? d : server_now, wait = 1;
  /* Date is the server's second, floored: from it the wait ends within a second after the
   * reset, never before it; 50 ms more, as admission waits (admission.c) */
  if (reset > 0) wait = reset - now + 0.05;
  else if (after) wait = ok_http_date(after) > 0 ? ok_http_date(after) - now : ok_header_min(after);
  return wait >= 0 ? wait : 0;
}

/* Sets field name of the error at the top from auth-param param of the challenge www. */
static void set_challenge_field(lua_State *L, const char *www, const char *param, const char *name) {
  char *v = ok_www_auth_param(www, strlen(www), param);
  if (v && *v) lua_pushstring(L, v); else lua_pushnil(L);
  free(v);
  lua_setfield(L, -2, name);
}

/* errorCauses [{errorSummary=...}] as a list of strings, on the error at the top. */
static void set_causes(lua_State *L, int bidx) {
  int causes, list, n;
  lua_getfield(L, bidx, "errorCauses");
  causes = lua_gettop(L);
  if (!lua_istable(L, causes)) { lua_pop(L, 1); return; }
  n = (int)lua_rawlen(L, causes);
  lua_createtable(L, n, 0);
  list = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, causes, i);
    if (lua_istable(L, -1)) lua_getfield(L, -1, "errorSummary"); else lua_pushvalue(L, -1);
    if (lua_type(L, -1) == LUA_TSTRING) lua_rawseti(L, list, (int)lua_rawlen(L, list) + 1); else lua_pop(L, 1);
    lua_pop(L, 1);
  }
  lua_setfield(L, causes - 1, "causes");
  lua_pop(L, 1);
}

/* Copies Okta's JSON error members (or OAuth's error/error_description) onto the error. */
static void set_body_fields(lua_State *L, int bidx) {
  static const char *const members[][2] = {{"errorCode", "code"}, {"errorSummary", "summary"}, {"errorId", "error_id"},
                                           {"errorLink", "error_link"}, {"error", "code"}, {"error_description", "summary"}};
  if (!lua_istable(L, bidx)) return;
  for (int i = 0; i < 6; i++) {
    lua_getfield(L, -1, members[i][1]);
    int have = !lua_isnil(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, bidx, members[i][0]);
    if (!have && lua_type(L, -1) == LUA_TSTRING) lua_setfield(L, -2, members[i][1]); else lua_pop(L, 1);
  }
  set_causes(L, bidx);
}

/* What the admin should do about some answers, said in the message. */
static const char *advice(int status, const char *code, const char *scope, const char *summary) {
  if (code && strcmp(code, "insufficient_scope") == 0)
    return scope ? "grant the app that scope (Admin Console: the app's Okta API Scopes tab), and request it in scopes"
                 : "grant the app the scope this call needs (Admin Console: the app's Okta API Scopes tab)";
  if (code && strcmp(code, "E0000006") == 0)
    return "the app has the scope, but its admin role does not allow this: assign an admin role that does";
  if (code && strcmp(code, "E0000009") == 0)
    return "Okta's query timed out (30 s): narrow the query (filter, since/until) or lower limit; repeating it will not help";
  if (code && strcmp(code, "invalid_dpop_proof") == 0 && summary && strstr(summary, OK_PROOF_REUSED_TEXT))
    return "the request went out twice with one proof (its connection was lost after sending and the transport sent it "
           "again), so it may have been applied: check before repeating it";
  if (status == 429) return "rate limited: wait retry_after seconds, or lower the pace (max_capacity, max_concurrency)";
  return NULL;
}

/* The message: prefix: HTTP status code: summary [(scope X)]; advice. */
static void set_message(lua_State *L, long status, const char *prefix) {
  const char *code = ok_header(L, -1, "code"), *summary = ok_header(L, -1, "summary");
  const char *scope = ok_header(L, -1, "scope"), *hint = advice((int)status, code, scope, summary);
  lua_pushfstring(L, "%s: HTTP %d%s%s%s%s%s%s%s%s", prefix, (int)status, code ? " " : "", code ? code : "",
                  summary ? ": " : "", summary ? summary : "", scope ? " (scope " : "", scope ? scope : "",
                  scope ? ")" : "", hint ? "; " : "");
  if (hint) { lua_pushstring(L, hint); lua_concat(L, 2); }
  lua_setfield(L, -2, "message");
  if (hint) { lua_pushstring(L, hint); lua_setfield(L, -2, "hint"); }
}

void ok_result_http_error(lua_State *L, int ridx, const char *prefix, double server_now) {
  long status;
  const char *www;
  int hidx, bidx;
  ridx = lua_absindex(L, ridx);
  lua_getfield(L, ridx, "status");
  status = (long)lua_tointeger(L, -1);
  lua_getfield(L, ridx, "headers");
  hidx = lua_gettop(L);
  lua_getfield(L, ridx, "body");
  bidx = lua_gettop(L);
  www = lua_istable(L, hidx) ? ok_header(L, hidx, "www-authenticate") : NULL;
  ok_error_push(L, "http", "HTTP %ld", status);
  ok_error_setint(L, "status", status);
  if (www) {
    lua_pushstring(L, www);
    lua_setfield(L, -2, "www_authenticate");
    set_challenge_field(L, www, "error", "code");
    set_challenge_field(L, www, "error_description", "description");
    set_challenge_field(L, www, "scope", "scope");
    lua_getfield(L, -1, "description");
    lua_setfield(L, -2, "summary");
    lua_getfield(L, -1, "code");
    if (!lua_isnil(L, -1)) { lua_pushliteral(L, "oauth"); lua_setfield(L, -3, "kind"); }
    lua_pop(L, 1);
  }
  set_body_fields(L, bidx);
  if (lua_istable(L, hidx)) {
    ok_error_setstr(L, "request_id", ok_header(L, hidx, "x-okta-request-id"));
    if (status == 429) ok_error_setint(L, "retry_after", (lua_Integer)ceil(fmin(ok_result_rate_wait(L, hidx, server_now), 86400)));
  }
  set_message(L, status, prefix);
  lua_replace(L, hidx - 1);
  lua_settop(L, hidx - 1);
}

int ok_result_call(lua_State *L, int ridx) {
  long status;
  ridx = lua_absindex(L, ridx);
  lua_getfield(L, ridx, "status");
  status = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, ridx, "error");
  if (!lua_isnil(L, -1) || status < 200 || status > 299) {
    if (lua_isnil(L, -1)) { lua_pop(L, 1); ok_error_push(L, "http", "HTTP %ld", status); }
    lua_pushnil(L);
    lua_insert(L, -2);
    lua_pushvalue(L, ridx);
    return 3;
  }
  lua_pop(L, 1);
  lua_getfield(L, ridx, "body");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_pushboolean(L, 1); }
  lua_pushvalue(L, ridx);
  return 2;
}
