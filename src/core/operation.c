/* operation.c: the operation state machine. Rule 1, as h11 has it: everything that decides
 * what happens next lives here. An operation is a token fetch, one API call, or a walk over
 * pages (paginate, poll). Each step takes the driver's time and the answer to the last action;
 * the phase of that action names the rule that reads the answer (RULES below), the rule
 * decides (admission.c, retry.c, pages.c: they never call back), and perform() turns the
 * decision into the next action for the driver:
 *   send   the exact request to make (a fresh proof every time), with its timeout
 *   store  get/set/add/incr/delete on the store the driver keeps (the shared token state and
 *          its lock, concurrency slots, rate-limit counts); the answer is the store's
 *   sleep  wait `seconds` (`wait` says for what, with the server's figures), then step again
 *   items  a page for the caller (pages and polls), then step again
 *   done / fail
 * Store actions queued by a rule (releases, publications) go out before the action behind
 * them. Every action may carry `log`, lines for the debug log. Part of the core: no I/O. */
/*** @module oktadpop */
#include <math.h>
#include <string.h>
#include "core/op.h"

/* Steps without an answer from a server: a safety net (waits are bounded by time). */
#define OK_MAX_STEPS 10000

/* ---- what an answer means ---- */

/* The token endpoint answered (or nothing did). */
static int on_token(ok_ctx *c, int in, ok_decision *d) {
  ok_answer a;
  if (!lua_istable(c->L, in)) return luaL_error(c->L, "step expects the response to the token request");
  lua_getfield(c->L, in, "error");
  if (!lua_isnil(c->L, -1)) { lua_pop(c->L, 1); return ok_retry_lost(c, in, 1, d); } /* always safe: a fresh assertion */
  lua_pop(c->L, 1);
  ok_answer_read(c->L, in, &a);
  ok_answer_learn(c, &a, 1);
  ok_op_log(c, "token response: HTTP %ld%s", a.status, a.nonce ? " (with DPoP-Nonce)" : "");
  if (a.status != 200) return ok_retry_token(c, &a, d);
  if (!ok_admit_take_token(c, &a)) return ok_decide(d, NEXT_FAIL);
  return ok_decide(d, NEXT_DECIDE);
}

/* The management API answered (or nothing did): a retry or a wait, else the final answer. */
static int on_api(ok_ctx *c, int in, ok_decision *d) {
  ok_answer a;
  if (!lua_istable(c->L, in)) return luaL_error(c->L, "step expects the response to the request");
  ok_op_release_slot(c);
  c->op->admit.admitted = 0;
  lua_getfield(c->L, in, "error");
  if (!lua_isnil(c->L, -1)) {
    lua_pop(c->L, 1);
    if (c->op->admit.probing) ok_session_bucket(c->s, c->op->bucket)->probe_until = 0;
    if (c->op->admit.claim[0]) ok_op_queue_store(c, "delete", c->op->admit.claim, 0, 0); /* let another learn it */
    c->op->admit.claim[0] = '\0';
    c->op->admit.probing = 0;
    return ok_retry_lost(c, in, c->op->idempotent, d);
  }
  lua_pop(c->L, 1);
  ok_answer_read(c->L, in, &a);
  ok_answer_learn(c, &a, 0);
  ok_op_log(c, "%s %s -> HTTP %ld", c->op->method, c->op->url, a.status);
  if (ok_retry_api(c, &a, d)) return 1;
  return ok_pages_answer(c, a.ridx, d);
}

static int on_slot(ok_ctx *c, int in, ok_decision *d) { return ok_admit_on_slot(c, in, d); }
static int on_items(ok_ctx *c, int in, ok_decision *d) { (void)in; return ok_pages_after_items(c, d); }

typedef int (*rule)(ok_ctx *c, int in, ok_decision *d);

/* The phase of the last action -> the rule that reads its answer. PH_START (nothing asked, or
 * a sleep) decides afresh. */
static const rule RULES[PH_END] = {
    [PH_PEEK] = ok_admit_on_peek,     [PH_LOCK] = ok_admit_on_lock,     [PH_RECHECK] = ok_admit_on_recheck,
    [PH_TOKEN] = on_token,            [PH_SLOT] = on_slot,              [PH_SHAPE] = ok_admit_on_shape,
    [PH_BUDGET] = ok_admit_on_budget, [PH_API] = on_api,                [PH_ITEMS] = on_items,
    [PH_PROBE] = ok_admit_on_probe,   [PH_CAP] = ok_admit_on_cap,
};

/* What the operation needs now: a token (unless it holds a fresh one), then for a token
 * operation the token itself, for a request a slot, the budget, and to go out. */
static int needs(ok_ctx *c, ok_decision *d) {
  ok_op *op = c->op;
  ok_session *s = c->s;
  if (op->token.rejected[0] && s->token && strcmp(s->token_ath, op->token.rejected) == 0) ok_session_clear_token(s);
  if (!ok_token_fresh(s, c->now)) return ok_admit_token(c, d);
  if (op->kind == OK_OP_TOKEN) {
    ok_admit_push_token_done(c);
    d->phase = PH_END;
    return ok_decide(d, NEXT_EMIT);
  }
  return ok_admit_request(c, d);
}

/* ---- the next action ---- */

/* Hands the action on top to the driver: queued store actions go first (the action waits
 * behind them as `pending`); log lines ride on whichever leaves first. */
static int emit(ok_ctx *c, enum ok_phase phase) {
  lua_State *L = c->L;
  ok_op_uv_get(c, "queue");
  if (lua_istable(L, -1) && lua_rawlen(L, -1) > 0) {
    lua_pop(L, 1);
    ok_op_uv_set(c, "pending");
    c->op->pending_phase = phase;
    ok_op_pop_queued(c);
    phase = PH_QUEUED;
  } else {
    lua_pop(L, 1);
  }
  c->op->phase = phase;
  ok_op_uv_get(c, "log");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return 1; }
  lua_setfield(L, -2, "log");
  lua_pushnil(L);
  ok_op_uv_set(c, "log");
  return 1;
}

/* Sets field name of the table on top to v, when v is a known figure (not below 0). */
static void set_figure(lua_State *L, const char *name, double v) {
  if (v < 0) return;
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

/* {action="sleep", seconds=, wait={reason=, seconds=, until_time=, bucket=, limit=, remaining=,
 * reset=}}: the wait says what for, for a driver's on_wait hook (progress, not policy). */
static void push_sleep(ok_ctx *c, const ok_decision *d) {
  lua_State *L = c->L;
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "sleep"); lua_setfield(L, -2, "action");
  lua_pushnumber(L, d->seconds); lua_setfield(L, -2, "seconds");
  lua_createtable(L, 0, 7);
  lua_pushstring(L, d->why ? d->why : "queue"); lua_setfield(L, -2, "reason");
  lua_pushnumber(L, d->seconds); lua_setfield(L, -2, "seconds");
  lua_pushnumber(L, c->now + d->seconds); lua_setfield(L, -2, "until_time");
  if (d->bucket && *d->bucket) { lua_pushstring(L, d->bucket); lua_setfield(L, -2, "bucket"); }
  set_figure(L, "limit", d->limit);
  set_figure(L, "remaining", d->remaining);
  set_figure(L, "reset", d->reset);
  lua_setfield(L, -2, "wait");
}

/* The error on top ends the operation: what it holds is given back, and a walk says where to
 * resume (err.next). */
static int fail(ok_ctx *c) {
  lua_State *L = c->L;
  ok_op_release_slot(c);
  ok_op_release_lock(c);
  ok_pages_resume_point(c);
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "fail"); lua_setfield(L, -2, "action");
  lua_insert(L, -2);
  lua_setfield(L, -2, "error");
  return emit(c, PH_END);
}

/* The token request, with a fresh assertion and proof on the server's clock. */
static int send_token(ok_ctx *c) {
  ok_op *op = c->op;
  ok_session *s = c->s;
  long long iat = (long long)floor(ok_server_now(s, c->now));
  if (!ok_request_token(c->L, s, iat, op->retry.retry_for, op->retry.for_token ? op->retry.rate_limited : 0)) {
    lua_remove(c->L, -2);
    return fail(c);
  }
  op->token.sent_iat = iat;
  ok_op_set_str(&op->token.sent_nonce, s->cfg.dpop ? s->as_nonce : NULL);
  ok_op_log(c, "token request: POST %s (client_id %s, scope \"%s\", DPoP %s)", s->cfg.token_url, s->cfg.client_id,
            s->cfg.scopes, !s->cfg.dpop ? "off" : s->as_nonce ? "proof with nonce" : "proof without nonce");
  return emit(c, PH_TOKEN);
}

/* The API request, with a fresh proof, the caller's headers and body. */
static int send_api(ok_ctx *c) {
  lua_State *L = c->L;
  ok_op *op = c->op;
  int top = lua_gettop(L);
  ok_op_uv_get(c, "headers");
  ok_op_uv_get(c, "body");
  if (!ok_request_api(L, c->s, op->method, op->url, top + 1, top + 2, (long long)floor(ok_server_now(c->s, c->now)),
                      op->retry.retry_for, op->retry.for_token ? 0 : op->retry.rate_limited)) {
    lua_remove(L, -2);
    return fail(c);
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  op->admit.backoff = 0;
  ok_op_log(c, "%s %s", op->method, op->url);
  return emit(c, PH_API);
}

/* Turns a decision into the next action (on top); a decision to decide afresh loops, bounded
 * because every such path either sends, sleeps, asks the store or ends. */
static int perform(ok_ctx *c, ok_decision *d) {
  for (;;) {
    switch (d->next) {
    case NEXT_DECIDE: needs(c, d); continue;
    case NEXT_STORE: {
      int vidx = d->has_value ? lua_gettop(c->L) : 0;
      ok_op_push_store(c, d->store_op, d->key, vidx, d->ttl);
      if (vidx) lua_remove(c->L, vidx);
      return emit(c, d->phase);
    }
    case NEXT_SLEEP: push_sleep(c, d); return emit(c, PH_START);
    case NEXT_SEND_TOKEN: return send_token(c);
    case NEXT_SEND: return send_api(c);
    case NEXT_EMIT: return emit(c, d->phase);
    case NEXT_FAIL: return fail(c);
    }
  }
}

/* The next store action of the queue, or the action that waited behind it. */
static int from_queue(ok_ctx *c) {
  if (ok_op_pop_queued(c)) return 1;
  ok_op_uv_get(c, "pending");
  lua_pushnil(c->L);
  ok_op_uv_set(c, "pending");
  c->op->phase = c->op->pending_phase;
  if (!lua_isnil(c->L, -1)) return 1;
  lua_pop(c->L, 1);
  {
    ok_decision d = {NEXT_DECIDE, PH_START, NULL, "", 0, 0, 0, NULL, NULL, -1, -1, -1};
    return perform(c, &d);
  }
}

int ok_op_step(lua_State *L, int opidx, int inidx, double now) {
  ok_ctx c = {L, lua_absindex(L, opidx), luaL_checkudata(L, opidx, OK_OP_MT), NULL, now};
  ok_decision d = {NEXT_DECIDE, PH_START, NULL, "", 0, 0, 0, NULL, NULL, -1, -1, -1};
  int in = inidx ? lua_absindex(L, inidx) : 0;
  rule r;
  if (!in) { lua_pushnil(L); in = lua_gettop(L); }
  if (c.op->phase == PH_END) return luaL_error(L, "operation already finished");
  ok_op_uv_get(&c, "session");
  c.s = ok_session_check(L, -1);
  if (!ok_session_usable(L, -1)) { lua_remove(L, -2); return fail(&c); }
  lua_pop(L, 1); /* the uservalue keeps it */
  if (!c.op->started) { /* the first step knows the time */
    c.op->started = 1;
    ok_op_new_request(c.op, now, c.s);
    if (c.op->walk.stop_at < OK_NO_LIMIT) c.op->walk.stop_at += now;
  }
  if (c.op->phase == PH_TOKEN || c.op->phase == PH_API) c.op->steps = 0; /* a server answered */
  if (++c.op->steps > OK_MAX_STEPS) {
    ok_error_push(L, "network", "gave up after %d steps without an answer from the server", OK_MAX_STEPS);
    return fail(&c);
  }
  if (c.op->phase == PH_QUEUED) return from_queue(&c);
  if ((r = RULES[c.op->phase])) r(&c, in, &d);
  return perform(&c, &d);
}

int ok_op_abort(lua_State *L, int opidx) {
  ok_ctx c = {L, lua_absindex(L, opidx), luaL_checkudata(L, opidx, OK_OP_MT), NULL, 0};
  ok_op_uv_get(&c, "session");
  c.s = ok_session_check(L, -1);
  lua_pop(L, 1);
  c.op->token.lock_until = HUGE_VAL; /* no clock here: give the lock back as long as it was held */
  ok_op_release_slot(&c);
  ok_op_release_lock(&c);
  c.op->phase = PH_END;
  ok_op_uv_get(&c, "queue");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
  lua_pushnil(L);
  ok_op_uv_set(&c, "queue");
  return 1;
}
