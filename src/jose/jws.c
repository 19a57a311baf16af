/* jws.c: compact JWS (RFC 7515) with RS256/384/512 and ES256/384/512: signing (ECDSA as raw
 * R||S, RFC 7518 section 3.4), verification against the key's own alg, decoding, and
 * sign_jwt / decode_jwt / verify_jwt. */
/*** @module oktadpop */
#include <pthread.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include "jose/jose.h"

#define OK_SIG_MAX 512 /* RSA-4096; ECDSA P-521 DER is 139 */

/* 128 random bits per jti, drawn from OpenSSL's DRBG 64 jtis at a time (one RAND_bytes call
 * costs as much as a small signature's bookkeeping). The pool belongs to one process: a fork
 * (nginx workers) bumps the generation, so the child refills and two processes never hand out
 * the same bytes. An atfork handler rather than getpid(): no system call per proof (glibc drops
 * the handler if Lua unloads the module). */
static unsigned long fork_generation = 1;
static void on_fork_child(void) { fork_generation++; }
static void register_fork_handler(void) { pthread_atfork(NULL, NULL, on_fork_child); }

size_t ok_new_jti(char *buf) {
  static _Thread_local unsigned char pool[64 * 16]; /* per thread: no lock, no sharing */
  static _Thread_local size_t used = sizeof pool;
  static _Thread_local unsigned long generation;
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  size_t n;
  if (used == sizeof pool || generation != fork_generation) {
    if (!generation) pthread_once(&once, register_fork_handler);
    if (RAND_bytes(pool, sizeof pool) != 1) return 0;
    used = 0;
    generation = fork_generation;
  }
  n = ok_b64url_encode(pool + used, 16, buf);
  OPENSSL_cleanse(pool + used, 16);
  used += 16;
  return n;
}

/* DER ECDSA-Sig-Value to fixed-length R||S; returns the raw length or 0. */
static size_t ecdsa_der_to_raw(const unsigned char *der, size_t dlen, unsigned char *raw, size_t half) {
  const BIGNUM *r, *s;
  ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &der, (long)dlen);
  size_t out = 0;
  if (!sig) return 0;
  ECDSA_SIG_get0(sig, &r, &s);
  if (BN_bn2binpad(r, raw, (int)half) == (int)half && BN_bn2binpad(s, raw + half, (int)half) == (int)half)
    out = 2 * half;
  ECDSA_SIG_free(sig);
  return out;
}

/* The key's signing context, made on first use and kept: hash, then EVP_PKEY_sign, skips the
 * algorithm fetches EVP_DigestSignInit repeats on every call in OpenSSL 3. */
static EVP_PKEY_CTX *sign_ctx(ok_key *k) {
  EVP_PKEY_CTX *ctx;
  if (k->sign_ctx) return k->sign_ctx;
  ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
  if (!ctx || EVP_PKEY_sign_init(ctx) <= 0 ||
      (!ok_alg_is_ec(k->alg) && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0) ||
      EVP_PKEY_CTX_set_signature_md(ctx, ok_md_fetched(k->alg)) <= 0) {
    EVP_PKEY_CTX_free(ctx);
    return NULL;
  }
  return k->sign_ctx = ctx;
}

/* Signs input with key; sig gets the JOSE form. Returns its length or 0. Pure C. */
static size_t sign_raw(ok_key *k, const char *input, size_t ilen, unsigned char *sig) {
  unsigned char der[OK_SIG_MAX], digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  size_t slen = sizeof der;
  EVP_PKEY_CTX *ctx = sign_ctx(k);
  EVP_MD *md = ok_md_fetched(k->alg);
  if (!k->md_ctx) k->md_ctx = EVP_MD_CTX_new();
  if (!ctx || !md || !k->md_ctx || EVP_DigestInit_ex(k->md_ctx, md, NULL) != 1 ||
      EVP_DigestUpdate(k->md_ctx, input, ilen) != 1 || EVP_DigestFinal_ex(k->md_ctx, digest, &dlen) != 1 ||
      EVP_PKEY_sign(ctx, der, &slen, digest, dlen) != 1)
    return 0;
  if (ok_alg_is_ec(k->alg)) return ecdsa_der_to_raw(der, slen, sig, ok_alg_ec_size(k->alg));
  memcpy(sig, der, slen);
  return slen;
}

int ok_jws_sign(lua_State *L, ok_key *key, const char *header_b64, size_t hlen,
                const char *payload_json, size_t plen) {
  unsigned char sig[OK_SIG_MAX];
  size_t slen, ilen;
  const char *input;
  int iidx;
  luaL_Buffer b;
  if (!key->is_private) return ok_fail(L, "key", "cannot sign with a public key: load the private key"), 0;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, header_b64, hlen);
  luaL_addchar(&b, '.');
  ok_b64url_add(&b, (const unsigned char *)payload_json, plen);
  luaL_pushresult(&b);
  iidx = lua_gettop(L);
  input = lua_tolstring(L, iidx, &ilen);
  slen = sign_raw(key, input, ilen, sig);
  if (!slen) { lua_pop(L, 1); return ok_fail_ssl(L, "crypto", "signing failed"), 0; }
  luaL_buffinit(L, &b); /* absolute indexes below: 5.4's buffinit pushes a placeholder */
  lua_pushvalue(L, iidx);
  luaL_addvalue(&b);
  luaL_addchar(&b, '.');
  ok_b64url_add(&b, sig, slen);
  luaL_pushresult(&b);
  lua_remove(L, -2);
  return 1;
}

/* The key's verification context for its own alg, made on first use and kept (as sign_ctx):
 * hashing, then EVP_PKEY_verify, skips the fetches EVP_DigestVerifyInit repeats on every call. */
static EVP_PKEY_CTX *verify_ctx(ok_key *k) {
  EVP_PKEY_CTX *ctx;
  if (k->verify_ctx) return k->verify_ctx;
  ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
  if (!ctx || EVP_PKEY_verify_init(ctx) <= 0 ||
      (!ok_alg_is_ec(k->alg) && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0) ||
      EVP_PKEY_CTX_set_signature_md(ctx, ok_md_fetched(k->alg)) <= 0) {
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
  }
  return k->verify_ctx = ctx;
}

/* Verifies sig (DER for ECDSA) over input with the key's kept context; -1 when there is none. */
static int verify_kept(ok_key *k, const char *input, size_t ilen, const unsigned char *sig, size_t slen) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  EVP_PKEY_CTX *ctx = verify_ctx(k);
  if (!ctx || (!k->md_ctx && !(k->md_ctx = EVP_MD_CTX_new()))) return -1;
  if (EVP_DigestInit_ex(k->md_ctx, ok_md_fetched(k->alg), NULL) != 1 || EVP_DigestUpdate(k->md_ctx, input, ilen) != 1 ||
      EVP_DigestFinal_ex(k->md_ctx, digest, &dlen) != 1)
    return -1;
  return EVP_PKEY_verify(ctx, sig, slen, digest, dlen) == 1;
}

int ok_jws_verify_raw(ok_key *key, enum ok_alg alg, const char *input, size_t ilen,
                      const unsigned char *sig, size_t slen) {
  unsigned char der[OK_SIG_MAX], *p = der;
  const unsigned char *use = sig;
  size_t ulen = slen;
  int ok = 0;
  EVP_MD_CTX *ctx;
  if (ok_alg_is_ec(alg)) { /* JOSE R||S back to DER for OpenSSL */
    size_t half = ok_alg_ec_size(alg);
    ECDSA_SIG *es;
    BIGNUM *r, *s;
    int dlen;
    if (slen != 2 * half) return 0;
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, (int)half, NULL);
    s = BN_bin2bn(sig + half, (int)half, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
      BN_free(r); BN_free(s); ECDSA_SIG_free(es);
      ERR_clear_error();
      return 0;
    }
    dlen = i2d_ECDSA_SIG(es, &p);
    ECDSA_SIG_free(es);
    if (dlen <= 0) { ERR_clear_error(); return 0; }
    use = der;
    ulen = (size_t)dlen;
  } else if (slen != (size_t)EVP_PKEY_get_size(key->pkey)) {
    return 0;
  }
  if (alg == key->alg && (ok = verify_kept(key, input, ilen, use, ulen)) >= 0) {
    ERR_clear_error();
    return ok;
  }
  ok = 0;
  ctx = EVP_MD_CTX_new();
  if (ctx && EVP_DigestVerifyInit(ctx, NULL, ok_alg_md(alg), NULL, key->pkey) == 1)
    ok = EVP_DigestVerify(ctx, use, ulen, (const unsigned char *)input, ilen) == 1;
  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

/* Decodes one base64url JSON part and pushes the decoded object; 0 (with nil, err) if bad. */
static int decode_part(lua_State *L, const char *s, size_t n, const char *what) {
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, ok_b64url_room(n));
  long len = ok_b64url_decode(s, n, (unsigned char *)out);
  if (len < 0) { luaL_pushresultsize(&b, 0); lua_pop(L, 1); ok_fail(L, "json", "malformed JWT: %s is not base64url", what); return 0; }
  luaL_pushresultsize(&b, (size_t)len);
  if (!ok_json_decode(L, lua_tostring(L, -1), (size_t)len)) {
    lua_remove(L, -3);
    lua_pop(L, 2);
    ok_fail(L, "json", "malformed JWT: %s is not JSON", what);
    return 0;
  }
  lua_remove(L, -2);
  /* cjson decodes arrays to tables too; object keys are always strings, so a table with
   * elements 1..n came from a JSON array. */
  if (!lua_istable(L, -1) || lua_rawlen(L, -1) > 0) {
    lua_pop(L, 1);
    ok_fail(L, "json", "malformed JWT: %s is not a JSON object", what);
    return 0;
  }
  return 1;
}

int ok_jws_decode(lua_State *L, const char *jwt, size_t len) {
  const char *d1 = memchr(jwt, '.', len), *d2;
  if (!d1 || !(d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - jwt))) ||
      memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - jwt)))
    return ok_fail(L, "json", "malformed JWT: expected three dot-separated parts"), 0;
  if (!decode_part(L, jwt, (size_t)(d1 - jwt), "header")) return 0;
  if (!decode_part(L, d1 + 1, (size_t)(d2 - d1 - 1), "payload")) { lua_remove(L, -3); return 0; }
  return 1;
}

/*** oktadpop.decode_jwt(jwt) -> claims, header: no verification, for inspection.
 * @function decode_jwt
 */
int ok_jws_decode_jwt(lua_State *L) {
  size_t len;
  const char *jwt = luaL_checklstring(L, 1, &len);
  if (!ok_jws_decode(L, jwt, len)) return 2;
  lua_insert(L, -2);
  return 2;
}

/* Pushes the protected header's base64url for a header table at idx (after encoding). */
static int push_header_b64(lua_State *L, int idx) {
  size_t n;
  const char *json;
  if (!ok_json_encode(L, idx)) return 0;
  json = lua_tolstring(L, -1, &n);
  ok_b64url_push(L, (const unsigned char *)json, n);
  lua_remove(L, -2);
  return 1;
}

/*** oktadpop.sign_jwt(key, claims [, header]) -> jwt: alg and kid come from the key.
 * @function sign_jwt
 */
int ok_jws_sign_jwt(lua_State *L) {
  ok_key *k = ok_key_check(L, 1);
  size_t hlen, plen;
  const char *h, *p;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_newtable(L); /* header: typ JWT, the caller's members, then alg/kid from the key */
  lua_pushliteral(L, "JWT");
  lua_setfield(L, -2, "typ");
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) { lua_pushvalue(L, -2); lua_insert(L, -2); lua_settable(L, -4); }
    lua_getfield(L, 3, "alg");
    if (!lua_isnil(L, -1) && (!lua_isstring(L, -1) || strcmp(lua_tostring(L, -1), ok_alg_name(k->alg)) != 0))
      return ok_fail(L, "config", "header alg must match the key's alg %s", ok_alg_name(k->alg));
    lua_pop(L, 1);
  }
  lua_pushstring(L, ok_alg_name(k->alg));
  lua_setfield(L, -2, "alg");
  if (k->kid) {
    lua_getfield(L, -1, "kid");
    if (lua_isnil(L, -1)) { lua_pushstring(L, k->kid); lua_setfield(L, -3, "kid"); }
    lua_pop(L, 1);
  }
  if (!push_header_b64(L, -1)) return 2;
  if (!ok_json_encode(L, 2)) return 2;
  h = lua_tolstring(L, -2, &hlen);
  p = lua_tolstring(L, -1, &plen);
  return ok_jws_sign(L, k, h, hlen, p, plen) ? 1 : 2;
}

/* Reads a numeric claim: 1 when present and a finite number, 0 when absent, -1 otherwise (a
 * string, or 1e309, which JSON decodes to infinity and would never expire). */
static int claim_number(lua_State *L, int tidx, const char *name, double *out) {
  int t;
  lua_getfield(L, tidx, name);
  t = lua_type(L, -1);
  if (t == LUA_TNUMBER) *out = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (t == LUA_TNIL) return 0;
  return t == LUA_TNUMBER && isfinite(*out) ? 1 : -1;
}

/* The string at idx equals want, byte for byte: an embedded NUL does not end the comparison. */
static int same_string(lua_State *L, int idx, const char *want, size_t wlen) {
  size_t n;
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
  return s && n == wlen && memcmp(s, want, n) == 0;
}

int ok_jws_field_is(lua_State *L, int tidx, const char *name, const char *want, size_t wlen) {
  int ok;
  lua_getfield(L, tidx, name);
  ok = same_string(L, -1, want, wlen);
  lua_pop(L, 1);
  return ok;
}

/* True when claim `name` equals want, or (aud) is an array containing it. */
static int claim_matches(lua_State *L, int tidx, const char *name, const char *want, size_t wlen) {
  int ok = 0;
  lua_getfield(L, tidx, name);
  if (lua_type(L, -1) == LUA_TSTRING) ok = same_string(L, -1, want, wlen);
  else if (lua_istable(L, -1)) {
    int n = (int)lua_rawlen(L, -1);
    for (int i = 1; i <= n && !ok; i++) {
      lua_rawgeti(L, -1, i);
      ok = same_string(L, -1, want, wlen);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return ok;
}

int ok_jws_typ_is(lua_State *L, int hidx, const char *want) {
  size_t n, w = strlen(want);
  const char *typ;
  int ok;
  lua_getfield(L, hidx, "typ");
  typ = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  /* media types compare without case; "application/" may be left out (RFC 7515 section 4.1.9) */
  if (typ && n > 12 && strncasecmp(typ, "application/", 12) == 0) typ += 12, n -= 12;
  ok = typ && n == w && strncasecmp(typ, want, n) == 0;
  lua_pop(L, 1);
  return ok;
}

int ok_jws_fail(lua_State *L, const char *check, const char *code, const char *msg) {
  ok_fail(L, "verify", "%s", msg);
  ok_error_setstr(L, "check", check);
  ok_error_setstr(L, "code", code);
  return 2;
}

/* The protected header may not ask for what we do not implement: any crit (RFC 7515 section
 * 4.1.11: unknown critical extensions must be refused) and an unencoded payload (RFC 7797). */
static const char *header_refused(lua_State *L, int hidx) {
  const char *why = NULL;
  lua_getfield(L, hidx, "crit");
  if (!lua_isnil(L, -1)) why = "JWT header has crit: no critical extension is supported";
  lua_getfield(L, hidx, "b64");
  if (!why && !lua_isnil(L, -1) && !(lua_isboolean(L, -1) && lua_toboolean(L, -1)))
    why = "JWT header has b64: unencoded payloads are not supported";
  lua_pop(L, 2);
  return why;
}

/* Checks signature, exp and nbf of the decoded JWT (header at hidx, claims hidx + 1): 1, or
 * nil, err pushed and 0. */
static int check_signed(lua_State *L, const char *jwt, size_t len, ok_key *key, int hidx, const ok_verify *v) {
  unsigned char sig[OK_SIG_MAX + 4]; /* ok_b64url_room(ok_b64url_len(OK_SIG_MAX)) is 513 */
  const char *dot2 = strrchr(jwt, '.'), *why;
  size_t slen = len - (size_t)(dot2 + 1 - jwt);
  long siglen;
  double exp, nbf;
  int r, cidx = hidx + 1;
  if ((why = header_refused(L, hidx))) return ok_jws_fail(L, "header", v->code, why), 0;
  if (!ok_jws_field_is(L, hidx, "alg", ok_alg_name(key->alg), strlen(ok_alg_name(key->alg))))
    return ok_jws_fail(L, "alg", v->code, "JWT alg does not match the key's alg"), 0;
  if (slen > ok_b64url_len(OK_SIG_MAX) || (siglen = ok_b64url_decode(dot2 + 1, slen, sig)) <= 0 ||
      !ok_jws_verify_raw(key, key->alg, jwt, (size_t)(dot2 - jwt), sig, (size_t)siglen))
    return ok_jws_fail(L, "signature", v->code, "JWT signature is not valid for this key"), 0;
  if ((r = claim_number(L, cidx, "exp", &exp)) < 0 || (r && v->now > exp + v->leeway))
    return ok_jws_fail(L, "exp", v->code, r < 0 ? "JWT exp is not a finite number" : "JWT has expired"), 0;
  if ((r = claim_number(L, cidx, "nbf", &nbf)) < 0 || (r && v->now + v->leeway < nbf))
    return ok_jws_fail(L, "nbf", v->code, r < 0 ? "JWT nbf is not a finite number" : "JWT is not valid yet (nbf)"), 0;
  return 1;
}

/* Checks the optional issuer, audience, subject and typ the caller asked for: 1, or nil, err
 * pushed and 0. */
static int check_expected(lua_State *L, int hidx, const ok_verify *v) {
  const char *want[] = {v->issuer, v->audience, v->subject}, *claim[] = {"iss", "aud", "sub"};
  const size_t wlen[] = {v->issuer_len, v->audience_len, v->subject_len};
  for (int i = 0; i < 3; i++)
    if (want[i] && !claim_matches(L, hidx + 1, claim[i], want[i], wlen[i])) {
      lua_pushfstring(L, "JWT %s does not match", claim[i]);
      return ok_jws_fail(L, claim[i], v->code, lua_tostring(L, -1)), 0;
    }
  if (v->typ && !ok_jws_typ_is(L, hidx, v->typ)) return ok_jws_fail(L, "typ", v->code, "JWT typ does not match"), 0;
  return 1;
}

int ok_jws_verify_decoded(lua_State *L, const char *jwt, size_t len, ok_key *key, int hidx, const ok_verify *v) {
  return check_signed(L, jwt, len, key, hidx, v) && check_expected(L, hidx, v);
}

int ok_jws_verify_at(lua_State *L, int idx, ok_key *key, const ok_verify *v) {
  size_t len;
  const char *jwt = lua_tolstring(L, idx, &len);
  if (!ok_jws_decode(L, jwt, len)) return 0;
  return ok_jws_verify_decoded(L, jwt, len, key, lua_gettop(L) - 1, v);
}

int ok_jws_verify_options(lua_State *L, int optidx, ok_verify *v) {
  static const char *const names[] = {"now", "leeway", "issuer", "audience", "subject", "typ", NULL};
  memset(v, 0, sizeof *v);
  v->code = "invalid_token";
  v->now = (double)time(NULL);
  if (!optidx) return 1;
  return ok_opts_known(L, optidx, "verify_jwt", names) &&
         ok_opt_number(L, optidx, "now", v->now, 0, OK_MAX_TIME, &v->now) &&
         ok_opt_number(L, optidx, "leeway", 0, 0, 86400, &v->leeway) &&
         ok_opt_string(L, optidx, "issuer", &v->issuer, &v->issuer_len) &&
         ok_opt_string(L, optidx, "audience", &v->audience, &v->audience_len) &&
         ok_opt_string(L, optidx, "subject", &v->subject, &v->subject_len) &&
         ok_opt_string(L, optidx, "typ", &v->typ, NULL);
}

/* Loads the verification key for verify_jwt: any load_key source; a JWKS is searched by the
 * token's kid. Pushes the key and returns 1, or nil, err and 0. */
static int verify_key(lua_State *L, int jwtidx, int keyidx) {
  if (lua_type(L, keyidx) == LUA_TSTRING) { /* JWK or JWKS JSON text: decode it here */
    size_t n;
    const char *s = lua_tolstring(L, keyidx, &n);
    while (n && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) s++, n--;
    if (n && *s == '{') {
      if (!ok_json_decode(L, s, n) || !lua_istable(L, -1)) return ok_fail(L, "key", "corrupt JWK JSON"), 0;
      lua_replace(L, keyidx);
    }
  }
  if (lua_istable(L, keyidx)) {
    lua_getfield(L, keyidx, "keys");
    int jwks = lua_istable(L, -1);
    lua_pop(L, 1);
    if (jwks) {
      size_t len;
      const char *jwt = lua_tolstring(L, jwtidx, &len);
      if (!ok_jws_decode(L, jwt, len)) return 0;
      lua_pop(L, 1);
      lua_createtable(L, 0, 1);
      lua_getfield(L, -2, "kid");
      if (lua_type(L, -1) == LUA_TSTRING) lua_setfield(L, -2, "kid"); /* the token's: any JSON */
      else lua_pop(L, 1);
      lua_remove(L, -2);
      return ok_key_load(L, keyidx, -1);
    }
  }
  return ok_key_load(L, keyidx, 0);
}

/*** oktadpop.verify_jwt(jwt, key_or_jwk [, {now=, leeway=, issuer=, audience=, subject=, typ=}])
 * -> claims, header | nil, err
 * @function verify_jwt
 */
int ok_jws_verify_jwt(lua_State *L) {
  ok_verify v;
  ok_key *key;
  int optidx = lua_isnoneornil(L, 3) ? 0 : 3;
  luaL_checkstring(L, 1);
  luaL_checkany(L, 2);
  if (optidx) luaL_checktype(L, 3, LUA_TTABLE);
  if (!ok_jws_verify_options(L, optidx, &v)) return 2;
  if (!verify_key(L, 1, 2)) return 2;
  key = ok_key_check(L, -1);
  if (!ok_jws_verify_at(L, 1, key, &v)) return 2;
  lua_insert(L, -2); /* claims, header */
  return 2;
}
