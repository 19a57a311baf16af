/* op.h: the operation's private parts, shared by the four files of the state machine:
 * operation.c (the machinery: actions out, answers in), admission.c (what must hold before a
 * request goes out: a token, a concurrency slot, the rate-limit budget), retry.c (what each
 * answer means) and pages.c (the pagination cursor). Part of the core: no I/O. */
#ifndef OKTADPOP_OP_H
#define OKTADPOP_OP_H

#include "core.h"

#define OK_NO_LIMIT 1e15 /* pages, items or seconds: more than any walk will see */

/* What the last action was, so that the next answer is understood. */
enum ok_phase { PH_START, PH_PEEK, PH_LOCK, PH_RECHECK, PH_TOKEN, PH_SLOT, PH_SHAPE, PH_BUDGET, PH_API, PH_ITEMS, PH_QUEUED, PH_END };

typedef struct ok_op {
  enum ok_op_kind kind;
  enum ok_phase phase, then_phase; /* then_phase: of the action waiting behind queued store actions */
  int idempotent, steps, started;
  char *method, *url, *next;       /* url: this request (this page); next: the page after it */
  char *retry_for;                 /* X-Okta-Request-Id of the last 429 */
  char *sent_nonce;                /* the nonce the last token request's proof carried */
  char rejected[44];               /* ath of a token not to adopt again (refused, or being replaced) */
  char bucket[OK_BUCKET_NAME];
  int nonce_tries, rs_nonce_retried, token_refreshed, rl_retries, srv_retries, skew_retried, replay_retried;
  int holds_lock, holds_slot, admitted, probing, shape_asked; /* shape: a bucket's limit and window */
  int retry_is_token;              /* the last 429 was the token endpoint's: its retry headers go there */
  long long sent_iat;              /* of the last token request */
  double lock_until, lock_give_up, queue_deadline, wait;
  double interval, stop_at, max_pages, max_items, pages, items;
  double skip;                     /* items of the page at url handed out when max_items cut it */
} ok_op;

/* Everything a rule needs: the operation and its index, its session, the driver's time. */
typedef struct ok_ctx {
  lua_State *L;
  int opidx;
  ok_op *op;
  ok_session *s;
  double now;
} ok_ctx;

/* ---- operation.c ---- */
void ok_op_set_str(char **slot, const char *s);
void ok_op_uv_get(ok_ctx *c, const char *field);
void ok_op_log(ok_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queues a store action whose answer is not needed (releases, publishing); vidx: its value. */
void ok_op_queue_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl);
void ok_op_release_slot(ok_ctx *c);
void ok_op_release_lock(ok_ctx *c);
/* Each returns the action (on top) that the step hands to the driver. */
int ok_op_emit(ok_ctx *c, enum ok_phase phase);
int ok_op_emit_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl, enum ok_phase phase);
/* What a sleep waits for, for the drivers' on_wait hook: the bucket and the server's figures
 * (a figure below 0 is unknown and left out). */
typedef struct ok_wait_figures { const char *bucket; double limit, remaining, reset; } ok_wait_figures;
/* A sleep whose action carries wait = {reason=, seconds=, until_time=, bucket=, limit=,
 * remaining=, reset=}; reason: ratelimit, retry, server_error, poll, queue or token_lock. */
int ok_op_emit_sleep(ok_ctx *c, double seconds, const char *reason, const ok_wait_figures *figures);
/* The error object on top as a fail action (pages: err.next says where to resume). */
int ok_op_emit_fail(ok_ctx *c);
/* The nil, err pair on top as a fail action. */
int ok_op_fail_pushed(ok_ctx *c);
/* Poll waits (the token lock, a slot) back off from 20 ms to 250 ms. */
double ok_op_next_wait(ok_op *op);
/* Decides afresh what the operation needs next: a token, then its request. */
int ok_op_advance(ok_ctx *c);
/* Forgets the retry counts of a request (each page starts afresh). */
void ok_op_new_request(ok_op *op, double now, const ok_session *s);

/* ---- admission.c ---- */
int ok_admit_token(ok_ctx *c);
int ok_admit_send_token(ok_ctx *c);
int ok_admit_on_peek(ok_ctx *c, int in);
int ok_admit_on_lock(ok_ctx *c, int in);
int ok_admit_on_recheck(ok_ctx *c, int in);
int ok_admit_request(ok_ctx *c);
int ok_admit_on_slot(ok_ctx *c, int in);
int ok_admit_on_shape(ok_ctx *c, int in);
int ok_admit_on_budget(ok_ctx *c, int in);
/* A probe learned bucket b: counts the probe in its window and publishes the bucket's limit. */
void ok_admit_probe_learned(ok_ctx *c, const ok_bucket *b);
/* Stores a 200 token response (result at ridx) and publishes it; 1, or 0 with an error pushed. */
int ok_admit_take_token(ok_ctx *c, int ridx);
/* Pushes {action="done", token=, info=} for a token operation. */
int ok_admit_token_done(ok_ctx *c);

/* ---- retry.c ---- */
int ok_retry_on_token(ok_ctx *c, int in);
int ok_retry_on_api(ok_ctx *c, int in);

/* ---- pages.c ---- */
/* The final answer to a request: done for a call; items, a sleep or done for pages. */
int ok_pages_answer(ok_ctx *c, int residx);
/* After the caller has had a page: the next one, or the end. */
int ok_pages_after_items(ok_ctx *c);

#endif
