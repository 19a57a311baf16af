/* keys.c: the key object: its sources (a key object, a JWK
 * table, PEM or JWK text, a file path; keyimport.c turns the bytes into a checked key),
 * generation, public JWK, thumbprint and PEM export. A key is parsed once; nothing here runs
 * on the signing path. */
/*** @module oktadpop */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/pem.h>
#include "jose/jose.h"

#define OK_KEY_FILE_MAX (1024 * 1024) /* far above any key or JWKS; bounds what we read */


/* ---- userdata life ---- */

static ok_key *key_new(lua_State *L) {
  ok_key *k = lua_newuserdata(L, sizeof *k);
  memset(k, 0, sizeof *k);
  luaL_setmetatable(L, OK_KEY_MT);
  return k;
}

static int key_gc(lua_State *L) {
  ok_key *k = luaL_checkudata(L, 1, OK_KEY_MT);
  EVP_PKEY_free(k->pkey); /* OpenSSL clears private BIGNUMs as it frees them */
  free(k->kid);
  free(k->jwk_canon);
  free(k->thumbprint);
  free(k->dpop_header);
  EVP_PKEY_CTX_free(k->sign_ctx);
  EVP_MD_CTX_free(k->md_ctx);
  EVP_PKEY_CTX_free(k->verify_ctx);
  memset(k, 0, sizeof *k);
  return 0;
}

ok_key *ok_key_check(lua_State *L, int idx) {
  ok_key *k = luaL_checkudata(L, idx, OK_KEY_MT);
  if (!k->pkey) luaL_argerror(L, idx, "key has been freed");
  return k;
}

/* ---- sources: key object, JWK table, PEM or JWK string, file path ---- */

/* Reads a key file into a userdata left on the stack (no leak if anything later throws). */
static const char *file_read(lua_State *L, const char *path, const char **data, size_t *len) {
  static char msg[600];
  char *buf;
  const char *err = ok_read_small_file(L, path, OK_KEY_FILE_MAX, 1, &buf, len);
  if (err == OK_FILE_CANNOT_OPEN) snprintf(msg, sizeof msg, "cannot open key file %.500s: %s", path, strerror(errno));
  else if (err == OK_FILE_NOT_REGULAR) snprintf(msg, sizeof msg, "key path %.500s is not a regular file", path);
  else if (err) snprintf(msg, sizeof msg, "key file %.500s is larger than 1 MiB: not a key", path);
  if (err) return msg;
  *data = buf;
  return NULL;
}

/* What a string source is: "pem", "json" or a file path. */
static const char *text_kind(const char *s, size_t n) {
  while (n && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) s++, n--;
  if (n >= 10 && memcmp(s, "-----BEGIN", 10) == 0) return "pem";
  if (n && *s == '{') return "json";
  return NULL;
}

int ok_key_file_mode(lua_State *L, int idx) {
  struct stat st;
  size_t n;
  const char *s;
  if (lua_type(L, idx) != LUA_TSTRING) return -1;
  s = lua_tolstring(L, idx, &n);
  if (text_kind(s, n) || n > 4096 || memchr(s, '\n', n) || strlen(s) != n || stat(s, &st) != 0) return -1;
  return (int)(st.st_mode & 07777);
}

typedef struct load_opts { const char *pass, *alg, *kid; } load_opts;

/* A key object again: itself, or a twin sharing its EVP_PKEY with another alg or kid. */
static int load_twin(lua_State *L, int idx, const load_opts *o) {
  ok_key *src = ok_key_check(L, idx), *k;
  const char *err;
  if (!o->alg && !o->kid) { lua_pushvalue(L, idx); return 1; }
  k = key_new(L);
  EVP_PKEY_up_ref(src->pkey);
  k->pkey = src->pkey;
  if ((err = ok_key_finish(L, k, o->alg ? o->alg : ok_alg_name(src->alg), o->kid ? o->kid : src->kid)))
    return ok_fail(L, "key", "%s", err), 0;
  return 1;
}

/* Decodes the string source at idx (PEM, JWK JSON, or a file path holding either) into k;
 * returns NULL or why not. A file's bytes are wiped once decoded. */
static const char *load_text(lua_State *L, int idx, ok_key *k, const load_opts *o, const char **jalg,
                             const char **jkid, int *from_pem) {
  size_t tlen;
  const char *text = lua_tolstring(L, idx, &tlen), *kind = text_kind(text, tlen), *err;
  int copy = 0;
  if (!kind) { /* a path */
    if (tlen > 4096 || memchr(text, '\n', tlen)) return "key source is neither PEM, JWK JSON nor a file path";
    if ((err = file_read(L, text, &text, &tlen))) return err;
    copy = 1;
    if (!(kind = text_kind(text, tlen))) err = "key file holds neither PEM nor JWK JSON";
  }
  if (!kind) err = err ? err : "key source is neither PEM, JWK JSON nor a file path";
  else if (kind[0] == 'p') { err = ok_pem_decode(&k->pkey, text, tlen, o->pass); *from_pem = 1; }
  else if (!ok_json_decode(L, text, tlen)) err = "corrupt JWK JSON";
  else if (!lua_istable(L, -1)) err = "JWK JSON is not an object";
  else err = ok_jwk_load(L, -1, &k->pkey, o->kid, jalg, jkid);
  if (copy) OPENSSL_cleanse((void *)text, tlen);
  return err;
}

int ok_key_load(lua_State *L, int idx, int optidx) {
  static const char *const names[] = {"passphrase", "alg", "kid", NULL};
  const char *err = NULL, *jalg = NULL, *jkid = NULL;
  load_opts o = {NULL, NULL, NULL};
  ok_key *k;
  int kidx, from_pem = 0;
  idx = lua_absindex(L, idx);
  if (optidx && lua_isnoneornil(L, optidx)) optidx = 0;
  if (optidx) {
    optidx = lua_absindex(L, optidx);
    luaL_checktype(L, optidx, LUA_TTABLE);
    if (!ok_opts_known(L, optidx, "load_key", names) || !ok_opt_string(L, optidx, "passphrase", &o.pass, NULL) ||
        !ok_opt_string(L, optidx, "alg", &o.alg, NULL) || !ok_opt_string(L, optidx, "kid", &o.kid, NULL))
      return 0;
  }
  if (luaL_testudata(L, idx, OK_KEY_MT)) return load_twin(L, idx, &o);
  if (!lua_istable(L, idx) && lua_type(L, idx) != LUA_TSTRING)
    return luaL_argerror(L, idx, "expected a key, a JWK table, a PEM or JWK string, or a file path");
  k = key_new(L);
  kidx = lua_gettop(L);
  if (lua_istable(L, idx)) {
    lua_pushvalue(L, idx);
    err = ok_jwk_load(L, -1, &k->pkey, o.kid, &jalg, &jkid);
  } else {
    err = load_text(L, idx, k, &o, &jalg, &jkid, &from_pem);
  }
  if (!err) err = ok_key_finish(L, k, o.alg ? o.alg : jalg, o.kid ? o.kid : jkid);
  if (!err && from_pem && k->is_private && !ok_pem_sign_check(k))
    err = "the private key's parts do not agree (its signatures fail with its own public key): corrupt key";
  if (err) return ok_fail(L, "key", "%s", err), 0;
  lua_pushvalue(L, kidx);
  return 1;
}

int ok_key_load_alg(lua_State *L, int jidx, enum ok_alg alg) {
  jidx = lua_absindex(L, jidx);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, ok_alg_name(alg));
  lua_setfield(L, -2, "alg");
  return ok_key_load(L, jidx, lua_gettop(L));
}

/*** oktadpop.load_key(source [, {passphrase=, kid=, alg=}])
 * @function load_key
 */
int ok_key_loadkey(lua_State *L) {
  luaL_checkany(L, 1);
  return ok_key_load(L, 1, 2) ? 1 : 2;
}

int ok_key_new_generated(lua_State *L, enum ok_alg alg, int bits, const char *kid) {
  const char *err;
  ok_key *k = key_new(L);
  k->pkey = ok_alg_is_ec(alg) ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", ok_alg_curve(alg))
                              : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
  if (!k->pkey) return ok_fail_ssl(L, "crypto", "key generation failed"), 0;
  if ((err = ok_key_finish(L, k, ok_alg_name(alg), kid))) return ok_fail(L, "key", "%s", err), 0;
  return 1;
}

/*** oktadpop.generate_key([alg [, {bits=, kid=}]]): a new key in memory, never on disk.
 * @function generate_key
 */
int ok_key_generate(lua_State *L) {
  static const char *const names[] = {"bits", "kid", NULL};
  const char *name = luaL_optstring(L, 1, "ES256"), *kid = NULL;
  int alg = ok_alg_from_name(name);
  double bits = 2048;
  if (alg < 0) return ok_fail(L, "config", "unsupported alg '%s': use RS256/384/512 or ES256/384/512", name);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!ok_opts_known(L, 2, "generate_key", names) || !ok_opt_number(L, 2, "bits", 2048, 2048, 4096, &bits) ||
        !ok_opt_string(L, 2, "kid", &kid, NULL))
      return 2;
  }
  if (bits != (int)bits) return ok_fail(L, "config", "bits must be a whole number from 2048 to 4096");
  return ok_key_new_generated(L, alg, (int)bits, kid) ? 1 : 2;
}

/* ---- methods ---- */

/*** key:public_jwk(): {kty=, n=, e= | crv=, x=, y=, kid=, alg=, use="sig"}; never private
 * members.
 * @function key:public_jwk
 */
static int key_public_jwk(lua_State *L) {
  ok_key *k = ok_key_check(L, 1);
  if (!ok_json_decode(L, k->jwk_canon, strlen(k->jwk_canon))) return lua_error(L);
  if (k->kid) { lua_pushstring(L, k->kid); lua_setfield(L, -2, "kid"); }
  lua_pushstring(L, ok_alg_name(k->alg));
  lua_setfield(L, -2, "alg");
  lua_pushliteral(L, "sig");
  lua_setfield(L, -2, "use");
  return 1;
}

static int key_thumbprint(lua_State *L) {
  lua_pushstring(L, ok_key_check(L, 1)->thumbprint);
  return 1;
}

/*** key:to_pem([private]): SPKI public PEM; PKCS#8 private PEM only when asked.
 * @function key:to_pem
 */
static int key_to_pem(lua_State *L) {
  ok_key *k = ok_key_check(L, 1);
  int private = lua_toboolean(L, 2), ok;
  luaL_Buffer b;
  char *dst;
  BIO *bio;
  if (private && !k->is_private) return ok_fail(L, "key", "this is a public key: there is no private PEM");
  dst = luaL_buffinitsize(L, &b, 16384); /* room for RSA-4096 PKCS#8; reserved before the BIO */
  bio = BIO_new(private ? BIO_s_secmem() : BIO_s_mem());
  if (!bio) return ok_fail_ssl(L, "crypto", "cannot allocate a BIO");
  ok = private ? PEM_write_bio_PrivateKey(bio, k->pkey, NULL, NULL, 0, NULL, NULL)
               : PEM_write_bio_PUBKEY(bio, k->pkey);
  int n = ok ? BIO_read(bio, dst, 16384) : -1;
  BIO_free(bio);
  if (n <= 0) return ok_fail_ssl(L, "crypto", "cannot write PEM");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/*** key:save_pem(path [, private]): writes the PEM with mode 0600, created that way (no window in
 * which another user could read it); refuses to follow a symlink. -> true | nil, err
 * @function key:save_pem
 */
static int key_save_pem(lua_State *L) {
  size_t n;
  const char *path = luaL_checkstring(L, 2), *pem;
  int fd, ok;
  lua_settop(L, 3);
  lua_pushcfunction(L, key_to_pem);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2)) return 2;
  pem = lua_tolstring(L, -2, &n);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return ok_fail(L, "key", "cannot create %s: %s", path, strerror(errno));
  ok = fchmod(fd, 0600) == 0 && write(fd, pem, n) == (ssize_t)n;
  ok = close(fd) == 0 && ok;
  if (!ok) return ok_fail(L, "key", "cannot write %s: %s", path, strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

static const char *key_kty(const ok_key *k) { return ok_alg_is_ec(k->alg) ? "EC" : "RSA"; }

static int key_tostring(lua_State *L) {
  ok_key *k = luaL_checkudata(L, 1, OK_KEY_MT);
  if (!k->pkey) { lua_pushliteral(L, "oktadpop.key (freed)"); return 1; }
  lua_pushfstring(L, "oktadpop.key: %s %s %s, kid=%s, thumbprint=%s",
                  ok_alg_is_ec(k->alg) ? ok_alg_curve(k->alg) : "RSA",
                  k->is_private ? "private" : "public", ok_alg_name(k->alg),
                  k->kid ? k->kid : "none", k->thumbprint);
  return 1;
}

/* key.alg, key.kid, key.kty, key.private, key.bits, and the methods. */
static int key_index(lua_State *L) {
  ok_key *k = ok_key_check(L, 1);
  const char *name = luaL_checkstring(L, 2);
  if (strcmp(name, "alg") == 0) lua_pushstring(L, ok_alg_name(k->alg));
  else if (strcmp(name, "kid") == 0) { if (k->kid) lua_pushstring(L, k->kid); else lua_pushnil(L); }
  else if (strcmp(name, "kty") == 0) lua_pushstring(L, key_kty(k));
  else if (strcmp(name, "private") == 0) lua_pushboolean(L, k->is_private);
  else if (strcmp(name, "bits") == 0) lua_pushinteger(L, EVP_PKEY_get_bits(k->pkey));
  else lua_getfield(L, lua_upvalueindex(1), name);
  return 1;
}

void ok_keys_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"public_jwk", key_public_jwk}, {"thumbprint", key_thumbprint}, {"to_pem", key_to_pem},
      {"save_pem", key_save_pem}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", key_gc}, {"__tostring", key_tostring}, {"__index", key_index}, {NULL, NULL}};
  ok_class(L, OK_KEY_MT, methods, meta);
  ok_md_cache_open(L);
}
