/* errors.c: error objects: tables {kind=, message=, ...} (see the README for every field) with a
 * __tostring that shows the message, Okta's reasons (causes), the code and request id when the
 * message lacks them, and never a secret; OpenSSL's error queue turned into messages. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include "lua/oktadpop.h"

static void push_errorv(lua_State *L, const char *kind, const char *fmt, va_list ap) {
  char msg[1024]; /* C printf formats, checked by the compiler; long messages are cut */
  vsnprintf(msg, sizeof msg, fmt, ap);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, OK_ERROR_MT);
}

int ok_error_push(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return 1;
}

int ok_fail(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return 2;
}

int ok_fail_ssl(lua_State *L, const char *kind, const char *what) {
  char reason[256] = "";
  unsigned long code = ERR_peek_error();
  if (code) ERR_error_string_n(code, reason, sizeof reason);
  /* OpenSSL messages name the failing routine, never key bytes, so they are safe to show. */
  ERR_clear_error();
  if (*reason) return ok_fail(L, kind, "%s (%s)", what, reason);
  return ok_fail(L, kind, "%s", what);
}

void ok_error_setstr(lua_State *L, const char *name, const char *value) {
  if (!value) return;
  lua_pushstring(L, value);
  lua_setfield(L, -2, name);
}

void ok_error_setint(lua_State *L, const char *name, lua_Integer value) {
  lua_pushinteger(L, value);
  lua_setfield(L, -2, name);
}

/* Pushes Okta's reasons (err.causes, its errorCauses summaries) as they follow the message:
 * ": a; b", or "" when there are none. A buffer, not a value per cause: the server decides how
 * many there are, and the stack is only sure of LUA_MINSTACK slots. */
static void push_causes(lua_State *L, int eidx) {
  luaL_Buffer b;
  int list, n = 0;
  lua_getfield(L, eidx, "causes");
  list = lua_gettop(L);
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1, len = lua_istable(L, list) ? (lua_Integer)lua_rawlen(L, list) : 0; i <= len; i++) {
    int is_string = lua_rawgeti(L, list, i) == LUA_TSTRING;
    lua_pop(L, 1); /* the buffer's stack use stays balanced: added below, taken again */
    if (!is_string) continue;
    luaL_addstring(&b, n ? "; " : ": "); /* a macro in compat-5.3: no side effect in it */
    n++;
    lua_rawgeti(L, list, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_remove(L, list);
}

/* "oktadpop http error: POST https://org/api/v1/users: HTTP 400 E0000001: Api validation
 * failed: login: An object with this field already exists (request abc)": the message says
 * status and code already; only what it lacks is added, Okta's reasons first. */
static int error_tostring(lua_State *L) {
  luaL_Buffer b;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "request_id");
  lua_getfield(L, 1, "retry_after");
  lua_getfield(L, 1, "code");
  push_causes(L, 1); /* 7 */
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "oktadpop ");
  luaL_addstring(&b, lua_isstring(L, 2) ? lua_tostring(L, 2) : "unknown");
  luaL_addstring(&b, " error: ");
  luaL_addstring(&b, lua_isstring(L, 3) ? lua_tostring(L, 3) : "");
  luaL_addstring(&b, lua_tostring(L, 7));
  if (lua_isstring(L, 6) && !(lua_isstring(L, 3) && strstr(lua_tostring(L, 3), lua_tostring(L, 6)))) {
    luaL_addstring(&b, " (");
    luaL_addstring(&b, lua_tostring(L, 6));
    luaL_addchar(&b, ')');
  }
  if (lua_isstring(L, 4)) { luaL_addstring(&b, " (request "); luaL_addstring(&b, lua_tostring(L, 4)); luaL_addchar(&b, ')'); }
  if (lua_isstring(L, 5)) { luaL_addstring(&b, " (retry after "); luaL_addstring(&b, lua_tostring(L, 5)); luaL_addstring(&b, " s)"); }
  luaL_pushresult(&b);
  return 1;
}

void ok_errors_open(lua_State *L) {
  static const luaL_Reg meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
  ok_class(L, OK_ERROR_MT, NULL, meta);
}
