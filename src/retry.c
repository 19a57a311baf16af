/* retry.c: what each answer means: the retry policy of the token endpoint and of the
 * management API, in one place for every driver.
 *   token endpoint: use_dpop_nonce retried with the server's nonce (at most twice, never with a
 *     nonce it just refused); an assertion or proof refused while the server's Date is more than
 *     30 s off the iat we sent is retried once on the server's clock; 429 after its reset;
 *     502/503/504 and lost connections with backoff (a token request is always safe to repeat:
 *     each carries a fresh assertion).
 *   API: a resource nonce challenge retried once; 401 invalid_token refreshes the token once;
 *     a proof Okta says was already used (the transport re-sent a request whose connection
 *     died after it went out: libcurl does that on a reused connection) retried once with a
 *     fresh proof on idempotent methods; 429 after its reset; 502/503/504 and lost connections with capped, jittered backoff on
 *     idempotent methods only. A 500 is answered at once: Okta's E0000009 is a query timeout
 *     that repeating will not cure (Okta's SDKs retry 429, and Java 503/504, never 500).
 * Part of the core: no I/O. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include "op.h"

#define OK_TOKEN_NONCE_TRIES 2
#define OK_SKEW_RETRY 30.0

/* Pushes the response at in as a result table (its index in *ridx) and that table's headers
 * (*hidx); returns the status. */
static long open_response(lua_State *L, int in, int *ridx, int *hidx) {
  long status;
  lua_getfield(L, in, "status");
  status = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  ok_result_response(L, in);
  *ridx = lua_gettop(L);
  lua_getfield(L, *ridx, "headers");
  *hidx = lua_gettop(L);
  return status;
}

static int retryable_status(long status) { return status == 502 || status == 503 || status == 504; }

/* retry_base * 2^n capped by max_retry_wait, with jitter in [half, whole] so that many
 * clients do not retry in step. */
static double backoff(const ok_session *s, int attempt) {
  unsigned char r = 255;
  double w = fmin(s->cfg.retry_base * pow(2, attempt), s->cfg.max_retry_wait);
  if (RAND_bytes(&r, 1) != 1) r = 255;
  return w * (0.5 + (double)r / 510.0);
}

/* A lost connection or timeout (in.error): retried when safe, else the error. */
static int on_no_response(ok_ctx *c, int in, int safe) {
  lua_State *L = c->L;
  lua_getfield(L, in, "error");
  if (safe && c->op->srv_retries < c->s->cfg.max_retries) {
    double wait = backoff(c->s, c->op->srv_retries++);
    lua_getfield(L, -1, "message");
    ok_op_log(c, "no response (%s): retrying in %.2f s", lua_tostring(L, -1), wait);
    lua_pop(L, 2);
    c->s->retries++;
    return ok_op_emit_sleep(c, wait, "server_error", NULL);
  }
  if (!lua_istable(L, -1)) { lua_pop(L, 1); ok_error_push(L, "network", "the transport answered nothing"); }
  return ok_op_emit_fail(c);
}

/* A 429: waited out on the server's clock, up to max_retries times; one whose reset is
 * further away than max_retry_wait is answered at once (err.retry_after says when), not
 * retried early into another 429. Returns 0 when it is not retried. */
static int on_rate_limited(ok_ctx *c, int hidx) {
  double wait = ok_result_rate_wait(c->L, hidx, ok_server_now(c->s, c->now));
  ok_wait_figures f = {c->op->phase == PH_TOKEN ? "/oauth2" : c->op->bucket,
                       ok_header_min(ok_header(c->L, hidx, "x-rate-limit-limit")),
                       ok_header_min(ok_header(c->L, hidx, "x-rate-limit-remaining")),
                       ok_header_min(ok_header(c->L, hidx, "x-rate-limit-reset"))}; /* the 429's own figures */
  if (c->op->rl_retries >= c->s->cfg.max_retries || wait > c->s->cfg.max_retry_wait) return 0;
  ok_op_set_str(&c->op->retry_for, ok_header(c->L, hidx, "x-okta-request-id"));
  c->op->retry_is_token = c->op->phase == PH_TOKEN;
  c->op->rl_retries++;
  c->s->rate_waits++;
  ok_op_log(c, "rate limited (429): waiting %.1f s (retry %d of %.0f)", wait, c->op->rl_retries, c->s->cfg.max_retries);
  return ok_op_emit_sleep(c, wait, "retry", &f);
}

/* ---- the token endpoint ---- */

/* The response (its result table at ridx) as an OAuth error, failed. */
static int token_failed(ok_ctx *c, int ridx, const char *what) {
  lua_pushfstring(c->L, "%s (POST %s)", what, c->s->cfg.token_url);
  ok_result_http_error(c->L, ridx, lua_tostring(c->L, -1), ok_server_now(c->s, c->now));
  lua_pushliteral(c->L, "oauth");
  lua_setfield(c->L, -2, "kind");
  return ok_op_emit_fail(c);
}

static int nonce_retry(ok_ctx *c, int ridx, const char *nonce) {
  ok_op *op = c->op;
  if (nonce && c->s->as_nonce && strcmp(c->s->as_nonce, nonce) == 0 && op->nonce_tries < OK_TOKEN_NONCE_TRIES &&
      !(op->sent_nonce && strcmp(op->sent_nonce, nonce) == 0)) {
    op->nonce_tries++;
    ok_op_log(c, "token endpoint asked for a DPoP nonce: retrying with the server's nonce");
    return ok_admit_send_token(c);
  }
  return token_failed(c, ridx, nonce ? "the token endpoint keeps refusing the DPoP nonce"
                                     : "the token endpoint asked for a DPoP nonce but sent none");
}

/* An assertion or proof refused while our clock was off: the offset is learned (from this
 * very response) and the request made once more with a fresh assertion and proof. */
static int skewed(ok_ctx *c, const char *code, const char *date) {
  double d = date ? ok_http_date(date) : -1;
  if (c->op->skew_retried || d <= 0 || fabs(d - (double)c->op->sent_iat) <= OK_SKEW_RETRY) return 0;
  if (!code || (strcmp(code, "invalid_client") != 0 && strcmp(code, "invalid_dpop_proof") != 0)) return 0;
  return fabs(ok_server_now(c->s, c->now) - d) < OK_SKEW_RETRY; /* the offset was adopted (it is within the cap) */
}

int ok_retry_on_token(ok_ctx *c, int in) {
  lua_State *L = c->L;
  long status;
  int ridx, hidx;
  const char *code;
  if (!lua_istable(L, in)) return luaL_error(L, "step expects the response to the token request");
  lua_getfield(L, in, "error");
  if (!lua_isnil(L, -1)) { lua_pop(L, 1); return on_no_response(c, in, 1); }
  lua_pop(L, 1);
  status = open_response(L, in, &ridx, &hidx);
  ok_session_learn(c->s, 1, ok_header(L, hidx, "dpop-nonce"), ok_header(L, hidx, "date"), c->now);
  ok_op_log(c, "token response: HTTP %ld%s", status, ok_header(L, hidx, "dpop-nonce") ? " (with DPoP-Nonce)" : "");
  if (status == 200) {
    if (!ok_admit_take_token(c, ridx)) return ok_op_emit_fail(c);
    return ok_op_advance(c);
  }
  lua_getfield(L, ridx, "body");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "error"); else lua_pushnil(L);
  code = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (status == 400 && code && strcmp(code, "use_dpop_nonce") == 0 && c->s->cfg.dpop)
    return nonce_retry(c, ridx, ok_header(L, hidx, "dpop-nonce"));
  if ((status == 400 || status == 401) && skewed(c, code, ok_header(L, hidx, "date"))) {
    c->op->skew_retried = 1;
    ok_op_log(c, "token endpoint refused the assertion (%s) and its clock is %.0f s off ours: retrying on its clock",
              code, c->s->clock_offset);
    return ok_admit_send_token(c);
  }
  if (status == 429 && on_rate_limited(c, hidx)) return 1;
  if (retryable_status(status) && c->op->srv_retries < c->s->cfg.max_retries)
    return ok_op_emit_sleep(c, backoff(c->s, c->op->srv_retries++), "server_error", NULL);
  return token_failed(c, ridx, "token request failed");
}

/* ---- the management API ---- */

enum { SAID_OTHER, SAID_NONCE, SAID_INVALID_TOKEN, SAID_PROOF_REUSED };

/* What a challenge says. */
static int challenge(const char *www) {
  char *err = www ? ok_www_auth_param(www, strlen(www), "error") : NULL;
  char *why = err && strcmp(err, "invalid_dpop_proof") == 0 ? ok_www_auth_param(www, strlen(www), "error_description") : NULL;
  int kind = !err ? SAID_OTHER : strcmp(err, "use_dpop_nonce") == 0 ? SAID_NONCE
           : strcmp(err, "invalid_token") == 0 ? SAID_INVALID_TOKEN
           : why && strstr(why, OK_PROOF_REUSED_TEXT) ? SAID_PROOF_REUSED : SAID_OTHER;
  free(err);
  free(why);
  return kind;
}

/* Takes in what the response says about the bucket, the nonce and the clock. A request sent
 * to learn an unknown bucket is counted in the window it turned out to be in, like the rest,
 * and what it learned is published for the others sharing the store. */
static void learn(ok_ctx *c, int hidx) {
  lua_State *L = c->L;
  ok_bucket *b = ok_session_bucket(c->s, c->op->bucket);
  int known = ok_bucket_observe(b, ok_header(L, hidx, "x-rate-limit-limit"), ok_header(L, hidx, "x-rate-limit-remaining"),
                                ok_header(L, hidx, "x-rate-limit-reset"));
  ok_session_learn(c->s, 0, ok_header(L, hidx, "dpop-nonce"), ok_header(L, hidx, "date"), c->now);
  if (c->op->probing && known) {
    ok_admit_probe_learned(c, b);
  } else if (c->op->probing) {
    b->probe_until = 0; /* no headers: nothing to learn, let the next one go */
  }
  c->op->probing = 0;
}

static int retried(ok_ctx *c, long status, int hidx) {
  ok_op *op = c->op;
  ok_session *s = c->s;
  const char *nonce = ok_header(c->L, hidx, "dpop-nonce");
  int said = challenge(ok_header(c->L, hidx, "www-authenticate"));
  if ((status == 401 || status == 400) && said == SAID_NONCE && s->cfg.dpop && !op->rs_nonce_retried && nonce && s->rs_nonce &&
      strcmp(s->rs_nonce, nonce) == 0) {
    op->rs_nonce_retried = 1;
    ok_op_log(c, "resource server asked for a DPoP nonce: retrying once with it");
    return ok_op_advance(c);
  }
  if (status == 400 && said == SAID_PROOF_REUSED && op->idempotent && !op->replay_retried) {
    op->replay_retried = 1;
    s->retries++;
    ok_op_log(c, "the server had seen this request's proof (the transport re-sent it after a lost connection): "
              "retrying once with a fresh one");
    return ok_op_advance(c);
  }
  if (status == 401 && said == SAID_INVALID_TOKEN && !op->token_refreshed && s->token) {
    op->token_refreshed = 1;
    memcpy(op->rejected, s->token_ath, sizeof op->rejected);
    ok_op_log(c, "access token refused (invalid_token): fetching a new one once");
    return ok_op_advance(c);
  }
  if (status == 429 && on_rate_limited(c, hidx)) return 1;
  if (retryable_status(status) && op->idempotent && op->srv_retries < s->cfg.max_retries) {
    double wait = backoff(s, op->srv_retries++);
    s->retries++;
    ok_op_log(c, "server error %ld: retrying in %.2f s", status, wait);
    return ok_op_emit_sleep(c, wait, "server_error", NULL);
  }
  return 0;
}

int ok_retry_on_api(ok_ctx *c, int in) {
  lua_State *L = c->L;
  int ridx, hidx, r;
  long status;
  if (!lua_istable(L, in)) return luaL_error(L, "step expects the response to the request");
  ok_op_release_slot(c);
  c->op->admitted = 0;
  lua_getfield(L, in, "error");
  if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    c->op->probing = 0;
    ok_session_bucket(c->s, c->op->bucket)->probe_until = 0;
    return on_no_response(c, in, c->op->idempotent);
  }
  lua_pop(L, 1);
  status = open_response(L, in, &ridx, &hidx);
  learn(c, hidx);
  ok_op_log(c, "%s %s -> HTTP %ld", c->op->method, c->op->url, status);
  if ((r = retried(c, status, hidx))) return r;
  lua_settop(L, ridx);
  return ok_pages_answer(c, ridx);
}
