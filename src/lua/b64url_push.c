/* b64url_push.c: base64url (the pure coder, pure/b64url.c) into Lua strings and buffers. */
#include "lua/oktadpop.h"

void ok_b64url_push(lua_State *L, const unsigned char *in, size_t n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  ok_b64url_add(&b, in, n);
  luaL_pushresult(&b);
}

void ok_b64url_add(luaL_Buffer *b, const unsigned char *in, size_t n) {
  size_t len = ok_b64url_len(n);
  char *p = luaL_prepbuffsize(b, len);
  ok_b64url_encode(in, n, p);
  luaL_addsize(b, len);
}
