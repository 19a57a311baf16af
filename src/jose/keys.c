/* keys.c: the key object. Owns EVP_PKEY loading (PEM, JWK, JWKS, files), generation,
 * validation (RSA 2048-4096, EC P-256/P-384/P-521), public JWK export, RFC 7638 thumbprints
 * and PEM export. A key is parsed once; nothing here runs on the signing path. */
/*** @module oktadpop */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include "jose/jose.h"

#define OK_KEY_FILE_MAX (1024 * 1024) /* far above any key or JWKS; bounds what we read */

static const struct {
  const char *name, *md, *group; /* group: OpenSSL curve name for ES */
  size_t ec_size;
} alg_table[OK_ALG_COUNT] = {
  {"RS256", "SHA256", NULL, 0},          {"RS384", "SHA384", NULL, 0},
  {"RS512", "SHA512", NULL, 0},          {"ES256", "SHA256", "prime256v1", 32},
  {"ES384", "SHA384", "secp384r1", 48},  {"ES512", "SHA512", "secp521r1", 66},
};
static const char *const jwk_curves[] = {"P-256", "P-384", "P-521"};

const char *ok_alg_name(enum ok_alg alg) { return alg_table[alg].name; }
int ok_alg_is_ec(enum ok_alg alg) { return alg_table[alg].group != NULL; }
size_t ok_alg_ec_size(enum ok_alg alg) { return alg_table[alg].ec_size; }

const EVP_MD *ok_alg_md(enum ok_alg alg) {
  switch (alg) {
    case OK_RS256: case OK_ES256: return EVP_sha256();
    case OK_RS384: case OK_ES384: return EVP_sha384();
    default: return EVP_sha512();
  }
}

/* The fetched digests live while some Lua state has the module open and go with the last one:
 * lua_close unloads the module, and a pointer left in its statics would leak them on every
 * load (LSan and valgrind: definitely lost). md_users counts the registry sentinels made by
 * ok_keys_open; the lock orders fetching against freeing across threads. */
static EVP_MD *md_cache[3];
static int md_users;
static pthread_mutex_t md_lock = PTHREAD_MUTEX_INITIALIZER;

EVP_MD *ok_md_fetched(enum ok_alg alg) {
  int i = alg == OK_RS256 || alg == OK_ES256 ? 0 : alg == OK_RS384 || alg == OK_ES384 ? 1 : 2;
  EVP_MD *md = __atomic_load_n(&md_cache[i], __ATOMIC_ACQUIRE);
  if (!md) {
    pthread_mutex_lock(&md_lock);
    if (!(md = md_cache[i])) {
      md = EVP_MD_fetch(NULL, i == 0 ? "SHA2-256" : i == 1 ? "SHA2-384" : "SHA2-512", NULL);
      __atomic_store_n(&md_cache[i], md, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&md_lock);
  }
  return md;
}

static int md_cache_release(lua_State *L) {
  (void)L;
  pthread_mutex_lock(&md_lock);
  if (md_users > 0 && --md_users == 0)
    for (int i = 0; i < 3; i++) {
      EVP_MD_free(md_cache[i]); /* refcounted: a context still holding one keeps it */
      __atomic_store_n(&md_cache[i], NULL, __ATOMIC_RELEASE);
    }
  pthread_mutex_unlock(&md_lock);
  return 0;
}

int ok_sha256(const void *data, size_t n, unsigned char out[32]) {
  EVP_MD *md = ok_md_fetched(OK_RS256);
  return md && EVP_Digest(data, n, out, NULL, md, NULL) == 1;
}

int ok_alg_from_name(const char *name) {
  for (int i = 0; i < OK_ALG_COUNT; i++)
    if (strcmp(name, alg_table[i].name) == 0) return i;
  return -1;
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

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

/* ---- validation and derived data ---- */

static int pkey_has_private(EVP_PKEY *pkey) {
  BIGNUM *bn = NULL;
  int ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &bn) ||
           EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn);
  BN_clear_free(bn);
  ERR_clear_error();
  return ok;
}

/* Index of the key's curve in alg_table (ES256..ES512), or -1. */
static int pkey_ec_alg(EVP_PKEY *pkey, char *group, size_t gsz) {
  size_t glen = 0;
  if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, gsz, &glen)) {
    snprintf(group, gsz, "unknown");
    return -1;
  }
  for (int i = OK_ES256; i <= OK_ES512; i++)
    if (strcmp(group, alg_table[i].group) == 0) return i;
  return -1;
}

/* An RSA e of 1 makes every "signature" verify without any private key: odd and >= 3 only. */
static int rsa_exponent_ok(EVP_PKEY *pkey) {
  BIGNUM *e = NULL;
  int ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) && BN_is_odd(e) && BN_num_bits(e) >= 2;
  BN_free(e);
  ERR_clear_error();
  return ok;
}

/* Appends the base64url of a BIGNUM param, left-padded to pad bytes (0: minimal). */
static int add_bn_b64(luaL_Buffer *b, EVP_PKEY *pkey, const char *param, size_t pad) {
  BIGNUM *bn = NULL;
  unsigned char buf[600];
  int n;
  if (!EVP_PKEY_get_bn_param(pkey, param, &bn)) return 0;
  if ((size_t)BN_num_bytes(bn) > sizeof buf || pad > sizeof buf) { BN_free(bn); return 0; }
  n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
  BN_free(bn);
  if (n <= 0) return 0;
  ok_b64url_add(b, buf, (size_t)n);
  return 1;
}

/* Checks type, size and curve; settles alg (requested or default); builds the canonical JWK
 * and thumbprint. Returns NULL or an error message (static or on the Lua stack). */
static const char *key_finish(lua_State *L, ok_key *k, const char *want_alg, const char *kid) {
  static char msg[160];
  EVP_PKEY *pkey = k->pkey;
  int base = EVP_PKEY_get_base_id(pkey), alg;
  luaL_Buffer b;
  unsigned char md[32];
  char group[64];

  if (base == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < 2048) {
      snprintf(msg, sizeof msg, "RSA key of %d bits is too weak: at least 2048 bits required", bits);
      return msg;
    }
    if (bits > 4096) {
      snprintf(msg, sizeof msg, "RSA key of %d bits is not supported: at most 4096 bits", bits);
      return msg;
    }
    if (!rsa_exponent_ok(pkey)) return "RSA public exponent must be odd and at least 3 (e=1 signs nothing)";
    alg = OK_RS256;
  } else if (base == EVP_PKEY_EC) {
    alg = pkey_ec_alg(pkey, group, sizeof group);
    if (alg < 0) {
      snprintf(msg, sizeof msg, "unsupported EC curve %s: use P-256, P-384 or P-521", group);
      return msg;
    }
  } else {
    return "unsupported key type: use RSA or EC (P-256, P-384, P-521)";
  }
  if (want_alg) {
    int w = ok_alg_from_name(want_alg);
    if (w < 0) {
      snprintf(msg, sizeof msg, "unsupported alg '%.20s': use RS256/384/512 or ES256/384/512", want_alg);
      return msg;
    }
    if (base == EVP_PKEY_RSA ? ok_alg_is_ec(w) : w != alg) {
      snprintf(msg, sizeof msg, "alg %s does not fit this %s key", alg_table[w].name,
               base == EVP_PKEY_RSA ? "RSA" : jwk_curves[alg - OK_ES256]);
      return msg;
    }
    alg = w;
  }
  k->alg = alg;
  k->is_private = pkey_has_private(pkey);
  if (kid && !(k->kid = dup_str(kid))) return "out of memory";

  /* RFC 7638: required members only, lexicographic order, no whitespace. All values are
   * base64url or fixed names, so no escaping is needed. */
  luaL_buffinit(L, &b);
  if (base == EVP_PKEY_RSA) {
    luaL_addstring(&b, "{\"e\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_RSA_E, 0)) return "cannot read RSA public key";
    luaL_addstring(&b, "\",\"kty\":\"RSA\",\"n\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_RSA_N, 0)) return "cannot read RSA public key";
  } else {
    size_t sz = alg_table[alg].ec_size;
    luaL_addstring(&b, "{\"crv\":\"");
    luaL_addstring(&b, jwk_curves[alg - OK_ES256]);
    luaL_addstring(&b, "\",\"kty\":\"EC\",\"x\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_EC_PUB_X, sz)) return "cannot read EC public key";
    luaL_addstring(&b, "\",\"y\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_EC_PUB_Y, sz)) return "cannot read EC public key";
  }
  luaL_addstring(&b, "\"}");
  luaL_pushresult(&b);
  {
    size_t n;
    const char *canon = lua_tolstring(L, -1, &n);
    char tp[44];
    if (!(k->jwk_canon = dup_str(canon))) return "out of memory";
    if (!EVP_Digest(canon, n, md, NULL, EVP_sha256(), NULL)) return "SHA-256 failed";
    tp[ok_b64url_encode(md, sizeof md, tp)] = '\0';
    if (!(k->thumbprint = dup_str(tp))) return "out of memory";
  }
  lua_pop(L, 1);
  ERR_clear_error();
  return NULL;
}

/* ---- PEM ---- */

static const char *pem_decode(EVP_PKEY **out, const char *pem, size_t n, const char *pass) {
  OSSL_DECODER_CTX *dctx;
  const unsigned char *p = (const unsigned char *)pem;
  size_t left = n;
  /* The armour line or the legacy header says so; "ENCRYPTED" can also be base64 text. */
  int encrypted = memmem(pem, n, "-----BEGIN ENCRYPTED ", 21) || memmem(pem, n, "Proc-Type: 4,ENCRYPTED", 22);

  if (encrypted && !pass) return "the private key is encrypted: pass opts.passphrase";
  dctx = OSSL_DECODER_CTX_new_for_pkey(out, "PEM", NULL, NULL, 0, NULL, NULL);
  if (!dctx) return "out of memory";
  if (pass) OSSL_DECODER_CTX_set_passphrase(dctx, (const unsigned char *)pass, strlen(pass));
  int ok = OSSL_DECODER_from_data(dctx, &p, &left);
  OSSL_DECODER_CTX_free(dctx);
  ERR_clear_error();
  if (ok && *out) return NULL;
  if (encrypted) return "cannot decrypt the private key: wrong passphrase or corrupt PEM";
  return "corrupt PEM: no RSA or EC key could be decoded";
}

/* OpenSSL loads a PEM private key without checking its parts agree (a JWK gets a pairwise
 * check). One signature over a fixed text, verified with the key's own public half, refuses
 * a corrupt private part at load time, for a fraction of the pairwise check's cost. */
static int pem_sign_check(const ok_key *k) {
  static const unsigned char msg[] = "oktadpop key check";
  unsigned char sig[1024];
  size_t slen = sizeof sig;
  int ok = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx && EVP_DigestSignInit(ctx, NULL, ok_alg_md(k->alg), NULL, k->pkey) == 1 &&
      EVP_DigestSign(ctx, sig, &slen, msg, sizeof msg - 1) == 1 && EVP_MD_CTX_reset(ctx) == 1)
    ok = EVP_DigestVerifyInit(ctx, NULL, ok_alg_md(k->alg), NULL, k->pkey) == 1 &&
         EVP_DigestVerify(ctx, sig, slen, msg, sizeof msg - 1) == 1;
  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

/* ---- JWK ---- */

typedef struct { const char *s; size_t n; } field;

/* Decodes a base64url member into a fresh BIGNUM; NULL when absent or invalid. */
static BIGNUM *field_bn(const field *f, int *bad) {
  unsigned char buf[1100];
  long n;
  BIGNUM *bn;
  if (!f->s) return NULL;
  if (ok_b64url_room(f->n) > sizeof buf || (n = ok_b64url_decode(f->s, f->n, buf)) <= 0) { *bad = 1; return NULL; }
  bn = BN_bin2bn(buf, (int)n, NULL);
  OPENSSL_cleanse(buf, sizeof buf);
  if (!bn) *bad = 1;
  return bn;
}

enum { F_KTY, F_N, F_E, F_D, F_P, F_Q, F_DP, F_DQ, F_QI, F_CRV, F_X, F_Y, F_ALG, F_KID, F_USE, F_COUNT };
static const char *const jwk_names[F_COUNT] = {"kty", "n", "e", "d", "p", "q", "dp", "dq", "qi",
                                               "crv", "x", "y", "alg", "kid", "use"};

/* Builds an EVP_PKEY from JWK members with no Lua calls, so nothing can unwind past the
 * cleanup. Returns NULL or an error message. */
static const char *jwk_build(EVP_PKEY **out, const field *f) {
  static const char *const rsa_params[] = {
      OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
      OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
      OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
  const char *err = NULL;
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  BIGNUM *bns[8] = {0};
  unsigned char point[1 + 2 * 66];
  int bad = 0, is_rsa, private = f[F_D].s != NULL;

  if (!bld) return "out of memory";
  is_rsa = f[F_KTY].n == 3 && memcmp(f[F_KTY].s, "RSA", 3) == 0;
  if (is_rsa) {
    if (!f[F_N].s || !f[F_E].s) { err = "RSA JWK needs n and e"; goto done; }
    /* n of at most 4096 bits, e of at most 64: checked before any parsing of outside bytes */
    if (f[F_N].n > ok_b64url_len(512) || f[F_E].n > ok_b64url_len(8)) { err = "RSA JWK n or e is too long"; goto done; }
    for (int i = 0; i < 8; i++) {
      bns[i] = field_bn(&f[F_N + i], &bad);
      if (bns[i]) OSSL_PARAM_BLD_push_BN(bld, rsa_params[i], bns[i]);
    }
    if (private && !(bns[3] && bns[4] && bns[5] && bns[6] && bns[7]) &&
        (f[F_P].s || f[F_Q].s || f[F_DP].s || f[F_DQ].s || f[F_QI].s)) {
      err = "RSA JWK has only some of p, q, dp, dq, qi"; goto done;
    }
  } else {
    int c = -1;
    size_t sz;
    long xn, yn;
    for (int i = 0; i < 3; i++)
      if (f[F_CRV].s && strlen(jwk_curves[i]) == f[F_CRV].n && memcmp(f[F_CRV].s, jwk_curves[i], f[F_CRV].n) == 0) c = i;
    if (c < 0) { err = "unsupported EC JWK crv: use P-256, P-384 or P-521"; goto done; }
    if (!f[F_X].s || !f[F_Y].s) { err = "EC JWK needs x and y"; goto done; }
    sz = alg_table[OK_ES256 + c].ec_size;
    point[0] = 4; /* uncompressed point: 04 || x || y */
    if (f[F_X].n != ok_b64url_len(sz) || f[F_Y].n != ok_b64url_len(sz) ||
        (xn = ok_b64url_decode(f[F_X].s, f[F_X].n, point + 1)) != (long)sz ||
        (yn = ok_b64url_decode(f[F_Y].s, f[F_Y].n, point + 1 + sz)) != (long)sz) {
      err = "EC JWK x or y has the wrong length for its curve"; goto done;
    }
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, alg_table[OK_ES256 + c].group, 0);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * sz);
    if (private && (bns[0] = field_bn(&f[F_D], &bad)))
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bns[0]);
  }
  if (bad) { err = "JWK member is not valid base64url"; goto done; }
  if (!(params = OSSL_PARAM_BLD_to_param(bld)) ||
      !(ctx = EVP_PKEY_CTX_new_from_name(NULL, is_rsa ? "RSA" : "EC", NULL)) ||
      EVP_PKEY_fromdata_init(ctx) <= 0 ||
      EVP_PKEY_fromdata(ctx, out, private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) <= 0) {
    err = is_rsa ? "RSA JWK does not describe a valid key"
                 : "EC JWK does not describe a valid key: the point is not on the curve";
    goto done;
  }
  EVP_PKEY_CTX_free(ctx);
  /* A point off the curve or a private part that does not match the public one is refused. */
  ctx = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL);
  if (!ctx || (!is_rsa && EVP_PKEY_public_check(ctx) <= 0) ||
      (private && EVP_PKEY_pairwise_check(ctx) <= 0)) {
    err = "JWK key check failed: the point is not on the curve or the private part does not match";
    EVP_PKEY_free(*out);
    *out = NULL;
  }
done:
  for (int i = 0; i < 8; i++) BN_clear_free(bns[i]);
  OSSL_PARAM_free(params); /* OSSL_PARAM_clear_free is 3.0.?: these only point at freed copies */
  OSSL_PARAM_BLD_free(bld);
  EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  return err;
}

/* Table at idx is a JWK (or a JWKS: one key, or the one whose kid matches want_kid); fills
 * *out, *alg and *kid (valid until the caller resets the stack, which it must do). Returns
 * NULL or an error message. */
static const char *jwk_load(lua_State *L, int idx, EVP_PKEY **out, const char *want_kid,
                            const char **alg, const char **kid) {
  static char msg[128];
  field f[F_COUNT];
  idx = lua_absindex(L, idx);
  lua_getfield(L, idx, "keys");
  if (lua_istable(L, -1)) { /* a JWKS */
    int n = (int)lua_rawlen(L, -1), pick = 0;
    for (int i = 1; i <= n && want_kid; i++) {
      lua_rawgeti(L, -1, i);
      if (!lua_istable(L, -1)) { lua_pop(L, 1); continue; } /* indexing a number would raise */
      lua_getfield(L, -1, "kid");
      if (lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), want_kid) == 0) pick = i;
      lua_pop(L, 2);
    }
    if (!want_kid && n == 1) pick = 1;
    if (!pick) {
      snprintf(msg, sizeof msg, want_kid ? "no key with that kid in the JWKS" :
               "the JWKS holds %d keys: pass opts.kid to choose one", n);
      return msg;
    }
    lua_rawgeti(L, -1, pick);
    lua_replace(L, idx);
  }
  lua_pop(L, 1);
  if (!lua_istable(L, idx)) return "JWKS entry is not an object";
  luaL_checkstack(L, F_COUNT, "JWK");
  for (int i = 0; i < F_COUNT; i++) { /* values stay on the stack while f points into them */
    lua_getfield(L, idx, jwk_names[i]);
    f[i].s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &f[i].n) : NULL;
    if (!f[i].s && !lua_isnil(L, -1)) {
      snprintf(msg, sizeof msg, "JWK member '%s' must be a string", jwk_names[i]);
      return msg;
    }
  }
  if (!f[F_KTY].s) return "JWK has no kty";
  if (strcmp(f[F_KTY].s, "oct") == 0) return "symmetric (oct) JWKs are not supported: use an RSA or EC key";
  if (strcmp(f[F_KTY].s, "RSA") != 0 && strcmp(f[F_KTY].s, "EC") != 0) return "unsupported JWK kty: use RSA or EC";
  if (f[F_USE].s && strcmp(f[F_USE].s, "sig") != 0) return "JWK use is not \"sig\"";
  *alg = f[F_ALG].s;
  *kid = f[F_KID].s;
  return jwk_build(out, f);
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
  if ((err = key_finish(L, k, o->alg ? o->alg : ok_alg_name(src->alg), o->kid ? o->kid : src->kid)))
    return ok_fail(L, "key", "%s", err);
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
  else if (kind[0] == 'p') { err = pem_decode(&k->pkey, text, tlen, o->pass); *from_pem = 1; }
  else if (!ok_json_decode(L, text, tlen)) err = "corrupt JWK JSON";
  else if (!lua_istable(L, -1)) err = "JWK JSON is not an object";
  else err = jwk_load(L, -1, &k->pkey, o->kid, jalg, jkid);
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
      return 2;
  }
  if (luaL_testudata(L, idx, OK_KEY_MT)) return load_twin(L, idx, &o);
  if (!lua_istable(L, idx) && lua_type(L, idx) != LUA_TSTRING)
    return luaL_argerror(L, idx, "expected a key, a JWK table, a PEM or JWK string, or a file path");
  k = key_new(L);
  kidx = lua_gettop(L);
  if (lua_istable(L, idx)) {
    lua_pushvalue(L, idx);
    err = jwk_load(L, -1, &k->pkey, o.kid, &jalg, &jkid);
  } else {
    err = load_text(L, idx, k, &o, &jalg, &jkid, &from_pem);
  }
  if (!err) err = key_finish(L, k, o.alg ? o.alg : jalg, o.kid ? o.kid : jkid);
  if (!err && from_pem && k->is_private && !pem_sign_check(k))
    err = "the private key's parts do not agree (its signatures fail with its own public key): corrupt key";
  if (err) return ok_fail(L, "key", "%s", err);
  lua_pushvalue(L, kidx);
  return 1;
}

/*** oktadpop.load_key(source [, {passphrase=, kid=, alg=}])
 * @function load_key
 */
int ok_key_loadkey(lua_State *L) {
  luaL_checkany(L, 1);
  return ok_key_load(L, 1, 2);
}

int ok_key_new_generated(lua_State *L, enum ok_alg alg, int bits, const char *kid) {
  const char *err;
  ok_key *k = key_new(L);
  k->pkey = ok_alg_is_ec(alg) ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", jwk_curves[alg - OK_ES256])
                              : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
  if (!k->pkey) return ok_fail_ssl(L, "crypto", "key generation failed");
  if ((err = key_finish(L, k, ok_alg_name(alg), kid))) return ok_fail(L, "key", "%s", err);
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
  return ok_key_new_generated(L, alg, (int)bits, kid);
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
                  ok_alg_is_ec(k->alg) ? jwk_curves[k->alg - OK_ES256] : "RSA",
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
  if (luaL_newmetatable(L, OK_KEY_MT)) {
    lua_pushcfunction(L, key_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, key_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "oktadpop.key");
    lua_setfield(L, -2, "__name");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, key_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  /* one user of the digest cache per luaopen; a second luaopen in this state replaces the
   * sentinel, whose collection gives its count back */
  pthread_mutex_lock(&md_lock);
  md_users++;
  pthread_mutex_unlock(&md_lock);
  lua_newuserdata(L, 1);
  if (luaL_newmetatable(L, "oktadpop.mdcache.mt")) { /* not the sentinel's own registry key */
    lua_pushcfunction(L, md_cache_release);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "oktadpop.mdcache");
}
