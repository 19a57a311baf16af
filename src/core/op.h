/* op.h: the operation state machine's parts, shared by the files of the core that run it:
 *   operation.c  every transition: the phase of the last action says which rule reads its
 *                answer, and each rule's decision becomes the next action (h11's Rule 1);
 *   admission.c  what must hold before a request goes out: a token, a slot, the budget;
 *   retry.c      what a server's answer means: a retry, a wait, or final;
 *   pages.c      the final answer of a call, and the pagination cursor;
 *   answer.c     a response read once: its headers, and what the session learns from them;
 *   opstate.c    the operation's own state: strings, queued store actions, log lines.
 * The rules take the operation and an answer and return a decision; none of them calls back
 * into operation.c, so the object files form no circle (spec/build_spec.lua). No I/O. */
#ifndef OKTADPOP_OP_H
#define OKTADPOP_OP_H

#include "core/core.h"

#define OK_NO_LIMIT 1e15 /* pages, items or seconds: more than any walk will see */
#define OK_STORE_KEY 96  /* room for a store key after its prefix */

/* What the last action was, so that its answer goes to the right rule. */
enum ok_phase {
  PH_START,   /* nothing asked yet, or a sleep: decide afresh */
  PH_PEEK,    /* store get of the shared token state */
  PH_LOCK,    /* store add of the token lock */
  PH_RECHECK, /* store get of the token state, the lock held */
  PH_TOKEN,   /* the token request */
  PH_SLOT,    /* store incr of the in-flight count */
  PH_SHAPE,   /* store get of a bucket's limit another process learned */
  PH_BUDGET,  /* store incr of the bucket's window count */
  PH_PROBE,   /* store add of the claim to learn a bucket */
  PH_CAP,     /* store get of the concurrency cap another process learned */
  PH_API,     /* the API request */
  PH_ITEMS,   /* a page handed to the caller */
  PH_QUEUED,  /* a queued store action (a release, a publication) */
  PH_END
};

/* What a rule decided; operation.c turns it into the driver's action. */
enum ok_next {
  NEXT_DECIDE,     /* decide afresh what the operation needs: a token, a slot, the budget, the request */
  NEXT_STORE,      /* ask the store (store_op on key, the value on top when has_value); the answer goes to phase */
  NEXT_SLEEP,      /* wait seconds (why says for what), then decide afresh */
  NEXT_SEND_TOKEN, /* the token request, with a fresh assertion and proof */
  NEXT_SEND,       /* the API request, with a fresh proof */
  NEXT_EMIT,       /* the action table on top goes to the driver as it is; phase: what its answer means */
  NEXT_FAIL        /* the operation ends with the error object on top */
};

typedef struct ok_decision {
  enum ok_next next;
  enum ok_phase phase;
  const char *store_op;    /* get, set, add, incr, delete */
  char key[OK_STORE_KEY];  /* under the token's or the app's prefix (opstate.c decides which) */
  double ttl, seconds;
  int has_value;
  const char *why;         /* of a sleep: ratelimit, retry, server_error, poll, queue, token_lock */
  const char *bucket;      /* of a sleep, for progress: the bucket and the server's figures (-1: unknown) */
  double limit, remaining, reset;
} ok_decision;

/* The operation. Its uservalue table holds the Lua values: session, headers and body (the
 * caller's), queue (store actions to run first), pending (the action behind them), log (lines
 * for the next action), visited and visited_before (a walk's pages). */
typedef struct ok_op {
  enum ok_op_kind kind;
  enum ok_phase phase, pending_phase; /* pending_phase: of the action waiting behind the queue */
  int steps, started;
  char *method, *url, *next;          /* url: this request (this page); next: the page after it */
  int idempotent;
  char bucket[OK_BUCKET_NAME];
  struct {                            /* the token */
    int holds_lock;
    double lock_until, give_up;
    char rejected[44];                /* ath of a token not to adopt again (refused, or being replaced) */
    long long sent_iat;               /* of the last token request */
    char *sent_nonce;                 /* the nonce its proof carried */
  } token;
  struct {                            /* a slot and the budget */
    int holds_slot, admitted, probing, shape_asked;
    long count;                       /* the request's number in its window, when it was admitted */
    double inflight;                  /* the in-flight count when it took its slot */
    double queue_deadline, backoff;   /* backoff: of the polls for the lock or a slot */
    char claim[OK_STORE_KEY];         /* the probe claim it holds, or "" */
  } admit;
  struct {                            /* the retries of this request; each page starts afresh */
    int nonce_tries, rs_nonce, token_refreshed, rate_limited, server_errors, skew, replay;
    int for_token;                    /* the last 429 was the token endpoint's */
    char *retry_for;                  /* X-Okta-Request-Id of that 429 */
  } retry;
  struct {                            /* a page walk */
    double interval, stop_at, max_pages, max_items, pages, items;
    double skip;                      /* items of the page at url handed out when max_items cut it */
    int visited;                      /* pages in the newest generation of the visited set */
  } walk;
} ok_op;

/* Everything a rule needs: the operation and its stack index, its session, the driver's time. */
typedef struct ok_ctx {
  lua_State *L;
  int opidx;
  ok_op *op;
  ok_session *s;
  double now;
} ok_ctx;

/* A response, read once (answer.c): the result table and its headers on the stack, and the
 * fields every rule reads. */
enum ok_challenge { SAID_OTHER, SAID_NONCE, SAID_INVALID_TOKEN, SAID_PROOF_REUSED };
typedef struct ok_answer {
  long status;
  int ridx, hidx;                     /* the result table ({status, headers, body, next}) and its headers */
  const char *nonce, *date, *www, *request_id, *link_next;
  const char *rl_limit, *rl_remaining, *rl_reset;
  const char *code;                   /* a JSON body's error (OAuth) or errorCode (Okta) */
  enum ok_challenge said;             /* what WWW-Authenticate says */
} ok_answer;

/* ---- opstate.c ---- */
void ok_op_set_str(char **slot, const char *s);
void ok_op_uv_get(ok_ctx *c, const char *field);
/* Sets field of the uservalue to the value on top (popped). */
void ok_op_uv_set(ok_ctx *c, const char *field);
/* Pushes the table in field, made when missing. */
void ok_op_uv_table(ok_ctx *c, const char *field);
void ok_op_log(ok_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Pushes {action="store", op=, key=<prefix><key>, value= (at vidx, 0: none), ttl=}: the
 * token's keys under the token's prefix, the rest (the budget) under the app's. */
void ok_op_push_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl);
/* Queues a store action whose answer is not needed (a release, a publication). */
void ok_op_queue_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl);
/* Takes the first queued store action onto the stack; 0 when none. */
int ok_op_pop_queued(ok_ctx *c);
void ok_op_release_slot(ok_ctx *c);
void ok_op_release_lock(ok_ctx *c);
/* Forgets the retries of a request (each page starts afresh) and restarts its queue wait. */
void ok_op_new_request(ok_op *op, double now, const ok_session *s);
/* Poll waits (the token lock, a slot) back off from 20 ms to 250 ms. */
double ok_op_next_backoff(ok_op *op);

/* Decision makers (each fills *d and returns 1, so `return decide_x(...)` reads as it does). */
int ok_decide(ok_decision *d, enum ok_next next);
int ok_decide_sleep(ok_decision *d, double seconds, const char *why);
/* The same, with the bucket it waits for and the server's figures (below 0: unknown). */
int ok_decide_wait(ok_decision *d, double seconds, const char *why, const char *bucket, double limit, double remaining,
                   double reset);
int ok_decide_store(ok_decision *d, const char *op, const char *key, int has_value, double ttl, enum ok_phase phase);

/* ---- answer.c ---- */
/* Reads the response at in (a driver's {status, headers, body}) into a: the result table and
 * its headers pushed, each field read once. */
void ok_answer_read(lua_State *L, int in, ok_answer *a);
/* What every response teaches the session: the server's nonce and clock, and (API) the bucket. */
void ok_answer_learn(ok_ctx *c, const ok_answer *a, int is_token);

/* ---- admission.c ---- */
/* What a token operation, or a request without a fresh token, does first. */
int ok_admit_token(ok_ctx *c, ok_decision *d);
int ok_admit_on_peek(ok_ctx *c, int in, ok_decision *d);
int ok_admit_on_lock(ok_ctx *c, int in, ok_decision *d);
int ok_admit_on_recheck(ok_ctx *c, int in, ok_decision *d);
/* Stores a 200 token response (the answer a), publishes it and gives the lock back; 1, or 0
 * with an error object pushed. */
int ok_admit_take_token(ok_ctx *c, const ok_answer *a);
/* Pushes {action="done", token=, info=} for a token operation. */
void ok_admit_push_token_done(ok_ctx *c);
/* What a request with a fresh token needs next: a slot, the budget, or to go out. */
int ok_admit_request(ok_ctx *c, ok_decision *d);
int ok_admit_on_slot(ok_ctx *c, int in, ok_decision *d);
int ok_admit_on_shape(ok_ctx *c, int in, ok_decision *d);
int ok_admit_on_budget(ok_ctx *c, int in, ok_decision *d);
int ok_admit_on_probe(ok_ctx *c, int in, ok_decision *d);
int ok_admit_on_cap(ok_ctx *c, int in, ok_decision *d);
/* A probe's answer: with rate-limit headers (described), the probe is counted in its window,
 * a bucket it counts with is found, and the bucket is published; without, the bucket is
 * marked as none for a window. */
void ok_admit_probe_learned(ok_ctx *c, ok_bucket *b, int described);
/* The store key of bucket b's window count. */
void ok_admit_count_key(const ok_bucket *b, char key[OK_STORE_KEY]);

/* ---- retry.c ---- */
/* No response (in.error: a lost connection, a timeout): a retry when safe, else the error. */
int ok_retry_lost(ok_ctx *c, int in, int safe, ok_decision *d);
/* The token endpoint's answer other than 200: a retry, a wait or the OAuth error. */
int ok_retry_token(ok_ctx *c, const ok_answer *a, ok_decision *d);
/* The management API's answer: 1 with a retry or a wait decided, 0 when the answer is final. */
int ok_retry_api(ok_ctx *c, const ok_answer *a, ok_decision *d);

/* ---- pages.c ---- */
/* The final answer of a request (its result table at ridx): done for a call; items, a sleep or
 * done for a walk. */
int ok_pages_answer(ok_ctx *c, int ridx, ok_decision *d);
/* After the caller has had a page: the next one, or the end. */
int ok_pages_after_items(ok_ctx *c, ok_decision *d);
/* Adds err.next (where to resume) to the error on top, for a walk that fails. */
void ok_pages_resume_point(ok_ctx *c);

#endif
