/* keyimport.c: outside bytes into a checked key: PEM (decoded with OpenSSL's decoders,
 * the private part checked by one signature) and JWK members (built from parameters, with
 * OpenSSL's public and pairwise checks), then the checks every key passes (RSA 2048-4096
 * with an odd e >= 3, EC P-256/P-384/P-521, alg fitting the key) and its canonical JWK and
 * RFC 7638 thumbprint. keys.c owns the key object and its sources. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include "jose/jose.h"

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
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

/* The key's curve as an alg (ES256..ES512), or -1. */
static int pkey_ec_alg(EVP_PKEY *pkey, char *group, size_t gsz) {
  size_t glen = 0;
  if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, gsz, &glen)) {
    snprintf(group, gsz, "unknown");
    return -1;
  }
  for (int i = OK_ES256; i <= OK_ES512; i++)
    if (strcmp(group, ok_alg_group(i)) == 0) return i;
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

/* The alg a key's type and size allow (RS256 for RSA, the curve's for EC), or -1 with *why. */
static int key_alg(EVP_PKEY *pkey, const char **why) {
  static char msg[160];
  int base = EVP_PKEY_get_base_id(pkey), alg;
  char group[64];
  *why = msg;
  if (base == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < 2048) return snprintf(msg, sizeof msg, "RSA key of %d bits is too weak: at least 2048 bits required", bits), -1;
    if (bits > 4096) return snprintf(msg, sizeof msg, "RSA key of %d bits is not supported: at most 4096 bits", bits), -1;
    if (!rsa_exponent_ok(pkey)) return *why = "RSA public exponent must be odd and at least 3 (e=1 signs nothing)", -1;
    return OK_RS256;
  }
  if (base != EVP_PKEY_EC) return *why = "unsupported key type: use RSA or EC (P-256, P-384, P-521)", -1;
  if ((alg = pkey_ec_alg(pkey, group, sizeof group)) < 0)
    snprintf(msg, sizeof msg, "unsupported EC curve %s: use P-256, P-384 or P-521", group);
  return alg;
}

/* The alg asked for, when it fits the key whose own alg is alg; -1 with *why otherwise. */
static int wanted_alg(int alg, const char *want_alg, const char **why) {
  static char msg[160];
  int w = ok_alg_from_name(want_alg);
  *why = msg;
  if (w < 0) return snprintf(msg, sizeof msg, "unsupported alg '%.20s': use RS256/384/512 or ES256/384/512", want_alg), -1;
  if (ok_alg_is_ec(alg) ? w != alg : ok_alg_is_ec(w)) {
    snprintf(msg, sizeof msg, "alg %s does not fit this %s key", ok_alg_name(w),
             ok_alg_is_ec(alg) ? ok_alg_curve(alg) : "RSA");
    return -1;
  }
  return w;
}

/* Pushes the RFC 7638 canonical JWK: required members only, lexicographic order, no
 * whitespace (every value is base64url or a fixed name: nothing to escape); NULL or why not. */
static const char *push_canonical(lua_State *L, EVP_PKEY *pkey, int alg) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (!ok_alg_is_ec(alg)) {
    luaL_addstring(&b, "{\"e\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_RSA_E, 0)) return "cannot read RSA public key";
    luaL_addstring(&b, "\",\"kty\":\"RSA\",\"n\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_RSA_N, 0)) return "cannot read RSA public key";
  } else {
    size_t sz = ok_alg_ec_size(alg);
    luaL_addstring(&b, "{\"crv\":\"");
    luaL_addstring(&b, ok_alg_curve(alg));
    luaL_addstring(&b, "\",\"kty\":\"EC\",\"x\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_EC_PUB_X, sz)) return "cannot read EC public key";
    luaL_addstring(&b, "\",\"y\":\"");
    if (!add_bn_b64(&b, pkey, OSSL_PKEY_PARAM_EC_PUB_Y, sz)) return "cannot read EC public key";
  }
  luaL_addstring(&b, "\"}");
  luaL_pushresult(&b);
  return NULL;
}

const char *ok_key_finish(lua_State *L, ok_key *k, const char *want_alg, const char *kid) {
  const char *why;
  unsigned char md[32];
  char tp[44];
  size_t n;
  int alg = key_alg(k->pkey, &why);
  if (alg < 0 || (want_alg && (alg = wanted_alg(alg, want_alg, &why)) < 0)) return why;
  k->alg = alg;
  k->is_private = pkey_has_private(k->pkey);
  if (kid && !(k->kid = dup_str(kid))) return "out of memory";
  if ((why = push_canonical(L, k->pkey, alg))) return why;
  if (!(k->jwk_canon = dup_str(lua_tolstring(L, -1, &n)))) return "out of memory";
  if (!EVP_Digest(k->jwk_canon, n, md, NULL, EVP_sha256(), NULL)) return "SHA-256 failed";
  tp[ok_b64url_encode(md, sizeof md, tp)] = '\0';
  if (!(k->thumbprint = dup_str(tp))) return "out of memory";
  lua_pop(L, 1);
  ERR_clear_error();
  return NULL;
}

/* ---- PEM ---- */

const char *ok_pem_decode(EVP_PKEY **out, const char *pem, size_t n, const char *pass) {
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
int ok_pem_sign_check(const ok_key *k) {
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

int ok_jwk_members_ok(lua_State *L, int jidx) {
  int ok = 1;
  for (int i = 0; ok && i < F_COUNT; i++) {
    lua_getfield(L, jidx, jwk_names[i]);
    ok = lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING;
    if (ok && i == F_USE && !lua_isnil(L, -1)) ok = strcmp(lua_tostring(L, -1), "sig") == 0;
    lua_pop(L, 1);
  }
  return ok;
}

/* Pushes an RSA JWK's members onto bld, their BIGNUMs into bns[8] (the caller frees them);
 * NULL or why not. */
static const char *rsa_params(OSSL_PARAM_BLD *bld, const field *f, BIGNUM *bns[8], int *bad) {
  static const char *const names[] = {
      OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
      OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
      OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
  if (!f[F_N].s || !f[F_E].s) return "RSA JWK needs n and e";
  /* n of at most 4096 bits, e of at most 64: checked before any parsing of outside bytes */
  if (f[F_N].n > ok_b64url_len(512) || f[F_E].n > ok_b64url_len(8)) return "RSA JWK n or e is too long";
  for (int i = 0; i < 8; i++) {
    bns[i] = field_bn(&f[F_N + i], bad);
    if (bns[i]) OSSL_PARAM_BLD_push_BN(bld, names[i], bns[i]);
  }
  if (f[F_D].s && !(bns[3] && bns[4] && bns[5] && bns[6] && bns[7]) &&
      (f[F_P].s || f[F_Q].s || f[F_DP].s || f[F_DQ].s || f[F_QI].s))
    return "RSA JWK has only some of p, q, dp, dq, qi";
  return NULL;
}

/* Pushes an EC JWK's curve, point (decoded into point, which bld points at until it is turned
 * into parameters: the caller's) and d (into *d) onto bld; NULL or why not. */
static const char *ec_params(OSSL_PARAM_BLD *bld, const field *f, unsigned char point[1 + 2 * 66], BIGNUM **d,
                             int *bad) {
  int c = -1;
  size_t sz;
  for (int i = 0; i < 3; i++)
    if (f[F_CRV].s && strlen(ok_alg_curve(OK_ES256 + i)) == f[F_CRV].n &&
        memcmp(f[F_CRV].s, ok_alg_curve(OK_ES256 + i), f[F_CRV].n) == 0)
      c = i;
  if (c < 0) return "unsupported EC JWK crv: use P-256, P-384 or P-521";
  if (!f[F_X].s || !f[F_Y].s) return "EC JWK needs x and y";
  sz = ok_alg_ec_size(OK_ES256 + c);
  point[0] = 4; /* uncompressed point: 04 || x || y */
  if (f[F_X].n != ok_b64url_len(sz) || f[F_Y].n != ok_b64url_len(sz) ||
      ok_b64url_decode(f[F_X].s, f[F_X].n, point + 1) != (long)sz ||
      ok_b64url_decode(f[F_Y].s, f[F_Y].n, point + 1 + sz) != (long)sz)
    return "EC JWK x or y has the wrong length for its curve";
  OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, ok_alg_group(OK_ES256 + c), 0);
  OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * sz);
  if (f[F_D].s && (*d = field_bn(&f[F_D], bad))) OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, *d);
  return NULL;
}

/* Makes *out from the parameters and checks it: a point off the curve, or a private part
 * that does not match the public one, is refused. NULL or why not. */
static const char *from_params(EVP_PKEY **out, OSSL_PARAM *params, int is_rsa, int private) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, is_rsa ? "RSA" : "EC", NULL);
  const char *err = NULL;
  if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
      EVP_PKEY_fromdata(ctx, out, private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) <= 0) {
    EVP_PKEY_CTX_free(ctx);
    return is_rsa ? "RSA JWK does not describe a valid key" : "EC JWK does not describe a valid key: the point is not on the curve";
  }
  EVP_PKEY_CTX_free(ctx);
  ctx = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL);
  if (!ctx || (!is_rsa && EVP_PKEY_public_check(ctx) <= 0) || (private && EVP_PKEY_pairwise_check(ctx) <= 0)) {
    err = "JWK key check failed: the point is not on the curve or the private part does not match";
    EVP_PKEY_free(*out);
    *out = NULL;
  }
  EVP_PKEY_CTX_free(ctx);
  return err;
}

/* Builds an EVP_PKEY from JWK members with no Lua calls, so nothing can unwind past the
 * cleanup. Returns NULL or an error message. */
static const char *jwk_build(EVP_PKEY **out, const field *f) {
  const char *err;
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  BIGNUM *bns[8] = {0};
  unsigned char point[1 + 2 * 66];
  int bad = 0, is_rsa = f[F_KTY].n == 3 && memcmp(f[F_KTY].s, "RSA", 3) == 0;
  if (!bld) return "out of memory";
  err = is_rsa ? rsa_params(bld, f, bns, &bad) : ec_params(bld, f, point, &bns[0], &bad);
  if (!err && bad) err = "JWK member is not valid base64url";
  if (!err && !(params = OSSL_PARAM_BLD_to_param(bld))) err = "out of memory";
  if (!err) err = from_params(out, params, is_rsa, f[F_D].s != NULL);
  for (int i = 0; i < 8; i++) BN_clear_free(bns[i]);
  OSSL_PARAM_free(params); /* OSSL_PARAM_clear_free is 3.0.?: these only point at freed copies */
  OSSL_PARAM_BLD_free(bld);
  ERR_clear_error();
  return err;
}

/* Table at idx is a JWK (or a JWKS: one key, or the one whose kid matches want_kid); fills
 * *out, *alg and *kid (valid until the caller resets the stack, which it must do). Returns
 * NULL or an error message. */
const char *ok_jwk_load(lua_State *L, int idx, EVP_PKEY **out, const char *want_kid, const char **alg,
                        const char **kid) {
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

