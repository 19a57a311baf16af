/* headers.c: a response's header block as callers see it, one rule for both transports: a
 * table of lower-case names, a repeated header's values joined by ", " (RFC 9110 section
 * 5.3), optional whitespace trimmed, and any line that is not `token: value` refused. The
 * libcurl transport calls it on the block libcurl hands over; the nginx reader through
 * oktadpop.core.headers. */
#include <ctype.h>
#include <string.h>
#include "lua/oktadpop.h"

static int tchar(unsigned char c) { return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c)); }

int ok_headers_push(lua_State *L, const char *block, size_t n) {
  const char *p = block, *end = block + n;
  int tbl;
  lua_newtable(L);
  tbl = lua_gettop(L);
  p = n ? memchr(p, '\n', n) : NULL; /* past the status line */
  while (p && ++p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p)), *name_end = p, *v, *ve;
    char name[128];
    if (!eol) eol = end;
    ve = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
    if (ve == p) break; /* the blank line that ends the block */
    while (name_end < ve && tchar((unsigned char)*name_end)) name_end++;
    if (name_end == p || name_end == ve || *name_end != ':' || (size_t)(name_end - p) >= sizeof name)
      return lua_settop(L, tbl - 1), ok_fail(L, "network", "malformed header line"), 0;
    for (size_t i = 0; i < (size_t)(name_end - p); i++) name[i] = (char)tolower((unsigned char)p[i]);
    name[name_end - p] = '\0';
    for (v = name_end + 1; v < ve && (*v == ' ' || *v == '\t'); v++) {}
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    lua_getfield(L, tbl, name);
    if (lua_isstring(L, -1)) { lua_pushliteral(L, ", "); lua_pushlstring(L, v, (size_t)(ve - v)); lua_concat(L, 3); }
    else { lua_pop(L, 1); lua_pushlstring(L, v, (size_t)(ve - v)); }
    lua_setfield(L, tbl, name);
    p = eol;
  }
  return 1;
}
