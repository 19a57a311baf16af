/* dpop.c: DPoP proofs (RFC 9449 section 4.2), their verification (section 4.3), ath, the
 * htu normalisation Okta applies, and private_key_jwt client assertions (RFC 7523). */
/*** @module oktadpop */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include "jose/jose.h"

#define OK_DEFAULT_MAX_AGE 60
#define OK_DEFAULT_LEEWAY 10

/* Pushes the normalised htu of url (as Okta wants it when for_okta): 1, or nil, err and 0. */
static int push_htu(lua_State *L, const char *url, size_t n, int for_okta) {
  const char *why = NULL;
  char *norm = for_okta ? ok_htu_okta(url, n, &why) : ok_htu_normalize(url, n, &why);
  if (!norm) return ok_fail(L, "config", "invalid htu: %s", why), 0;
  lua_pushstring(L, norm); /* may throw on OOM: the only allocation is freed right after */
  free(norm);
  return 1;
}

/*** oktadpop.htu(url) -> the URL as a DPoP htu (scheme, host, path; decoded where safe).
 * @function htu
 */
int ok_htu(lua_State *L) {
  size_t n;
  const char *url = luaL_checklstring(L, 1, &n);
  return push_htu(L, url, n, 0) ? 1 : 2;
}

void ok_ath_of(const char *token, size_t n, char out[44]) {
  unsigned char md[32];
  ok_sha256(token, n, md);
  out[ok_b64url_encode(md, sizeof md, out)] = '\0';
}

/*** oktadpop.escape(s) -> s percent-encoded but for RFC 3986 unreserved characters: an id or
 * login as one path segment ("a@b/c" -> "a%40b%2Fc").
 * @function escape
 */
int ok_escape(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, 3 * n + 1);
  luaL_pushresultsize(&b, ok_pct_encode(s, n, out));
  return 1;
}

/*** oktadpop.random([bytes=24]) -> base64url of that many random bytes (16 to 64): nonces, state,
 * anything that must not be guessed.
 * @function random
 */
int ok_random(lua_State *L) {
  unsigned char buf[64];
  char out[90];
  lua_Integer n = luaL_optinteger(L, 1, 24);
  luaL_argcheck(L, n >= 16 && n <= 64, 1, "16 to 64 bytes");
  if (RAND_bytes(buf, (int)n) != 1) return ok_fail_ssl(L, "crypto", "RAND_bytes failed");
  lua_pushlstring(L, out, ok_b64url_encode(buf, (size_t)n, out));
  OPENSSL_cleanse(buf, sizeof buf);
  return 1;
}

/*** oktadpop.ath(access_token): base64url(SHA-256(token)).
 * @function ath
 */
int ok_dpop_ath(lua_State *L) {
  size_t n;
  const char *token = luaL_checklstring(L, 1, &n);
  char ath[44];
  ok_ath_of(token, n, ath);
  lua_pushstring(L, ath);
  return 1;
}

/* The protected header is the same for every proof of a key: made once, kept on the key. */
static const char *dpop_header(ok_key *k) {
  if (!k->dpop_header) {
    const char *fmt = "{\"typ\":\"dpop+jwt\",\"alg\":\"%s\",\"jwk\":%s}";
    size_t n = strlen(fmt) + strlen(k->jwk_canon) + 8;
    char *json = malloc(n), *b64 = malloc(ok_b64url_len(n) + 1);
    if (json && b64) {
      int len = snprintf(json, n, fmt, ok_alg_name(k->alg), k->jwk_canon);
      b64[ok_b64url_encode((unsigned char *)json, (size_t)len, b64)] = '\0';
      k->dpop_header = b64;
      b64 = NULL;
    }
    free(json);
    free(b64);
  }
  return k->dpop_header;
}

/* Appends s as a JSON string: directly when every character is one JSON takes as it is (our
 * own jti, ath, method and most htu: base64url and URL characters), through cjson otherwise
 * (an htu in Okta's form may hold decoded characters). */
static int json_plain(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("-_.~!$&'()*+,;=:@/%", c));
}

static void add_json_safe(lua_State *L, luaL_Buffer *b, const char *s) {
  size_t n = 0;
  while (json_plain((unsigned char)s[n])) n++;
  if (s[n] != '\0') { ok_json_add_string(L, b, s, strlen(s)); return; }
  luaL_addchar(b, '"');
  luaL_addlstring(b, s, n);
  luaL_addchar(b, '"');
}

/* Builds and signs a proof; ath is the base64url hash or NULL; jti NULL means a fresh one.
 * Pushes the proof above its working values and returns 1, or nil, err and 0. */
static int dpop_build(lua_State *L, ok_key *k, const char *htm, const char *htu, size_t htulen, int for_okta,
                      const char *nonce, const char *ath, long long iat, const char *jti) {
  char jtibuf[32], num[32];
  const char *hdr = dpop_header(k);
  luaL_Buffer b;
  size_t plen;
  const char *payload;
  if (!hdr) return ok_fail(L, "crypto", "out of memory"), 0;
  if (!k->is_private) return ok_fail(L, "key", "cannot sign a DPoP proof with a public key"), 0;
  if (!jti) {
    if (!ok_new_jti(jtibuf)) return ok_fail(L, "crypto", "RAND_bytes failed"), 0;
    jtibuf[22] = '\0';
    jti = jtibuf;
  }
  if (!push_htu(L, htu, htulen, for_okta)) return 0;
  htu = lua_tolstring(L, -1, &htulen);
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "{\"jti\":");
  add_json_safe(L, &b, jti);
  luaL_addstring(&b, ",\"htm\":");
  add_json_safe(L, &b, htm);
  luaL_addstring(&b, ",\"htu\":");
  add_json_safe(L, &b, htu);
  snprintf(num, sizeof num, ",\"iat\":%lld", iat);
  luaL_addstring(&b, num);
  if (nonce) {
    luaL_addstring(&b, ",\"nonce\":");
    ok_json_add_string(L, &b, nonce, strlen(nonce));
  }
  if (ath) {
    luaL_addstring(&b, ",\"ath\":");
    add_json_safe(L, &b, ath);
  }
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
  payload = lua_tolstring(L, -1, &plen);
  return ok_jws_sign(L, k, hdr, strlen(hdr), payload, plen);
}

static int valid_method(const char *m) {
  if (!*m) return 0;
  for (; *m; m++) if (*m < 'A' || *m > 'Z') return 0;
  return 1;
}

int ok_dpop_make(lua_State *L, ok_key *key, const char *htm, const char *htu,
                 const char *nonce, const char *ath, long long iat) {
  int top = lua_gettop(L);
  int made;
  if (!key->pkey) return ok_fail(L, "key", "the DPoP key has been freed"), 0;
  made = dpop_build(L, key, htm, htu, strlen(htu), 1, nonce, ath, iat, NULL);
  ok_keep(L, top, made ? 1 : 2);
  return made;
}

/*** oktadpop.dpop_proof(key, {htm=, htu=, nonce=, access_token=, ath=, iat=, jti=})
 * @function dpop_proof
 */
int ok_dpop_proof(lua_State *L) {
  static const char *const names[] = {"htm", "htu", "nonce", "access_token", "ath", "iat", "jti", NULL};
  ok_key *k = ok_key_check(L, 1);
  size_t htulen, toklen = 0;
  const char *htm, *htu, *nonce, *token, *ath, *jti;
  char athbuf[44];
  double iat;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!ok_opts_known(L, 2, "dpop_proof", names) || !ok_opt_string(L, 2, "htm", &htm, NULL) ||
      !ok_opt_string(L, 2, "htu", &htu, &htulen) || !ok_opt_string(L, 2, "nonce", &nonce, NULL) ||
      !ok_opt_string(L, 2, "access_token", &token, &toklen) || !ok_opt_string(L, 2, "ath", &ath, NULL) ||
      !ok_opt_string(L, 2, "jti", &jti, NULL) || !ok_opt_number(L, 2, "iat", (double)time(NULL), 0, OK_MAX_TIME, &iat))
    return 2;
  if (!htm || !valid_method(htm)) return ok_fail(L, "config", "dpop_proof needs htm, an upper-case HTTP method");
  if (!htu) return ok_fail(L, "config", "dpop_proof needs htu, the request URL");
  if (token && !ath) { ok_ath_of(token, toklen, athbuf); ath = athbuf; }
  return dpop_build(L, k, htm, htu, htulen, 0, nonce, ath, (long long)iat, jti) ? 1 : 2;
}

int ok_assertion_make(lua_State *L, ok_key *k, const char *client_id, const char *aud,
                      long long iat, long long lifetime) {
  char jti[32], num[64];
  luaL_Buffer b;
  size_t hlen, plen;
  const char *h, *p;
  int top = lua_gettop(L), made;
  if (!k->pkey) return ok_fail(L, "key", "the key has been freed"), 0;
  if (!ok_new_jti(jti)) return ok_fail(L, "crypto", "RAND_bytes failed"), 0;
  jti[22] = '\0';
  luaL_buffinit(L, &b); /* header */
  luaL_addstring(&b, "{\"alg\":\"");
  luaL_addstring(&b, ok_alg_name(k->alg));
  luaL_addchar(&b, '"');
  if (k->kid) {
    luaL_addstring(&b, ",\"kid\":");
    ok_json_add_string(L, &b, k->kid, strlen(k->kid));
  }
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
  h = lua_tolstring(L, -1, &hlen);
  ok_b64url_push(L, (const unsigned char *)h, hlen);
  luaL_buffinit(L, &b); /* claims */
  luaL_addstring(&b, "{\"iss\":");
  ok_json_add_string(L, &b, client_id, strlen(client_id));
  luaL_addstring(&b, ",\"sub\":");
  ok_json_add_string(L, &b, client_id, strlen(client_id));
  luaL_addstring(&b, ",\"aud\":");
  ok_json_add_string(L, &b, aud, strlen(aud));
  snprintf(num, sizeof num, ",\"iat\":%lld,\"exp\":%lld,\"jti\":\"", iat, iat + lifetime);
  luaL_addstring(&b, num);
  luaL_addstring(&b, jti);
  luaL_addstring(&b, "\"}");
  luaL_pushresult(&b);
  h = lua_tolstring(L, -2, &hlen);
  p = lua_tolstring(L, -1, &plen);
  made = ok_jws_sign(L, k, h, hlen, p, plen);
  ok_keep(L, top, made ? 1 : 2);
  return made;
}

/*** oktadpop.client_assertion(key, client_id, audience [, {lifetime=300, iat=}])
 * @function client_assertion
 */
int ok_client_assertion(lua_State *L) {
  static const char *const names[] = {"lifetime", "iat", NULL};
  ok_key *k = ok_key_check(L, 1);
  const char *cid = luaL_checkstring(L, 2), *aud = luaL_checkstring(L, 3);
  double lifetime = 300, iat = (double)time(NULL);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    if (!ok_opts_known(L, 4, "client_assertion", names) ||
        !ok_opt_number(L, 4, "lifetime", lifetime, 1, 3600, &lifetime) ||
        !ok_opt_number(L, 4, "iat", iat, 0, OK_MAX_TIME, &iat))
      return 2;
  }
  if (!*cid) return ok_fail(L, "config", "client_id is empty");
  return ok_assertion_make(L, k, cid, aud, (long long)iat, (long long)lifetime) ? 1 : 2;
}

/* ---- verification (RFC 9449 section 4.3) ---- */

static const char bad_proof[] = "invalid_dpop_proof";

static int proof_fail(lua_State *L, const char *check, const char *code, const char *msg) {
  lua_pushfstring(L, "DPoP proof rejected: %s", msg);
  return ok_jws_fail(L, check, code, lua_tostring(L, -1));
}

typedef struct proof_opts {
  const char *htm, *htu, *token, *jkt, *nonce, *ath;
  size_t htm_len, htu_len, token_len, nonce_len, ath_len;
  double now, max_age, leeway;
  int key_cache; /* stack index of a key_cache, or 0 */
} proof_opts;

static int read_proof_opts(lua_State *L, proof_opts *o) {
  static const char *const names[] = {"htm", "htu", "access_token", "jkt", "nonce", "max_age", "leeway", "now",
                                      "ath", "key_cache", NULL};
  lua_getfield(L, 2, "jti_seen");
  if (!lua_isnil(L, -1))
    return ok_fail(L, "config", "verify_dpop_proof no longer takes jti_seen: check claims.jti against your "
                   "replay store after it returns (the guard does), so that the store may yield"), 0;
  lua_pop(L, 1);
  memset(o, 0, sizeof *o);
  if (!ok_opts_known(L, 2, "verify_dpop_proof", names) || !ok_opt_string(L, 2, "htm", &o->htm, &o->htm_len) ||
      !ok_opt_string(L, 2, "htu", &o->htu, &o->htu_len) || !ok_opt_string(L, 2, "access_token", &o->token, &o->token_len) ||
      !ok_opt_string(L, 2, "jkt", &o->jkt, NULL) || !ok_opt_string(L, 2, "nonce", &o->nonce, &o->nonce_len) ||
      !ok_opt_number(L, 2, "now", (double)time(NULL), 0, OK_MAX_TIME, &o->now) ||
      !ok_opt_number(L, 2, "max_age", OK_DEFAULT_MAX_AGE, 1, 86400, &o->max_age) ||
      !ok_opt_number(L, 2, "leeway", OK_DEFAULT_LEEWAY, 0, 3600, &o->leeway) ||
      !ok_opt_string(L, 2, "ath", &o->ath, &o->ath_len))
    return 0;
  if (!o->htm || !o->htu) return ok_fail(L, "config", "verify_dpop_proof needs opts.htm and opts.htu"), 0;
  if (o->ath && o->token) return ok_fail(L, "config", "verify_dpop_proof takes access_token or its ath, not both"), 0;
  lua_getfield(L, 2, "key_cache"); /* left on the stack: the proof's key is kept there */
  if (luaL_testudata(L, -1, OK_KEYCACHE_MT)) o->key_cache = lua_gettop(L);
  else if (!lua_isnil(L, -1)) return ok_fail(L, "config", "key_cache must be an oktadpop.key_cache()"), 0;
  return 1;
}

/* The header's typ, alg and jwk (a single public key); loads the key (or finds it in the key
 * cache, after checking its thumbprint against jkt), pushed: 1, or nil, err pushed and 0. */
static int proof_key(lua_State *L, int hidx, const proof_opts *o) {
  static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "k", "oth", NULL};
  int alg;
  if (!ok_jws_typ_is(L, hidx, "dpop+jwt")) return proof_fail(L, "typ", bad_proof, "typ is not dpop+jwt"), 0;
  lua_getfield(L, hidx, "alg");
  alg = lua_type(L, -1) == LUA_TSTRING && strlen(lua_tostring(L, -1)) == lua_rawlen(L, -1) ? ok_alg_from_name(lua_tostring(L, -1)) : -1;
  lua_pop(L, 1);
  if (alg < 0) return proof_fail(L, "alg", bad_proof, "alg is not one of RS256/384/512, ES256/384/512"), 0;
  lua_getfield(L, hidx, "jwk");
  if (!lua_istable(L, -1)) return proof_fail(L, "jwk", bad_proof, "header has no jwk"), 0;
  lua_getfield(L, -1, "keys"); /* load_key would take a one-key JWKS, private members unchecked */
  if (!lua_isnil(L, -1)) return proof_fail(L, "jwk", bad_proof, "jwk is a JWK Set, not a single key"), 0;
  lua_pop(L, 1);
  for (int i = 0; private_members[i]; i++) {
    lua_getfield(L, -1, private_members[i]);
    if (!lua_isnil(L, -1)) return proof_fail(L, "jwk", bad_proof, "jwk carries private key members"), 0;
    lua_pop(L, 1);
  }
  if (o->key_cache) {
    int r = ok_keycache_proof_key(L, o->key_cache, lua_gettop(L), alg, o->jkt);
    if (r < 0) return proof_fail(L, "jkt", bad_proof, "proof key does not match the token's cnf.jkt"), 0;
    if (r) return 1;
    lua_getfield(L, -1, "message");
    return proof_fail(L, "jwk", bad_proof, lua_tostring(L, -1)), 0;
  }
  if (!ok_key_load_alg(L, -1, alg)) {
    lua_getfield(L, -1, "message");
    return proof_fail(L, "jwk", bad_proof, lua_tostring(L, -1)), 0;
  }
  return 1;
}

/* htm, htu, iat and jti of the claims at cidx: 1, or nil, err pushed and 0. */
static int proof_request_claims(lua_State *L, int cidx, const proof_opts *o) {
  double iat;
  if (!ok_jws_field_is(L, cidx, "htm", o->htm, o->htm_len)) return proof_fail(L, "htm", bad_proof, "htm does not match the request method"), 0;
  if (!push_htu(L, o->htu, o->htu_len, 0)) return 0;
  lua_getfield(L, cidx, "htu");
  if (lua_type(L, -1) != LUA_TSTRING) return proof_fail(L, "htu", bad_proof, "htu is missing"), 0;
  {
    size_t n;
    const char *claimed = lua_tolstring(L, -1, &n);
    if (!push_htu(L, claimed, n, 0) || !lua_rawequal(L, -1, -3))
      return proof_fail(L, "htu", bad_proof, "htu does not match the request URL"), 0;
  }
  lua_getfield(L, cidx, "iat");
  iat = lua_tonumber(L, -1);
  if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(iat)) return proof_fail(L, "iat", bad_proof, "iat is missing or not a finite number"), 0;
  if (iat > o->now + o->leeway) return proof_fail(L, "iat", bad_proof, "iat is in the future"), 0;
  if (iat < o->now - o->max_age - o->leeway) return proof_fail(L, "iat", bad_proof, "proof is too old (iat)"), 0;
  lua_getfield(L, cidx, "jti");
  if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) < 16 || lua_rawlen(L, -1) > 256)
    return proof_fail(L, "jti", bad_proof, "jti is missing, or not 16 to 256 characters"), 0;
  return 1;
}

/* nonce, ath and the key's thumbprint against cnf.jkt: 1, or nil, err pushed and 0. */
static int proof_binding(lua_State *L, int cidx, const proof_opts *o, const ok_key *key) {
  if (o->nonce && !ok_jws_field_is(L, cidx, "nonce", o->nonce, o->nonce_len))
    return proof_fail(L, "nonce", "use_dpop_nonce", "nonce is missing or not the current one"), 0;
  if (o->token || o->ath) {
    char ath[44];
    if (o->token) ok_ath_of(o->token, o->token_len, ath);
    if (!ok_jws_field_is(L, cidx, "ath", o->ath ? o->ath : ath, o->ath ? o->ath_len : strlen(ath)))
      return proof_fail(L, "ath", bad_proof, "ath does not match the access token"), 0;
  }
  if (o->jkt && strcmp(o->jkt, key->thumbprint) != 0)
    return proof_fail(L, "jkt", bad_proof, "proof key does not match the token's cnf.jkt"), 0;
  return 1;
}

/*** oktadpop.verify_dpop_proof(proof, {htm=, htu=, access_token= or ath=, jkt=, nonce=, max_age=,
 * leeway=, now=, key_cache=}) -> claims, header, jkt | nil, err (err.check names the check). The
 * replay check is the caller's: claims.jti, kept until claims.iat + max_age + leeway.
 * @function verify_dpop_proof
 */
int ok_dpop_verify(lua_State *L) {
  size_t plen;
  const char *proof = luaL_checklstring(L, 1, &plen);
  proof_opts o;
  ok_verify v;
  ok_key *key;
  int hidx, cidx;
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checkstack(L, 48, "verify_dpop_proof"); /* every check leaves its values until the end */
  if (!read_proof_opts(L, &o)) return 2;
  if (!ok_jws_decode(L, proof, plen)) {
    lua_getfield(L, -1, "message");
    return proof_fail(L, "format", bad_proof, lua_tostring(L, -1));
  }
  hidx = lua_gettop(L) - 1;
  cidx = hidx + 1;
  if (!proof_key(L, hidx, &o)) return 2;
  key = ok_key_check(L, -1);
  memset(&v, 0, sizeof v);
  v.now = o.now; /* a proof carries no exp or nbf of its own, but if it does, they hold */
  v.leeway = o.leeway;
  v.code = bad_proof;
  if (!ok_jws_verify_decoded(L, proof, plen, key, hidx, &v)) return 2; /* decoded once, above */
  if (!proof_request_claims(L, cidx, &o) || !proof_binding(L, cidx, &o, key)) return 2;
  lua_pushvalue(L, cidx);
  lua_pushvalue(L, hidx);
  lua_pushstring(L, key->thumbprint);
  return 3;
}
