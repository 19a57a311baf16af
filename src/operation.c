/* operation.c: the operation state machine's machinery. An operation is a token fetch, one API
 * call, or a walk over pages (paginate, poll). Each step takes the driver's time and the
 * answer to the last action, and returns the next action:
 *   send   the exact request to make (a fresh proof every time), with its timeout
 *   store  get/set/add/incr/delete on the store the driver keeps (the shared token state and
 *          its lock, concurrency slots, rate-limit counts); the answer is the store's
 *   sleep  wait, then step again
 *   items  a page for the caller (pages and polls), then step again
 *   done / fail
 * Every action may carry `log`, lines for the debug log. The rules live in admission.c,
 * retry.c and pages.c. Part of the core: no I/O. */
/*** @module oktadpop */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"

/* Steps without an answer from a server: a safety net (waits are bounded by time). */
#define OK_MAX_STEPS 10000
#define OK_WAIT_MIN 0.02
#define OK_WAIT_MAX 0.25

void ok_op_set_str(char **slot, const char *s) {
  char *old = *slot;
  size_t n = s ? strlen(s) + 1 : 0;
  *slot = s ? malloc(n) : NULL;
  if (*slot) memcpy(*slot, s, n);
  free(old);
}

/* The uservalue holds: s (session), h and b (the caller's headers and body), q (queued store
 * actions), then (the action behind them), log (lines for the next action). */
void ok_op_uv_get(ok_ctx *c, const char *field) {
  lua_getuservalue(c->L, c->opidx);
  lua_getfield(c->L, -1, field);
  lua_remove(c->L, -2);
}

static void uv_set(ok_ctx *c, const char *field) { /* pops the value */
  lua_getuservalue(c->L, c->opidx);
  lua_insert(c->L, -2);
  lua_setfield(c->L, -2, field);
  lua_pop(c->L, 1);
}

/* The list in field, made when missing, on top. */
static void uv_list(ok_ctx *c, const char *field) {
  ok_op_uv_get(c, field);
  if (!lua_isnil(c->L, -1)) return;
  lua_pop(c->L, 1);
  lua_newtable(c->L);
  lua_pushvalue(c->L, -1);
  uv_set(c, field);
}

void ok_op_log(ok_ctx *c, const char *fmt, ...) {
  char line[600];
  va_list ap;
  if (!c->s->cfg.debug) return;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  uv_list(c, "log");
  lua_pushstring(c->L, line);
  lua_rawseti(c->L, -2, (int)lua_rawlen(c->L, -2) + 1);
  lua_pop(c->L, 1);
}

/* Pushes {action="store", op=, key=<prefix><key>, value=, ttl=}: the token's keys under the
 * token's prefix, the rest (the budget) under the app's. */
static void push_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl) {
  lua_State *L = c->L;
  int token_key = strcmp(key, "state") == 0 || strcmp(key, "lock") == 0;
  lua_createtable(L, 0, 5);
  lua_pushliteral(L, "store"); lua_setfield(L, -2, "action");
  lua_pushstring(L, op); lua_setfield(L, -2, "op");
  lua_pushfstring(L, "%s%s", token_key ? c->s->store_prefix : c->s->app_prefix, key); lua_setfield(L, -2, "key");
  if (vidx) { lua_pushvalue(L, vidx); lua_setfield(L, -2, "value"); }
  if (ttl > 0) { lua_pushnumber(L, ceil(ttl)); lua_setfield(L, -2, "ttl"); }
}

void ok_op_queue_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl) {
  vidx = vidx ? lua_absindex(c->L, vidx) : 0;
  uv_list(c, "q");
  push_store(c, op, key, vidx, ttl);
  lua_rawseti(c->L, -2, (int)lua_rawlen(c->L, -2) + 1);
  lua_pop(c->L, 1);
}

void ok_op_release_slot(ok_ctx *c) {
  if (!c->op->holds_slot) return;
  c->op->holds_slot = 0;
  lua_pushinteger(c->L, -1);
  ok_op_queue_store(c, "incr", "inflight", -1, 0);
  lua_pop(c->L, 1);
}

/* The lock is deleted only while it is surely still ours (its ttl has not run out). */
void ok_op_release_lock(ok_ctx *c) {
  if (!c->op->holds_lock) return;
  c->op->holds_lock = 0;
  if (c->now < c->op->lock_until - 1) ok_op_queue_store(c, "delete", "lock", 0, 0);
}

/* Takes the first queued store action off the queue, onto the stack; 0 when none. */
static int pop_queued(ok_ctx *c) {
  lua_State *L = c->L;
  int n;
  ok_op_uv_get(c, "q");
  n = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
  if (!n) { lua_pop(L, 1); return 0; }
  lua_rawgeti(L, -1, 1);
  for (int i = 1; i < n; i++) { lua_rawgeti(L, -2, i + 1); lua_rawseti(L, -3, i); } /* two or three at most */
  lua_pushnil(L);
  lua_rawseti(L, -3, n);
  lua_remove(L, -2);
  return 1;
}

/* Hands the action on top to the driver: queued store actions go first (the action waits
 * behind them as `then`); log lines ride on whichever leaves first. */
int ok_op_emit(ok_ctx *c, enum ok_phase phase) {
  lua_State *L = c->L;
  ok_op_uv_get(c, "q");
  if (lua_istable(L, -1) && lua_rawlen(L, -1) > 0) {
    lua_pop(L, 1);
    uv_set(c, "then");
    c->op->then_phase = phase;
    pop_queued(c);
    phase = PH_QUEUED;
  } else {
    lua_pop(L, 1);
  }
  c->op->phase = phase;
  ok_op_uv_get(c, "log");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return 1; }
  lua_setfield(L, -2, "log");
  lua_pushnil(L);
  uv_set(c, "log");
  return 1;
}

int ok_op_emit_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl, enum ok_phase phase) {
  vidx = vidx ? lua_absindex(c->L, vidx) : 0;
  push_store(c, op, key, vidx, ttl);
  if (vidx) lua_remove(c->L, vidx);
  return ok_op_emit(c, phase);
}

/* Sets field name of the table on top to v, when v is a known figure (not below 0). */
static void set_figure(lua_State *L, const char *name, double v) {
  if (v < 0) return;
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

int ok_op_emit_sleep(ok_ctx *c, double seconds, const char *reason, const ok_wait_figures *figures) {
  lua_State *L = c->L;
  if (!(seconds > 0)) seconds = 0;
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "sleep"); lua_setfield(L, -2, "action");
  lua_pushnumber(L, seconds); lua_setfield(L, -2, "seconds");
  lua_createtable(L, 0, 7); /* the wait, for a driver's on_wait hook (progress, not policy) */
  lua_pushstring(L, reason); lua_setfield(L, -2, "reason");
  lua_pushnumber(L, seconds); lua_setfield(L, -2, "seconds");
  lua_pushnumber(L, c->now + seconds); lua_setfield(L, -2, "until_time");
  if (figures) {
    if (figures->bucket && *figures->bucket) { lua_pushstring(L, figures->bucket); lua_setfield(L, -2, "bucket"); }
    set_figure(L, "limit", figures->limit);
    set_figure(L, "remaining", figures->remaining);
    set_figure(L, "reset", figures->reset);
  }
  lua_setfield(L, -2, "wait");
  return ok_op_emit(c, PH_START);
}

int ok_op_emit_fail(ok_ctx *c) {
  lua_State *L = c->L;
  ok_op_release_slot(c);
  ok_op_release_lock(c);
  if ((c->op->kind == OK_OP_PAGES || c->op->kind == OK_OP_POLL) && c->op->url) {
    lua_getfield(L, -1, "next"); /* where to resume: the page not yet handed out */
    if (lua_isnil(L, -1)) { lua_pushstring(L, c->op->url); lua_setfield(L, -3, "next"); }
    lua_pop(L, 1);
  }
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "fail"); lua_setfield(L, -2, "action");
  lua_insert(L, -2);
  lua_setfield(L, -2, "error");
  return ok_op_emit(c, PH_END);
}

int ok_op_fail_pushed(ok_ctx *c) {
  lua_remove(c->L, -2);
  return ok_op_emit_fail(c);
}

double ok_op_next_wait(ok_op *op) {
  op->wait = op->wait < OK_WAIT_MIN ? OK_WAIT_MIN : fmin(op->wait * 2, OK_WAIT_MAX);
  return op->wait;
}

void ok_op_new_request(ok_op *op, double now, const ok_session *s) {
  op->nonce_tries = op->rs_nonce_retried = op->token_refreshed = op->replay_retried = 0;
  op->rl_retries = op->srv_retries = op->skew_retried = op->shape_asked = 0;
  op->queue_deadline = now + s->cfg.max_queue_wait;
  ok_op_set_str(&op->retry_for, NULL);
}

int ok_op_advance(ok_ctx *c) {
  ok_op *op = c->op;
  ok_session *s = c->s;
  if (op->rejected[0] && s->token && strcmp(s->token_ath, op->rejected) == 0) ok_session_clear_token(s);
  if (!ok_token_fresh(s, c->now)) return ok_admit_token(c);
  if (op->kind == OK_OP_TOKEN) return ok_admit_token_done(c);
  return ok_admit_request(c);
}

/* What the answer at in means, given what was asked. */
static int dispatch(ok_ctx *c, int in) {
  switch (c->op->phase) {
  case PH_PEEK: return ok_admit_on_peek(c, in);
  case PH_LOCK: return ok_admit_on_lock(c, in);
  case PH_RECHECK: return ok_admit_on_recheck(c, in);
  case PH_TOKEN: return ok_retry_on_token(c, in);
  case PH_SLOT: return ok_admit_on_slot(c, in);
  case PH_SHAPE: return ok_admit_on_shape(c, in);
  case PH_BUDGET: return ok_admit_on_budget(c, in);
  case PH_API: return ok_retry_on_api(c, in);
  case PH_ITEMS: return ok_pages_after_items(c);
  default: return ok_op_advance(c);
  }
}

/* The next store action of the queue, or the action that waited behind the queue. */
static int from_queue(ok_ctx *c) {
  if (pop_queued(c)) return 1;
  ok_op_uv_get(c, "then");
  lua_pushnil(c->L);
  uv_set(c, "then");
  c->op->phase = c->op->then_phase;
  if (!lua_isnil(c->L, -1)) return 1;
  lua_pop(c->L, 1);
  return ok_op_advance(c);
}

int ok_op_step(lua_State *L, int opidx, int inidx, double now) {
  ok_ctx c = {L, lua_absindex(L, opidx), luaL_checkudata(L, opidx, OK_OP_MT), NULL, now};
  int in = inidx ? lua_absindex(L, inidx) : 0;
  if (!in) { lua_pushnil(L); in = lua_gettop(L); }
  if (c.op->phase == PH_END) return luaL_error(L, "operation already finished");
  ok_op_uv_get(&c, "s");
  c.s = ok_session_check(L, -1);
  if (!ok_session_usable(L, -1)) return ok_op_fail_pushed(&c);
  lua_pop(L, 1); /* the uservalue keeps it */
  if (!c.op->started) { /* the first step knows the time */
    c.op->started = 1;
    ok_op_new_request(c.op, now, c.s);
    if (c.op->stop_at < OK_NO_LIMIT) c.op->stop_at += now;
  }
  if (c.op->phase == PH_TOKEN || c.op->phase == PH_API) c.op->steps = 0; /* a server answered */
  if (++c.op->steps > OK_MAX_STEPS) {
    ok_error_push(L, "network", "gave up after %d steps without an answer from the server", OK_MAX_STEPS);
    return ok_op_emit_fail(&c);
  }
  if (c.op->phase == PH_QUEUED) return from_queue(&c);
  return dispatch(&c, in);
}

/* ---- life ---- */

static int op_gc(lua_State *L) {
  ok_op *op = luaL_checkudata(L, 1, OK_OP_MT);
  free(op->method); free(op->url); free(op->next); free(op->retry_for); free(op->sent_nonce);
  memset(op, 0, sizeof *op);
  op->phase = PH_END;
  return 0;
}

int ok_op_create(lua_State *L, int sidx, enum ok_op_kind kind, const char *method, const char *url, int hidx, int bidx) {
  ok_session *s = ok_session_check(L, sidx);
  ok_op *op;
  sidx = lua_absindex(L, sidx);
  hidx = hidx ? lua_absindex(L, hidx) : 0;
  bidx = bidx ? lua_absindex(L, bidx) : 0;
  op = lua_newuserdata(L, sizeof *op); /* first: what it allocates, __gc frees */
  memset(op, 0, sizeof *op);
  luaL_setmetatable(L, OK_OP_MT);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, sidx); lua_setfield(L, -2, "s");
  if (hidx) { lua_pushvalue(L, hidx); lua_setfield(L, -2, "h"); }
  if (bidx) { lua_pushvalue(L, bidx); lua_setfield(L, -2, "b"); }
  lua_setuservalue(L, -2);
  op->kind = kind;
  op->max_pages = op->max_items = op->stop_at = OK_NO_LIMIT;
  if (kind == OK_OP_TOKEN) return 1;
  ok_op_set_str(&op->method, method);
  ok_op_set_str(&op->url, url);
  if (!op->method || !op->url) return luaL_error(L, "out of memory");
  op->idempotent = strcmp(method, "GET") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
                   strcmp(method, "HEAD") == 0 || strcmp(method, "OPTIONS") == 0;
  ok_bucket_name(method, ok_url_path(url), op->bucket);
  (void)s;
  return 1;
}

void ok_op_force(lua_State *L, int opidx) {
  ok_op *op = luaL_checkudata(L, opidx, OK_OP_MT);
  ok_session *s;
  lua_getuservalue(L, opidx);
  lua_getfield(L, -1, "s");
  s = ok_session_check(L, -1);
  lua_pop(L, 2);
  if (s->token) memcpy(op->rejected, s->token_ath, sizeof op->rejected);
}

const char *const ok_page_option_names[] = {"from", "interval", "max_pages", "max_items", "duration", NULL};

int ok_op_page_options(lua_State *L, int opidx, int idx) {
  ok_op *op = luaL_checkudata(L, opidx, OK_OP_MT);
  double dflt_interval = op->kind == OK_OP_POLL ? 30 : 1, duration;
  op->interval = dflt_interval;
  if (!idx || lua_isnil(L, idx)) return 1;
  if (!ok_opts_known(L, idx, op->kind == OK_OP_POLL ? "poll" : "paginate", ok_page_option_names) ||
      !ok_opt_number(L, idx, "interval", dflt_interval, 0.1, 86400, &op->interval) ||
      !ok_opt_number(L, idx, "max_pages", OK_NO_LIMIT, 1, OK_NO_LIMIT, &op->max_pages) ||
      !ok_opt_number(L, idx, "max_items", OK_NO_LIMIT, 1, OK_NO_LIMIT, &op->max_items) ||
      !ok_opt_number(L, idx, "duration", OK_NO_LIMIT, 0, OK_NO_LIMIT, &duration))
    return 0;
  op->max_items = floor(op->max_items); /* a page is cut at a whole item */
  op->stop_at = duration; /* relative until the first step knows the time */
  return 1;
}

int ok_op_abort(lua_State *L, int opidx) {
  ok_ctx c = {L, lua_absindex(L, opidx), luaL_checkudata(L, opidx, OK_OP_MT), NULL, 0};
  ok_op_uv_get(&c, "s");
  c.s = ok_session_check(L, -1);
  lua_pop(L, 1);
  c.op->lock_until = HUGE_VAL; /* no clock here: give the lock back as long as it was held */
  ok_op_release_slot(&c);
  ok_op_release_lock(&c);
  c.op->phase = PH_END;
  ok_op_uv_get(&c, "q");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
  lua_pushnil(L);
  uv_set(&c, "q");
  return 1;
}

/*** op:step([input], now) -> action
 * @function op:step
 */
static int op_step(lua_State *L) {
  luaL_checkudata(L, 1, OK_OP_MT);
  return ok_op_step(L, 1, lua_isnoneornil(L, 2) ? 0 : 2, luaL_checknumber(L, 3));
}

/*** op:abort() -> list of store actions giving back what the operation holds
 * @function op:abort
 */
static int op_abort(lua_State *L) {
  return ok_op_abort(L, 1);
}

void ok_op_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"step", op_step}, {"abort", op_abort}, {NULL, NULL}};
  if (luaL_newmetatable(L, OK_OP_MT)) {
    lua_pushcfunction(L, op_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}
