/* opstate.c: an operation's own state, which every rule of the state machine may change but
 * none decides with: its strings, its uservalue (the Lua values it holds), the store actions
 * queued to run before its next action (releases, publications), its debug log lines, and
 * the small makers of decisions. Part of the core: no I/O. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/op.h"

#define OK_WAIT_MIN 0.02
#define OK_WAIT_MAX 0.25

void ok_op_set_str(char **slot, const char *s) {
  char *old = *slot;
  size_t n = s ? strlen(s) + 1 : 0;
  *slot = s ? malloc(n) : NULL;
  if (*slot) memcpy(*slot, s, n);
  free(old);
}

void ok_op_uv_get(ok_ctx *c, const char *field) {
  lua_getuservalue(c->L, c->opidx);
  lua_getfield(c->L, -1, field);
  lua_remove(c->L, -2);
}

void ok_op_uv_set(ok_ctx *c, const char *field) {
  lua_getuservalue(c->L, c->opidx);
  lua_insert(c->L, -2);
  lua_setfield(c->L, -2, field);
  lua_pop(c->L, 1);
}

void ok_op_uv_table(ok_ctx *c, const char *field) {
  ok_op_uv_get(c, field);
  if (!lua_isnil(c->L, -1)) return;
  lua_pop(c->L, 1);
  lua_newtable(c->L);
  lua_pushvalue(c->L, -1);
  ok_op_uv_set(c, field);
}

void ok_op_log(ok_ctx *c, const char *fmt, ...) {
  char line[600];
  va_list ap;
  if (!c->s->cfg.debug) return;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  ok_op_uv_table(c, "log");
  lua_pushstring(c->L, line);
  lua_rawseti(c->L, -2, (int)lua_rawlen(c->L, -2) + 1);
  lua_pop(c->L, 1);
}

void ok_op_push_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl) {
  lua_State *L = c->L;
  int token_key = strcmp(key, "state") == 0 || strcmp(key, "lock") == 0;
  vidx = vidx ? lua_absindex(L, vidx) : 0;
  lua_createtable(L, 0, 5);
  lua_pushliteral(L, "store"); lua_setfield(L, -2, "action");
  lua_pushstring(L, op); lua_setfield(L, -2, "op");
  lua_pushfstring(L, "%s%s", token_key ? c->s->store_prefix : c->s->app_prefix, key); lua_setfield(L, -2, "key");
  if (vidx) { lua_pushvalue(L, vidx); lua_setfield(L, -2, "value"); }
  if (ttl > 0) { lua_pushnumber(L, ceil(ttl)); lua_setfield(L, -2, "ttl"); }
}

void ok_op_queue_store(ok_ctx *c, const char *op, const char *key, int vidx, double ttl) {
  vidx = vidx ? lua_absindex(c->L, vidx) : 0;
  ok_op_uv_table(c, "queue");
  ok_op_push_store(c, op, key, vidx, ttl);
  lua_rawseti(c->L, -2, (int)lua_rawlen(c->L, -2) + 1);
  lua_pop(c->L, 1);
}

int ok_op_pop_queued(ok_ctx *c) {
  lua_State *L = c->L;
  int n;
  ok_op_uv_get(c, "queue");
  n = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
  if (!n) { lua_pop(L, 1); return 0; }
  lua_rawgeti(L, -1, 1);
  for (int i = 1; i < n; i++) { lua_rawgeti(L, -2, i + 1); lua_rawseti(L, -3, i); } /* two or three at most */
  lua_pushnil(L);
  lua_rawseti(L, -3, n);
  lua_remove(L, -2);
  return 1;
}

void ok_op_release_slot(ok_ctx *c) {
  if (!c->op->admit.holds_slot) return;
  c->op->admit.holds_slot = 0;
  lua_pushinteger(c->L, -1);
  ok_op_queue_store(c, "incr", "inflight", -1, 0);
  lua_pop(c->L, 1);
}

/* The lock is deleted only while it is surely still ours (its ttl has not run out). */
void ok_op_release_lock(ok_ctx *c) {
  if (!c->op->token.holds_lock) return;
  c->op->token.holds_lock = 0;
  if (c->now < c->op->token.lock_until - 1) ok_op_queue_store(c, "delete", "lock", 0, 0);
}

void ok_op_new_request(ok_op *op, double now, const ok_session *s) {
  char *retry_for = op->retry.retry_for;
  memset(&op->retry, 0, sizeof op->retry);
  free(retry_for);
  op->admit.shape_asked = 0;
  op->admit.queue_deadline = now + s->cfg.max_queue_wait;
}

double ok_op_next_backoff(ok_op *op) {
  op->admit.backoff = op->admit.backoff < OK_WAIT_MIN ? OK_WAIT_MIN : fmin(op->admit.backoff * 2, OK_WAIT_MAX);
  return op->admit.backoff;
}

int ok_decide(ok_decision *d, enum ok_next next) {
  d->next = next;
  return 1;
}

int ok_decide_sleep(ok_decision *d, double seconds, const char *why) {
  return ok_decide_wait(d, seconds, why, NULL, -1, -1, -1);
}

int ok_decide_wait(ok_decision *d, double seconds, const char *why, const char *bucket, double limit, double remaining,
                   double reset) {
  d->next = NEXT_SLEEP;
  d->seconds = seconds > 0 ? seconds : 0;
  d->why = why;
  d->bucket = bucket;
  d->limit = limit;
  d->remaining = remaining;
  d->reset = reset;
  return 1;
}

int ok_decide_store(ok_decision *d, const char *op, const char *key, int has_value, double ttl, enum ok_phase phase) {
  d->next = NEXT_STORE;
  d->store_op = op;
  snprintf(d->key, sizeof d->key, "%s", key);
  d->has_value = has_value;
  d->ttl = ttl;
  d->phase = phase;
  return 1;
}
