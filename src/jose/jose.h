/* jose.h: keys (EVP_PKEY userdata, JWK, PEM, thumbprints), compact JWS signing and
 * verification, DPoP proofs and client assertions: what the core signs with and the guard
 * verifies with. Above the Lua basics (lua/oktadpop.h) and the pure helpers; below the core.
 * STYLE.md's one return convention: a helper that pushes X or nil, err returns 1 or 0. */
#ifndef OKTADPOP_JOSE_H
#define OKTADPOP_JOSE_H

#include <openssl/evp.h>
#include "lua/oktadpop.h"

#define OK_KEY_MT "oktadpop.key"

/* ---- the key userdata (keys.c) and its algs (algs.c) ---- */
enum ok_alg { OK_RS256, OK_RS384, OK_RS512, OK_ES256, OK_ES384, OK_ES512, OK_ALG_COUNT };
typedef struct ok_key {
  EVP_PKEY *pkey;
  int is_private;
  enum ok_alg alg;
  char *kid;           /* NULL when none */
  char *jwk_canon;     /* RFC 7638 canonical public JWK JSON */
  char *thumbprint;    /* base64url SHA-256 of jwk_canon */
  char *dpop_header;   /* base64url of the DPoP protected header, made on first use */
  EVP_PKEY_CTX *sign_ctx; /* set up once for EVP_PKEY_sign: no per-signature fetches */
  EVP_MD_CTX *md_ctx;     /* reused for hashing the signing input: no allocation per proof */
  EVP_PKEY_CTX *verify_ctx; /* set up once for EVP_PKEY_verify with the key's own alg */
} ok_key;

/* ---- algs.c: the alg table and the digests fetched once per process ---- */
const char *ok_alg_name(enum ok_alg alg);
const char *ok_alg_group(enum ok_alg alg);     /* OpenSSL's curve name, NULL for RSA */
const char *ok_alg_curve(enum ok_alg alg);     /* the JWK crv, NULL for RSA */
/* Counts this Lua state as a user of the fetched digests, given back when it closes. */
void ok_md_cache_open(lua_State *L);
int ok_alg_from_name(const char *name);       /* -1 when unknown */
int ok_alg_is_ec(enum ok_alg alg);
const EVP_MD *ok_alg_md(enum ok_alg alg);
/* SHA-256/384/512 fetched once per process (OpenSSL 3 fetches a legacy EVP_sha256() on every use). */
EVP_MD *ok_md_fetched(enum ok_alg alg);
/* SHA-256 of data into out[32] with the fetched digest. */
int ok_sha256(const void *data, size_t n, unsigned char out[32]);
size_t ok_alg_ec_size(enum ok_alg alg);         /* bytes of R (and of S) */

/* ---- keys.c: the key userdata, load_key, generate_key and the key's methods ---- */
ok_key *ok_key_check(lua_State *L, int idx);
/* Loads any load_key source at idx (opts at optidx or 0): the key pushed and 1, or nil, err and 0. */
int ok_key_load(lua_State *L, int idx, int optidx);
/* ok_key_load of the JWK at jidx as a key for alg: the key pushed and 1, or nil, err and 0. */
int ok_key_load_alg(lua_State *L, int jidx, enum ok_alg alg);
/* When the load_key source at idx names a file: its permission bits (st_mode & 07777), else -1. */
int ok_key_file_mode(lua_State *L, int idx);
void ok_keys_open(lua_State *L);
int ok_key_loadkey(lua_State *L);
int ok_key_generate(lua_State *L);
/* Pushes a freshly generated key (bits for RSA only) and returns 1, or nil, err and 0. */
int ok_key_new_generated(lua_State *L, enum ok_alg alg, int bits, const char *kid);

/* ---- keyimport.c: outside bytes into checked keys ---- */
/* Checks the key's type, size and curve, settles its alg (want_alg when it fits), sets kid,
 * its canonical JWK and thumbprint; NULL or why not (a static or stack-held message). */
const char *ok_key_finish(lua_State *L, ok_key *k, const char *want_alg, const char *kid);
/* Decodes a PEM private or public key (pass: its passphrase, or NULL); NULL or why not. */
const char *ok_pem_decode(EVP_PKEY **out, const char *pem, size_t n, const char *pass);
/* One signature its own public half verifies: 1 when the private part is sound. */
int ok_pem_sign_check(const ok_key *k);
/* The JWK (or JWKS: one key, or the one want_kid names) table at idx into *out; *alg and *kid
 * point at its members while the caller keeps the stack. NULL or why not. */
const char *ok_jwk_load(lua_State *L, int idx, EVP_PKEY **out, const char *want_kid, const char **alg,
                        const char **kid);
/* What ok_jwk_load asks of the JWK table at jidx's members before parsing: each a string when
 * present, use "sig" when present. 1 when so (the key cache never finds a key it would refuse). */
int ok_jwk_members_ok(lua_State *L, int jidx);

/* ---- jws.c: compact JWS signing and verification ---- */
/* Pushes header_b64 "." payload_b64 "." sig_b64 for the two JSON-encoded parts and returns 1,
 * or nil, err and 0. */
int ok_jws_sign(lua_State *L, ok_key *key, const char *header_b64, size_t hlen,
                const char *payload_json, size_t plen);
/* Verifies sig over signing input with key; 1 when valid. Leaves the error queue clear. */
int ok_jws_verify_raw(ok_key *key, enum ok_alg alg, const char *input, size_t ilen,
                      const unsigned char *sig, size_t slen);
/* Splits and decodes a compact JWS: pushes header, claims and returns 1; or nil, err and 0. */
int ok_jws_decode(lua_State *L, const char *jwt, size_t len);
/* What a verification checks beyond the signature (see verify_jwt). */
#define OK_MAX_TIME 253402300799.0 /* 9999-12-31: times past this are refused before any cast */
typedef struct ok_verify {
  double now, leeway;
  const char *issuer, *audience, *subject, *typ, *code; /* code: the OAuth error a failure carries */
  size_t issuer_len, audience_len, subject_len;
} ok_verify;
/* Reads verify_jwt's options at optidx (0: none); 1, or 0 with nil, err. */
int ok_jws_verify_options(lua_State *L, int optidx, ok_verify *v);
/* Verifies the JWT at idx against key: leaves header, claims pushed and returns 1; or pushes
 * nil, err (kind "verify", err.check naming the check) and returns 0. */
int ok_jws_verify_at(lua_State *L, int idx, ok_key *key, const ok_verify *v);
/* The same for a JWT already decoded by ok_jws_decode (header at hidx, claims at hidx + 1):
 * 1, or nil, err pushed and 0. */
int ok_jws_verify_decoded(lua_State *L, const char *jwt, size_t len, ok_key *key, int hidx, const ok_verify *v);
/* Pushes nil and a verification error; returns 2 (for a lua_CFunction's return). */
int ok_jws_fail(lua_State *L, const char *check, const char *code, const char *msg);
/* Field name of the table at tidx is exactly want (wlen bytes: an embedded NUL counts). */
int ok_jws_field_is(lua_State *L, int tidx, const char *name, const char *want, size_t wlen);
/* The header's typ is want, compared as media types are (case-insensitively). */
int ok_jws_typ_is(lua_State *L, int hidx, const char *want);
int ok_jws_sign_jwt(lua_State *L);
int ok_jws_decode_jwt(lua_State *L);
int ok_jws_verify_jwt(lua_State *L);
/* Fills buf (>= 23 bytes) with a base64url jti of 128 random bits; returns its length. */
size_t ok_new_jti(char *buf);

/* ---- dpop.c: DPoP proofs, client assertions, proof verification ---- */
int ok_dpop_proof(lua_State *L);
int ok_dpop_ath(lua_State *L);
int ok_random(lua_State *L);
int ok_escape(lua_State *L);
int ok_dpop_verify(lua_State *L);
int ok_client_assertion(lua_State *L);
int ok_htu(lua_State *L);
/* Pushes a DPoP proof for a request to Okta (the htu in Okta's form, ok_htu_okta) for key
 * (nonce/ath may be NULL) with the given iat and returns 1, or nil, err and 0. */
int ok_dpop_make(lua_State *L, ok_key *key, const char *htm, const char *htu,
                 const char *nonce, const char *ath, long long iat);
/* base64url(SHA-256(token)) into out[44], NUL-terminated. */
void ok_ath_of(const char *token, size_t n, char out[44]);
/* Pushes a client assertion and returns 1, or nil, err and 0. */
int ok_assertion_make(lua_State *L, ok_key *key, const char *client_id, const char *aud,
                      long long iat, long long lifetime);

/* ---- keycache.c: a bounded LRU of imported DPoP proof keys ---- */
#define OK_KEYCACHE_MT "oktadpop.key_cache"
/* The proof key for the JWK table at jidx and alg, from the cache at cidx or imported into it.
 * 1: the key pushed; 0: nil, err pushed (the import's error); -1: nothing pushed, the JWK's
 * thumbprint is not jkt (checked before any import when jkt is not NULL). */
int ok_keycache_proof_key(lua_State *L, int cidx, int jidx, int alg, const char *jkt);
/* Adds oktadpop.key_cache to the module table at the top of the stack. */
void ok_keycache_open(lua_State *L);

#endif
