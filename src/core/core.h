/* core.h: the protocol core. It does no I/O of any kind: no sockets, files, environment,
 * clock or stderr, and it never calls a Lua function it was handed. A driver passes in the
 * time and each response; the core hands back actions (send, sleep, store, items, done,
 * fail, each with log lines when the debug log is on). Nothing here includes or calls a
 * driver: drivers sit above the core and call down into it. */
#ifndef OKTADPOP_CORE_H
#define OKTADPOP_CORE_H

#include "jose/jose.h"
#include "pure/pure.h"

#define OK_SESSION_MT "oktadpop.session"
#define OK_OP_MT      "oktadpop.operation"
#define OK_MAX_BUCKETS 32

/* Okta's error_description for a DPoP proof whose jti it has seen ("The DPoP proof JWT has
 * already been used.", okta-sdk-golang #554): on a proof sent once, the transport re-sent it. */
#define OK_PROOF_REUSED_TEXT "has already been used"

/* ---- config.c: validated configuration, immutable once the session exists ---- */
typedef struct ok_config {
  char *org_origin, *token_url, *client_id, *scopes, *user_agent, *ca_file, *proxy;
  int dpop, debug, allow_http;
  double timeout, connect_timeout, max_retries, max_retry_wait, retry_base, renew_skew;
  double max_body, max_concurrency, max_capacity, max_queue_wait;
  ok_bucket_rule *bucket_rules;     /* buckets = {{pattern, name}, ...}: before Okta's table */
  int nbucket_rules;
} ok_config;

/* Reads and checks the config table at cfgidx (keys already key objects, see setup.c) into
 * cfg, and the keys into the table at uvidx; returns 1, or 0 with nil, err pushed. */
int ok_config_read(lua_State *L, int cfgidx, int uvidx, ok_config *cfg);
void ok_config_free(ok_config *cfg);

/* ---- session.c: what one client knows: token, nonces, clock offset, rate-limit buckets ---- */
typedef struct ok_session {
  ok_config cfg;
  ok_key *assertion_key, *dpop_key; /* kept alive by the session's uservalue */
  char store_prefix[32];            /* names this token's keys (state, lock) in a shared store */
  char app_prefix[32];              /* names the app's budget keys (inflight, rl:, rlb:): Okta counts per app */
  char *token, *token_type, *token_scope, *missing_scopes;
  size_t token_len;
  char token_ath[44];               /* the token's ath, hashed once per token, not per call */
  double expires_at, token_skew;   /* renewed token_skew seconds early: renew_skew, or half a short token's life */
  char *as_nonce, *rs_nonce;        /* last DPoP-Nonce of the authorization and resource server */
  double clock_offset;              /* the server's Date minus the driver's clock */
  char date_seen[40];               /* the last Date parsed, and its value: one parse per second */
  double date_value;
  ok_bucket buckets[OK_MAX_BUCKETS];
  int nbuckets, closed, scopes_warned;
  double concurrency_cap;           /* below max_concurrency for a while, after a concurrency 429 (0: none) */
  int degraded;                     /* the shared store failed: a reduced share, on the driver's own store */
  double concurrency_checked;       /* when the store's cap was last read (the others' 429s) */
  unsigned long token_requests, api_requests, rate_waits, retries;
  unsigned long rate_limited, budget_cuts, concurrency_cuts; /* 429s, and what the client learned from them */
} ok_session;

/* Pushes a session for the config at cfgidx and returns 1; or pushes nil, err and returns 0. */
int ok_session_create(lua_State *L, int cfgidx);
ok_session *ok_session_check(lua_State *L, int idx);
/* The session at idx, or NULL (nil, err pushed) when it is closed or a key was freed. */
ok_session *ok_session_usable(lua_State *L, int idx);
int ok_token_fresh(const ok_session *s, double now);
void ok_session_clear_token(ok_session *s);
/* Adopts a server's DPoP nonce: the token endpoint's (is_token) or the resource server's. */
void ok_session_set_nonce(ok_session *s, int is_token, const char *nonce);
/* Takes in what every response says: the nonce and the server's clock (capped). */
void ok_session_learn(ok_session *s, int is_token, const char *nonce, const char *date, double now);
/* Server time: the driver's clock plus the offset the server's Date showed, when it matters. */
double ok_server_now(const ok_session *s, double now);
/* Checks and stores a token response's fields (lifetime: its expires_in); returns NULL or why
 * it is unusable. */
const char *ok_session_take_token(ok_session *s, const char *token, const char *type, const char *scope,
                                  double expires_at, double lifetime);
/* Pushes the JSON a shared store keeps for this token (it holds the token). */
void ok_session_push_state(lua_State *L, ok_session *s);
/* Adopts a state JSON from the store at idx when its token is usable now and is not the one
 * whose ath is `rejected`; returns 1 when a fresh token was adopted. */
int ok_session_adopt_state(lua_State *L, ok_session *s, int idx, double now, const char *rejected);
ok_bucket *ok_session_bucket(ok_session *s, const char *name);
/* The bucket whose count b's requests are counted in: b, or the one it shares a count with. */
ok_bucket *ok_session_counted(ok_session *s, ok_bucket *b);
/* The most requests this client may have in flight now (max_concurrency, or less for a while
 * after a concurrency 429). */
double ok_session_concurrency(const ok_session *s);
/* The share of each bucket this client may use now: max_capacity, or a quarter of it while its
 * shared store is down (it cannot see what the other hosts send). */
double ok_session_capacity(const ok_session *s);
int ok_session_gc(lua_State *L);

/* ---- request.c: requests as they go on the wire ---- */
/* Builds the absolute URL for path (+ query table at qidx, 0: none): pushes it and returns 1,
 * or pushes nil, err and returns 0. */
int ok_request_url(lua_State *L, ok_session *s, const char *path, int qidx);
/* Checks a method (upper-cases it into m[16]); returns NULL or why it is refused. */
const char *ok_request_method(const char *method, size_t len, char m[16]);
/* Checks a caller's header table at idx; returns 1, or 0 with nil, err pushed. */
int ok_request_headers(lua_State *L, int idx);
/* Pushes the token request action (fresh assertion and proof at server time iat); returns 1,
 * or 0 with nil, err pushed. */
int ok_request_token(lua_State *L, ok_session *s, long long iat, const char *retry_for, int retry_count);
/* Pushes the API request action for method, url with a fresh proof; headers and body at
 * hidx and bidx (0: none). Returns 1, or 0 with nil, err pushed. */
int ok_request_api(lua_State *L, ok_session *s, const char *method, const char *url, int hidx, int bidx,
                   long long iat, const char *retry_for, int retry_count);

/* ---- result.c: responses turned into what callers get ---- */
/* Pushes {status=, headers=, body=, next=} for the response at ridx. */
void ok_result_response(lua_State *L, int ridx);
/* Pushes the error object for a non-2xx result table at ridx (as from ok_result_response);
 * its message starts with prefix ("GET <url>"). */
void ok_result_http_error(lua_State *L, int ridx, const char *prefix, double server_now);
/* What get/post/... answer for the result at ridx: body (true when empty), res on 2xx; else
 * nil, err, res, the error being res.error (set by the operation). */
int ok_result_call(lua_State *L, int ridx);
/* Seconds to wait after a 429, on the server's clock: X-Rate-Limit-Reset minus Date (Okta's SDKs
 * add a whole second more, which overshoots the reset by 1 to 2 s) plus 50 ms, Retry-After
 * otherwise, 1 s when neither says. */
double ok_result_rate_wait(lua_State *L, int hidx, double server_now);
/* A response header (lower-case name) of the table at hidx as a C string, or NULL. */
const char *ok_header(lua_State *L, int hidx, const char *name);

/* ---- operation.c, oplife.c: the operation state machine (op.h has its parts) ---- */
enum ok_op_kind { OK_OP_TOKEN, OK_OP_CALL, OK_OP_PAGES, OK_OP_POLL };
/* Pushes a new operation of session at sidx. For calls and pages: method, url (absolute,
 * checked), and the headers and body at hidx, bidx (0: none). */
int ok_op_create(lua_State *L, int sidx, enum ok_op_kind kind, const char *method, const char *url,
                 int hidx, int bidx);
/* Makes the token operation at opidx fetch a new token rather than answer with the current one. */
void ok_op_force(lua_State *L, int opidx);
/* Advances the operation at opidx with the input at inidx (0: none) at driver time now;
 * pushes the next action table. */
int ok_op_step(lua_State *L, int opidx, int inidx, double now);
/* Pushes the list of store actions that give back what the operation at opidx holds (a
 * concurrency slot, the token lock), for a driver whose loop was cut short by an error. */
int ok_op_abort(lua_State *L, int opidx);
/* Sets the page options of a pages or poll operation from the table at idx; 1, or 0 + nil, err. */
int ok_op_page_options(lua_State *L, int opidx, int idx);
/* The names of those options (poll's other keys are its query). */
extern const char *const ok_page_option_names[];
/* The operation's __gc: frees its strings; safe on a freed one. */
int ok_op_gc(lua_State *L);

#endif
