/* oktadpop.h: the Lua basics every Lua-facing C file shares (not installed): the version, error
 * objects, option tables, JSON through lua-cjson, base64url strings, and reading the files we
 * are handed. Keys and JOSE are in jose/jose.h, the pure helpers in pure/pure.h, the protocol
 * core in core/core.h, the Lua binding in binding/binding.h. */
#ifndef OKTADPOP_H
#define OKTADPOP_H

#include <stddef.h>
#include "lua/compat.h"
#include "pure/pure.h"

#define OKTADPOP_VERSION "0.1.0"

/* Metatable and registry names (string keys: LuaJIT-safe). */
#define OK_ERROR_MT  "oktadpop.error"
#define OK_JSON_REG  "oktadpop.cjson"

/* ---- errors.c: error objects ---- */
/* Pushes an error object {kind=, message=}; returns 1 (one value pushed). */
int ok_error_push(lua_State *L, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Pushes nil and an error object; returns 2, for `return ok_fail(...)`. */
int ok_fail(lua_State *L, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like ok_fail, with the OpenSSL error queue's first reason appended; clears the queue. */
int ok_fail_ssl(lua_State *L, const char *kind, const char *what);
/* Sets field `name` of the error object at the top of the stack. */
void ok_error_setstr(lua_State *L, const char *name, const char *value);
void ok_error_setint(lua_State *L, const char *name, lua_Integer value);
void ok_errors_open(lua_State *L);

/* ---- headers.c ---- */
/* Pushes the header block's table (lower-case names, repeats joined by ", ") and returns 1;
 * or pushes nil, err (kind "network") and returns 0 for a malformed line. The block starts
 * with the status line. */
int ok_headers_push(lua_State *L, const char *block, size_t n);

/* ---- stack.c ---- */
/* Moves the top n values down to base+1..base+n and drops what was between; returns n. */
int ok_keep(lua_State *L, int base, int n);

/* ---- class.c: userdata classes ---- */
/* Registers the metatable `name` once: __name, the metamethods (either may be NULL), and
 * __index to the methods; a metamethod __index gets the methods table as its upvalue. */
void ok_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods);

/* ---- options.c: option tables; a bad value inside one is nil, err (kind "config"), while a
 * wrong argument type raises ---- */
/* 1 when every key of the table at idx is one of names (NULL-terminated); else nil, err. */
int ok_opts_known(lua_State *L, int idx, const char *what, const char *const *names);
/* An optional finite number field in [lo, hi]; 1 with *out (dflt when absent), or nil, err. */
int ok_opt_number(lua_State *L, int idx, const char *name, double dflt, double lo, double hi, double *out);
/* An optional string field without NUL bytes; 1 with *out (NULL when absent; the table keeps
 * it alive), or nil, err. */
int ok_opt_string(lua_State *L, int idx, const char *name, const char **out, size_t *len);

/* ---- b64url.c: Lua conveniences over the pure coder (pure.h) ---- */
void ok_b64url_push(lua_State *L, const unsigned char *in, size_t n);
void ok_b64url_add(luaL_Buffer *b, const unsigned char *in, size_t n);

/* ---- json.c: lua-cjson reached through Lua ---- */
void ok_json_open(lua_State *L);
/* Encodes the value at idx; pushes the JSON string, or nil + error object; returns 1 on success. */
int ok_json_encode(lua_State *L, int idx);
/* Decodes s; pushes the value, or nil + error object; returns 1 on success. */
int ok_json_decode(lua_State *L, const char *s, size_t n);
/* Appends the JSON string literal of s to b (cjson does the escaping). */
void ok_json_add_string(lua_State *L, luaL_Buffer *b, const char *s, size_t n);
void ok_json_push_null(lua_State *L);

/* ---- outfile.c: files a caller names to be written (oktadpop.outfile) ---- */
int ok_outfile_new(lua_State *L);
void ok_outfile_open(lua_State *L);

/* ---- files.c: small files handed to us ---- */
/* Reads a regular file of at most max bytes, NUL-terminated, into a userdata left on the
 * stack that has room for `copies` times the file (scratch space for a parser); returns
 * NULL, or one of the three reasons below (errno tells why it could not be opened). */
extern const char OK_FILE_CANNOT_OPEN[], OK_FILE_NOT_REGULAR[], OK_FILE_TOO_LARGE[];
const char *ok_read_small_file(lua_State *L, const char *path, size_t max, int copies,
                               char **data, size_t *len);

#endif
