/* oktadpop.h: private declarations shared by the module's C files (not installed). */
#ifndef OKTADPOP_H
#define OKTADPOP_H

#include <stddef.h>
#include <openssl/evp.h>
#include "compat.h"

#define OKTADPOP_VERSION "0.1.0"

/* Metatable and registry names (string keys: LuaJIT-safe). */
#define OK_KEY_MT    "oktadpop.key"
#define OK_ERROR_MT  "oktadpop.error"
#define OK_CLIENT_MT "oktadpop.client"
#define OK_OP_MT     "oktadpop.operation"
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
/* Moves the top n values down to base+1..base+n and drops what was between; returns n. */
int ok_keep(lua_State *L, int base, int n);

/* ---- b64url.c: base64url without padding (RFC 7515 section 2) ---- */
size_t ok_b64url_len(size_t n);
/* Writes ok_b64url_len(n) chars (no NUL) to out; returns that length. */
size_t ok_b64url_encode(const unsigned char *in, size_t n, char *out);
/* Bytes ok_b64url_decode may write for n chars: it writes whole 3-byte groups. */
size_t ok_b64url_room(size_t n);
/* Decodes into out (ok_b64url_room(n) bytes); returns the length or -1 on bad input. */
long ok_b64url_decode(const char *in, size_t n, unsigned char *out);
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

/* ---- keys.c: EVP_PKEY userdata, JWK, PEM, thumbprints ---- */
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
} ok_key;

const char *ok_alg_name(enum ok_alg alg);
int ok_alg_from_name(const char *name);       /* -1 when unknown */
int ok_alg_is_ec(enum ok_alg alg);
const EVP_MD *ok_alg_md(enum ok_alg alg);
/* SHA-256/384/512 fetched once per process (OpenSSL 3 fetches a legacy EVP_sha256() on every use). */
EVP_MD *ok_md_fetched(enum ok_alg alg);
/* SHA-256 of data into out[32] with the fetched digest. */
int ok_sha256(const void *data, size_t n, unsigned char out[32]);
size_t ok_alg_ec_size(enum ok_alg alg);         /* bytes of R (and of S) */
ok_key *ok_key_check(lua_State *L, int idx);
/* Loads any load_key source at idx (opts at optidx or 0); pushes the key or nil, err. */
int ok_key_load(lua_State *L, int idx, int optidx);
/* When the load_key source at idx names a file: its permission bits (st_mode & 07777), else -1. */
int ok_key_file_mode(lua_State *L, int idx);
void ok_keys_open(lua_State *L);
int ok_key_loadkey(lua_State *L);
int ok_key_generate(lua_State *L);
/* Pushes a freshly generated key (bits for RSA only), or nil, err. */
int ok_key_new_generated(lua_State *L, enum ok_alg alg, int bits, const char *kid);

/* ---- jws.c: compact JWS signing and verification ---- */
/* Pushes header_b64 "." payload_b64 "." sig_b64 for the two JSON-encoded parts, or nil, err. */
int ok_jws_sign(lua_State *L, ok_key *key, const char *header_b64, size_t hlen,
                const char *payload_json, size_t plen);
/* Verifies sig over signing input with key; 1 when valid. Leaves the error queue clear. */
int ok_jws_verify_raw(ok_key *key, enum ok_alg alg, const char *input, size_t ilen,
                      const unsigned char *sig, size_t slen);
/* Splits and decodes a compact JWS; on success pushes header, claims and returns 2; else nil, err. */
int ok_jws_decode(lua_State *L, const char *jwt, size_t len);
int ok_jws_verify_at(lua_State *L, int idx, ok_key *key, int optidx, const char *code);
int ok_jws_sign_jwt(lua_State *L);
int ok_jws_decode_jwt(lua_State *L);
int ok_jws_verify_jwt(lua_State *L);
/* Fills buf (>= 23 bytes) with a base64url jti of 128 random bits; returns its length. */
size_t ok_new_jti(char *buf);

/* ---- url.c: pure URL helpers (no Lua) ---- */
/* Normalises an absolute http(s) URL as Okta compares htu: returns a malloc'd string or NULL. */
char *ok_htu_normalize(const char *url, size_t n, const char **why);
/* Writes "scheme://host[:port]" (lower case, default port dropped) into out; 0 on success. */
int ok_url_origin(const char *url, size_t n, char *out, size_t outsz, const char **why);
int ok_host_is_loopback(const char *origin);
/* Percent-encodes all but RFC 3986 unreserved characters; out needs 3n; returns the length. */
size_t ok_pct_encode(const char *s, size_t n, char *out);
/* Finds the rel="next" target in a Link header value; returns malloc'd URL or NULL. */
char *ok_link_next(const char *value, size_t n);
/* Finds auth-param `param` of the DPoP (or Bearer) challenge; malloc'd value or NULL. */
char *ok_www_auth_param(const char *value, size_t n, const char *param);

/* ---- dpop.c: DPoP proofs, client assertions, proof verification ---- */
int ok_dpop_proof(lua_State *L);
int ok_dpop_ath(lua_State *L);
int ok_dpop_verify(lua_State *L);
int ok_client_assertion(lua_State *L);
int ok_htu(lua_State *L);
/* Pushes a DPoP proof for key (nonce/ath may be NULL) with the given iat, or nil, err. */
int ok_dpop_make(lua_State *L, ok_key *key, const char *htm, const char *htu,
                 const char *nonce, const char *ath, long long iat);
/* base64url(SHA-256(token)) into out[44], NUL-terminated. */
void ok_ath_of(const char *token, size_t n, char out[44]);
/* Pushes a client assertion, or nil, err. */
int ok_assertion_make(lua_State *L, ok_key *key, const char *client_id, const char *aud,
                      long long iat, long long lifetime);

/* ---- files.c: small files handed to us ---- */
/* Reads a regular file of at most max bytes, NUL-terminated, into a userdata left on the
 * stack that has room for `copies` times the file (scratch space for a parser); returns
 * NULL, or one of the three reasons below (errno tells why it could not be opened). */
extern const char OK_FILE_CANNOT_OPEN[], OK_FILE_NOT_REGULAR[], OK_FILE_TOO_LARGE[];
const char *ok_read_small_file(lua_State *L, const char *path, size_t max, int copies,
                               char **data, size_t *len);

/* ---- dotenv.c: .env files (pure C) ---- */
typedef void (*ok_dotenv_cb)(void *ud, const char *key, size_t klen, const char *val, size_t vlen);
/* Parses KEY=value lines (comments, quotes, `export`); scratch needs n bytes. Returns the
 * number of pairs, or -(line number) of the first malformed line. */
int ok_dotenv_parse(const char *buf, size_t n, char *scratch, ok_dotenv_cb cb, void *ud);

/* ---- core.c: the transport-free protocol core ---- */
typedef struct ok_buf { char *p; size_t n, cap; } ok_buf;

/* libcurl state of the blocking driver (curl.c); opaque pointers keep curl.h out of here. */
typedef struct ok_transport {
  void *easy;           /* CURL * */
  void *headers;        /* struct curl_slist * of the request in flight */
  ok_buf body, head;    /* response bytes, freed with the client */
} ok_transport;

typedef struct ok_client {
  char *org_origin, *token_url, *client_id, *scopes, *user_agent, *ca_file, *proxy;
  int dpop, closed, debug_stderr, allow_http;
  long timeout_ms, connect_timeout_ms;
  int max_retries;
  double max_retry_wait, renew_skew, retry_base;
  size_t max_body;
  ok_key *assertion_key, *dpop_key; /* kept alive by the client's uservalue table */
  char *token, *token_type, *token_scope;
  size_t token_len;
  char token_ath[44];               /* the token's ath, hashed once per token, not per call */
  double expires_at;
  char *as_nonce, *rs_nonce;        /* last DPoP-Nonce of the authorization and resource server */
  double clock_offset;              /* server Date minus our clock, when it matters */
  unsigned long token_requests, api_requests;
  ok_transport net;
} ok_client;

double ok_now(void);
ok_client *ok_client_check(lua_State *L, int idx);
/* Validates a config table and pushes a client userdata, or nil, err. */
int ok_client_create(lua_State *L, int cfgidx);
/* Pushes an operation for client at cidx: kind "token" or an HTTP method; url absolute. */
int ok_op_create(lua_State *L, int cidx, const char *method, const char *url, int force, int body_idx, int headers_idx);
/* Advances the operation at opidx with the response table at respidx (0: none); pushes the
 * next action table {action="send"|"sleep"|"done"|"fail", ...}. */
int ok_op_step(lua_State *L, int opidx, int respidx);
void ok_client_debug(lua_State *L, int cidx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Builds the absolute URL for path (+ query table at qidx, 0: none); pushes it or nil, err. */
int ok_client_url(lua_State *L, ok_client *c, const char *path, int qidx);
void ok_client_clear_token(ok_client *c);
/* Whether this client can send token, issued as token_type type. */
enum { OK_TOKEN_OK, OK_TOKEN_UNUSABLE, OK_TOKEN_NOT_DPOP };
int ok_client_token_check(const ok_client *c, const char *token, const char *type);
/* Adopts a server's DPoP nonce: the token endpoint's (is_token) or the resource server's; an
 * empty or oversized one is ignored. */
void ok_client_set_nonce(ok_client *c, int is_token, const char *nonce);
/* Stores a token (copied) with its type, scope and expiry, and hashes its ath once: the same
 * token again only updates the expiry. */
void ok_client_set_token(ok_client *c, const char *token, const char *type, const char *scope, double expires_at);
void ok_core_open(lua_State *L);

/* ---- curl.c: the blocking libcurl driver ---- */
/* Performs the send action at idx; pushes {status=, headers=, body=} or {error=err}. */
int ok_curl_send(lua_State *L, ok_client *c, int actidx);
void ok_curl_free(ok_transport *t);
const char *ok_curl_version(void);
/* Seconds since the epoch of an HTTP date, or -1. */
double ok_http_date(const char *s);

/* ---- client.c: the public client surface ---- */
void ok_client_open(lua_State *L);

#endif
