/* errors.c: error objects, tables {kind=, message=, status=, code=, summary=, causes=,
 * request_id=, retry_after=} with a __tostring; OpenSSL's error queue turned into messages. */
#include <stdarg.h>
#include <stdio.h>
#include <openssl/err.h>
#include "oktadpop.h"

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

/* "oktadpop http error: Not found (status 404, E0000007, request abc)" */
static int error_tostring(lua_State *L) {
  luaL_Buffer b;
  int first = 1;
  static const char *const extras[] = {"status", "code", "request_id", "retry_after", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_buffinit(L, &b);
  lua_getfield(L, 1, "kind");
  lua_pushfstring(L, "oktadpop %s error: ", lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown");
  lua_remove(L, -2);
  luaL_addvalue(&b);
  lua_getfield(L, 1, "message");
  if (lua_isstring(L, -1)) luaL_addvalue(&b); else lua_pop(L, 1);
  for (int i = 0; extras[i]; i++) {
    int present;
    lua_getfield(L, 1, extras[i]);
    present = lua_isstring(L, -1);
    lua_pop(L, 1); /* nothing may sit on the buffer while we add to it */
    if (!present) continue;
    luaL_addstring(&b, first ? " (" : ", ");
    if (i != 1) { luaL_addstring(&b, extras[i]); luaL_addchar(&b, ' '); }
    lua_getfield(L, 1, extras[i]);
    luaL_addvalue(&b);
    first = 0;
  }
  if (!first) luaL_addchar(&b, ')');
  luaL_pushresult(&b);
  return 1;
}

/* oktadpop.error(kind, message): lets Lua drivers raise errors of the same shape. */
static int error_new(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  return ok_error_push(L, kind, "%s", msg);
}

void ok_errors_open(lua_State *L) {
  if (luaL_newmetatable(L, OK_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "oktadpop.error");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, error_new);
  lua_setfield(L, -2, "error");
}

int ok_keep(lua_State *L, int base, int n) {
  int top = lua_gettop(L);
  for (int i = 1; i <= n; i++) lua_copy(L, top - n + i, base + i); /* targets never pass sources */
  lua_settop(L, base + n);
  return n;
}
