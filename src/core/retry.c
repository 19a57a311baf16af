/* retry.c: what a server's answer means, for the token endpoint and the management API: a
 * retry, a wait, or final. Each rule reads the answer (answer.c read it once) and decides;
 * operation.c acts.
 *   token endpoint: use_dpop_nonce retried with the server's nonce (at most twice, never with a
 *     nonce it just refused); an assertion or proof refused while the server's Date is more than
 *     30 s off the iat we sent is retried once on the server's clock; 429 after its reset;
 *     502/503/504 and lost connections with backoff (a token request is always safe to repeat:
 *     each carries a fresh assertion).
 *   API: a resource nonce challenge retried once; 401 invalid_token refreshes the token once;
 *     a proof Okta says was already used (the transport re-sent a request whose connection
 *     died after it went out: libcurl does that on a reused connection) retried once with a
 *     fresh proof on idempotent methods; 429 after its reset; 502/503/504 and lost connections
 *     with capped, jittered backoff on idempotent methods only. A 500 is final: Okta's
 *     E0000009 is a query timeout that repeating will not cure (Okta's SDKs retry 429, and
 *     Java 503/504, never 500).
 * Part of the core: no I/O. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include "core/op.h"

#define OK_TOKEN_NONCE_TRIES 2
#define OK_SKEW_RETRY 30.0

static int retryable_status(long status) { return status == 502 || status == 503 || status == 504; }

/* retry_base * 2^n capped by max_retry_wait, with jitter in [half, whole] so that many
 * clients do not retry in step. */
static double backoff(const ok_session *s, int attempt) {
  unsigned char r = 255;
  double w = fmin(s->cfg.retry_base * pow(2, attempt), s->cfg.max_retry_wait);
  if (RAND_bytes(&r, 1) != 1) r = 255;
  return w * (0.5 + (double)r / 510.0);
}

int ok_retry_lost(ok_ctx *c, int in, int safe, ok_decision *d) {
  lua_State *L = c->L;
  lua_getfield(L, in, "error");
  if (safe && c->op->retry.server_errors < c->s->cfg.max_retries) {
    double wait = backoff(c->s, c->op->retry.server_errors++);
    lua_getfield(L, -1, "message");
    ok_op_log(c, "no response (%s): retrying in %.2f s", lua_tostring(L, -1), wait);
    lua_pop(L, 2);
    c->s->retries++;
    return ok_decide_sleep(d, wait, "server_error");
  }
  if (!lua_istable(L, -1)) { lua_pop(L, 1); ok_error_push(L, "network", "the transport answered nothing"); }
  return ok_decide(d, NEXT_FAIL);
}

/* A 429: waited out on the server's clock, up to max_retries times; one whose reset is
 * further away than max_retry_wait is final (err.retry_after says when), not retried early
 * into another 429. Returns 0 when it is not retried. */
static int rate_limited(ok_ctx *c, const ok_answer *a, int is_token, ok_decision *d) {
  double wait = ok_result_rate_wait(c->L, a->hidx, ok_server_now(c->s, c->now));
  ok_op *op = c->op;
  if (op->retry.rate_limited >= c->s->cfg.max_retries || wait > c->s->cfg.max_retry_wait) return 0;
  ok_op_set_str(&op->retry.retry_for, a->request_id);
  op->retry.for_token = is_token;
  op->retry.rate_limited++;
  c->s->rate_waits++;
  ok_op_log(c, "rate limited (429): waiting %.1f s (retry %d of %.0f)", wait, op->retry.rate_limited, c->s->cfg.max_retries);
  return ok_decide_wait(d, wait, "retry", is_token ? "/oauth2" : op->bucket, ok_header_min(a->rl_limit),
                        ok_header_min(a->rl_remaining), ok_header_min(a->rl_reset)); /* the 429's own figures */
}

/* ---- the token endpoint ---- */

/* The answer as an OAuth error. */
static int token_failed(ok_ctx *c, const ok_answer *a, const char *what, ok_decision *d) {
  lua_pushfstring(c->L, "%s (POST %s)", what, c->s->cfg.token_url);
  ok_result_http_error(c->L, a->ridx, lua_tostring(c->L, -1), ok_server_now(c->s, c->now));
  lua_pushliteral(c->L, "oauth");
  lua_setfield(c->L, -2, "kind");
  return ok_decide(d, NEXT_FAIL);
}

static int nonce_retry(ok_ctx *c, const ok_answer *a, ok_decision *d) {
  ok_op *op = c->op;
  const char *nonce = a->nonce;
  if (nonce && c->s->as_nonce && strcmp(c->s->as_nonce, nonce) == 0 && op->retry.nonce_tries < OK_TOKEN_NONCE_TRIES &&
      !(op->token.sent_nonce && strcmp(op->token.sent_nonce, nonce) == 0)) {
    op->retry.nonce_tries++;
    ok_op_log(c, "token endpoint asked for a DPoP nonce: retrying with the server's nonce");
    return ok_decide(d, NEXT_SEND_TOKEN);
  }
  return token_failed(c, a, nonce ? "the token endpoint keeps refusing the DPoP nonce"
                                  : "the token endpoint asked for a DPoP nonce but sent none", d);
}

/* An assertion or proof refused while our clock was off: the offset is learned (from this
 * very answer) and the request made once more with a fresh assertion and proof. */
static int skewed(ok_ctx *c, const ok_answer *a) {
  double date = a->date ? ok_http_date(a->date) : -1;
  if (c->op->retry.skew || date <= 0 || fabs(date - (double)c->op->token.sent_iat) <= OK_SKEW_RETRY) return 0;
  if (!a->code || (strcmp(a->code, "invalid_client") != 0 && strcmp(a->code, "invalid_dpop_proof") != 0)) return 0;
  return fabs(ok_server_now(c->s, c->now) - date) < OK_SKEW_RETRY; /* the offset was adopted (it is within the cap) */
}

int ok_retry_token(ok_ctx *c, const ok_answer *a, ok_decision *d) {
  long status = a->status;
  if (status == 400 && a->code && strcmp(a->code, "use_dpop_nonce") == 0 && c->s->cfg.dpop) return nonce_retry(c, a, d);
  if ((status == 400 || status == 401) && skewed(c, a)) {
    c->op->retry.skew = 1;
    ok_op_log(c, "token endpoint refused the assertion (%s) and its clock is %.0f s off ours: retrying on its clock",
              a->code, c->s->clock_offset);
    return ok_decide(d, NEXT_SEND_TOKEN);
  }
  if (status == 429) c->s->rate_limited++;
  if (status == 429 && rate_limited(c, a, 1, d)) return 1;
  if (retryable_status(status) && c->op->retry.server_errors < c->s->cfg.max_retries)
    return ok_decide_sleep(d, backoff(c->s, c->op->retry.server_errors++), "server_error");
  return token_failed(c, a, "token request failed", d);
}

/* ---- the management API ---- */

/* A 429 is information. The concurrency limit's (X-Rate-Limit-Limit: 0) lowers the requests in
 * flight to one fewer than when it came, for a minute; a bucket's, while this client believed it
 * was inside its budget (the app's share is lower than max_capacity), ends this client's use of
 * that window: its count is raised past the budget in the store, so every worker and host that
 * shares it waits for the next window, where the share recovers. */
static void learn_from_429(ok_ctx *c, const ok_answer *a) {
  ok_session *s = c->s;
  ok_op *op = c->op;
  double limit = a->rl_limit ? ok_header_min(a->rl_limit) : -1, snow = ok_server_now(s, c->now);
  ok_bucket *b = ok_session_counted(s, ok_session_bucket(s, op->bucket));
  char key[OK_STORE_KEY];
  long allowed;
  s->rate_limited++;
  if (limit == 0) {
    double cap = op->admit.inflight > 1 ? op->admit.inflight - 1 : 1;
    s->concurrency_cap = cap < ok_session_concurrency(s) ? cap : ok_session_concurrency(s);
    s->concurrency_checked = c->now;
    s->concurrency_cuts++;
    ok_op_log(c, "concurrency 429 with %.0f in flight: at most %.0f for a minute", op->admit.inflight, s->concurrency_cap);
    lua_pushnumber(c->L, s->concurrency_cap);
    ok_op_queue_store(c, "set", "concurrency", -1, 60);
    lua_pop(c->L, 1);
    return;
  }
  allowed = ok_bucket_allowed(b, ok_session_capacity(s));
  if (!(limit > 0) || !ok_bucket_window_open(b, snow) || op->admit.count < 1 || op->admit.count > allowed) return;
  s->budget_cuts++;
  ok_op_log(c, "%s: a 429 at request %ld of the %ld this client allows itself (the server says limit %.0f, %.0f used): "
            "the app's share is lower; no more requests in this window (%.1f s)", b->name, op->admit.count, allowed,
            b->limit, b->seen_used, b->reset - snow);
  ok_admit_count_key(b, key);
  lua_pushinteger(c->L, allowed + 1);
  ok_op_queue_store(c, "incr", key, -1, b->reset - snow + 60);
  lua_pop(c->L, 1);
}

/* Okta's answer to a token it no longer accepts: a challenge, or (without one) a JSON E0000011
 * "Invalid token provided" body; the Node SDK drops its token and retries once on any 401. */
static int token_refused(const ok_answer *a) {
  return a->said == SAID_INVALID_TOKEN || (!a->www && a->code && strcmp(a->code, "E0000011") == 0);
}

int ok_retry_api(ok_ctx *c, const ok_answer *a, ok_decision *d) {
  ok_op *op = c->op;
  ok_session *s = c->s;
  long status = a->status;
  if ((status == 401 || status == 400) && a->said == SAID_NONCE && s->cfg.dpop && !op->retry.rs_nonce && a->nonce &&
      s->rs_nonce && strcmp(s->rs_nonce, a->nonce) == 0) {
    op->retry.rs_nonce = 1;
    ok_op_log(c, "resource server asked for a DPoP nonce: retrying once with it");
    return ok_decide(d, NEXT_DECIDE);
  }
  if (status == 400 && a->said == SAID_PROOF_REUSED && op->idempotent && !op->retry.replay) {
    op->retry.replay = 1;
    s->retries++;
    ok_op_log(c, "the server had seen this request's proof (the transport re-sent it after a lost connection): "
              "retrying once with a fresh one");
    return ok_decide(d, NEXT_DECIDE);
  }
  if (status == 429) learn_from_429(c, a);
  if (status == 401 && token_refused(a) && !op->retry.token_refreshed && s->token) {
    op->retry.token_refreshed = 1;
    memcpy(op->token.rejected, s->token_ath, sizeof op->token.rejected);
    ok_op_log(c, "access token refused (%s): fetching a new one once", a->said == SAID_INVALID_TOKEN ? "invalid_token" : a->code);
    return ok_decide(d, NEXT_DECIDE);
  }
  if (status == 429 && rate_limited(c, a, 0, d)) return 1;
  if (retryable_status(status) && op->idempotent && op->retry.server_errors < s->cfg.max_retries) {
    double wait = backoff(s, op->retry.server_errors++);
    s->retries++;
    ok_op_log(c, "server error %ld: retrying in %.2f s", status, wait);
    return ok_decide_sleep(d, wait, "server_error");
  }
  return 0;
}
