/* admission.c: what must hold before a request goes out, through the store the driver keeps
 * (in-process, nginx's shared dict, or any store with the same five calls):
 *   a token: adopt the one another process published, else take the lock and fetch one, so
 *            that N workers or N concurrent requests make one token request, not N;
 *   a slot:  at most max_concurrency requests in flight across everyone sharing the store;
 *   budget:  at most max_capacity of the bucket's limit in its window (ratelimit.c's rule), the
 *            first request to a bucket no one sharing the store knows going alone to learn
 *            its limit and window, which it publishes.
 * Each rule takes the store's answer and decides; operation.c acts. Waits are bounded: the
 * lock by its ttl, slots and budget by max_queue_wait. Part of the core: no I/O. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "core/op.h"

/* ---- the token ---- */

/* The lock lives as long as the slowest token exchange: every attempt timing out, plus the
 * longest waits. */
static double lock_ttl(const ok_session *s) {
  const ok_config *f = &s->cfg;
  return (f->timeout + f->connect_timeout) * (f->max_retries + 3) + f->max_retry_wait * f->max_retries;
}

static const char *rejected(const ok_ctx *c) { return c->op->token.rejected[0] ? c->op->token.rejected : NULL; }

int ok_admit_token(ok_ctx *c, ok_decision *d) {
  if (c->op->token.holds_lock) return ok_decide(d, NEXT_SEND_TOKEN);
  return ok_decide_store(d, "get", "state", 0, 0, PH_PEEK);
}

int ok_admit_on_peek(ok_ctx *c, int in, ok_decision *d) {
  if (ok_session_adopt_state(c->L, c->s, in, c->now, rejected(c))) {
    ok_op_log(c, "token: using the one another request or worker fetched");
    return ok_decide(d, NEXT_DECIDE);
  }
  lua_pushstring(c->L, c->s->cfg.client_id);
  return ok_decide_store(d, "add", "lock", 1, lock_ttl(c->s), PH_LOCK);
}

int ok_admit_on_lock(ok_ctx *c, int in, ok_decision *d) {
  ok_op *op = c->op;
  if (lua_toboolean(c->L, in)) {
    op->token.holds_lock = 1;
    op->token.lock_until = c->now + lock_ttl(c->s);
    return ok_decide_store(d, "get", "state", 0, 0, PH_RECHECK); /* it may have landed just before */
  }
  if (!op->token.give_up) op->token.give_up = c->now + lock_ttl(c->s);
  if (c->now < op->token.give_up) return ok_decide_sleep(d, ok_op_next_backoff(op), "token_lock");
  ok_op_log(c, "the token lock outlived its holder: fetching a token without it");
  return ok_decide(d, NEXT_SEND_TOKEN);
}

int ok_admit_on_recheck(ok_ctx *c, int in, ok_decision *d) {
  if (ok_session_adopt_state(c->L, c->s, in, c->now, rejected(c))) {
    ok_op_release_lock(c);
    return ok_decide(d, NEXT_DECIDE);
  }
  return ok_decide(d, NEXT_SEND_TOKEN);
}

int ok_admit_take_token(ok_ctx *c, const ok_answer *a) {
  lua_State *L = c->L;
  ok_session *s = c->s;
  const char *why, *type;
  double expires_in = 3600;
  lua_getfield(L, a->ridx, "body");
  if (!lua_istable(L, -1)) return ok_error_push(L, "json", "token response is not a JSON object"), 0;
  lua_getfield(L, -1, "expires_in");
  if (lua_type(L, -1) == LUA_TNUMBER) expires_in = lua_tonumber(L, -1);
  if (!(expires_in >= 0 && expires_in <= 86400.0 * 366)) expires_in = 0; /* NaN and absurd values: renew */
  lua_getfield(L, -2, "access_token");
  lua_getfield(L, -3, "token_type");
  lua_getfield(L, -4, "scope");
  type = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
  why = ok_session_take_token(s, lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : NULL, type,
                              lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL, c->now + expires_in, expires_in);
  if (why && strcmp(why, "not DPoP") == 0)
    return ok_error_push(L, "oauth", "the token endpoint issued a %s token, not DPoP: set the Okta app to require DPoP "
                         "(\"Require Demonstrating Proof of Possession (DPoP) header in token requests\"), or pass dpop=false",
                         type ? type : "non-DPoP"), 0;
  if (why) return ok_error_push(L, "oauth", "token response: %s", why), 0;
  lua_pop(L, 5);
  ok_op_log(c, "token acquired: %s, expires in %.0f s, scope \"%s\"", s->token_type, expires_in, s->token_scope);
  if (s->missing_scopes && !s->scopes_warned) {
    s->scopes_warned = 1;
    ok_op_log(c, "warning: Okta did not grant the scopes \"%s\": grant them to the app, or calls that need them get 403",
              s->missing_scopes);
  }
  ok_session_push_state(L, s);
  if (!lua_isnil(L, -1)) ok_op_queue_store(c, "set", "state", -1, expires_in);
  lua_pop(L, 1);
  ok_op_release_lock(c);
  c->op->token.rejected[0] = '\0';
  return 1;
}

void ok_admit_push_token_done(ok_ctx *c) {
  lua_State *L = c->L;
  ok_session *s = c->s;
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "done"); lua_setfield(L, -2, "action");
  lua_pushstring(L, s->token); lua_setfield(L, -2, "token");
  lua_createtable(L, 0, 5);
  lua_pushstring(L, s->token_type); lua_setfield(L, -2, "token_type");
  lua_pushnumber(L, s->expires_at); lua_setfield(L, -2, "expires_at");
  lua_pushinteger(L, (lua_Integer)floor(s->expires_at - c->now)); lua_setfield(L, -2, "expires_in");
  lua_pushstring(L, s->token_scope); lua_setfield(L, -2, "scope");
  lua_newtable(L);
  for (const char *p = s->missing_scopes; p && *p;) {
    size_t n = strcspn(p, " ");
    lua_pushlstring(L, p, n);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    p += n + (p[n] == ' ');
  }
  lua_setfield(L, -2, "missing_scopes");
  lua_setfield(L, -2, "info");
}

/* ---- a slot, the budget, then the request ---- */

static int queue_timeout(ok_ctx *c, ok_decision *d) {
  ok_error_push(c->L, "ratelimit", "waited max_queue_wait (%.0f s) for a concurrency slot or the rate-limit budget",
                c->s->cfg.max_queue_wait);
  return ok_decide(d, NEXT_FAIL);
}

/* The window count's key names the bucket and the window's end, so each window counts anew;
 * it lives until the window ends, and a minute more. */
static void count_key(const ok_bucket *b, char key[OK_STORE_KEY]) {
  snprintf(key, OK_STORE_KEY, "rl:%s:%.0f", b->name, b->reset);
}

static double count_ttl(const ok_ctx *c, const ok_bucket *b) {
  return b->reset - ok_server_now(c->s, c->now) + 60;
}

static void shape_key(const char *bucket, char key[OK_STORE_KEY]) {
  snprintf(key, OK_STORE_KEY, "rlb:%s", bucket);
}

/* A probe's answer described the bucket: the probe is counted in its window like any request,
 * and the limit and window end are published for the others sharing the store (the limit
 * rarely changes, so that entry lives an hour). */
void ok_admit_probe_learned(ok_ctx *c, const ok_bucket *b) {
  char key[OK_STORE_KEY], value[64];
  count_key(b, key);
  lua_pushinteger(c->L, 1);
  ok_op_queue_store(c, "incr", key, -1, count_ttl(c, b));
  lua_pop(c->L, 1);
  shape_key(b->name, key);
  snprintf(value, sizeof value, "%.0f %.0f", b->limit, b->reset);
  lua_pushstring(c->L, value);
  ok_op_queue_store(c, "set", key, -1, 3600);
  lua_pop(c->L, 1);
}

int ok_admit_on_shape(ok_ctx *c, int in, ok_decision *d) {
  ok_bucket *b = ok_session_bucket(c->s, c->op->bucket);
  double limit, reset;
  const char *value = lua_type(c->L, in) == LUA_TSTRING ? lua_tostring(c->L, in) : NULL;
  if (value && sscanf(value, "%lf %lf", &limit, &reset) == 2 && ok_bucket_adopt(b, limit, reset))
    ok_op_log(c, "%s: limit %.0f a minute, as another process learned it", b->name, limit);
  return ok_admit_request(c, d);
}

int ok_admit_request(ok_ctx *c, ok_decision *d) {
  ok_op *op = c->op;
  ok_bucket *b;
  char key[OK_STORE_KEY];
  if (!op->admit.holds_slot) {
    if (c->now > op->admit.queue_deadline) return queue_timeout(c, d);
    lua_pushinteger(c->L, 1);
    return ok_decide_store(d, "incr", "inflight", 1, 0, PH_SLOT);
  }
  b = ok_session_bucket(c->s, op->bucket);
  ok_bucket_roll(b, ok_server_now(c->s, c->now));
  if (!op->admit.admitted && b->limit > 0) {
    count_key(b, key);
    lua_pushinteger(c->L, 1);
    return ok_decide_store(d, "incr", key, 1, count_ttl(c, b), PH_BUDGET);
  }
  if (!op->admit.admitted && !op->admit.shape_asked) { /* another process sharing the store may know it */
    shape_key(b->name, key);
    op->admit.shape_asked = 1;
    return ok_decide_store(d, "get", key, 0, 0, PH_SHAPE);
  }
  if (!op->admit.admitted) { /* the limit is not known yet: one request at a time learns it */
    if (b->probe_until > c->now) {
      ok_op_release_slot(c);
      return ok_decide_sleep(d, ok_op_next_backoff(op), "queue");
    }
    b->probe_until = c->now + c->s->cfg.timeout + c->s->cfg.connect_timeout;
    op->admit.probing = op->admit.admitted = 1;
  }
  return ok_decide(d, NEXT_SEND);
}

int ok_admit_on_slot(ok_ctx *c, int in, ok_decision *d) {
  c->op->admit.holds_slot = 1; /* counted (a store that cannot count, nil, does not stop requests) */
  if (lua_type(c->L, in) == LUA_TNUMBER && lua_tonumber(c->L, in) > c->s->cfg.max_concurrency) {
    ok_op_release_slot(c);
    return ok_decide_sleep(d, ok_op_next_backoff(c->op), "queue");
  }
  return ok_admit_request(c, d);
}

int ok_admit_on_budget(ok_ctx *c, int in, ok_decision *d) {
  ok_bucket *b = ok_session_bucket(c->s, c->op->bucket);
  long count = lua_type(c->L, in) == LUA_TNUMBER ? (long)lua_tonumber(c->L, in) : 0;
  double wait = b->reset - ok_server_now(c->s, c->now) + 0.05;
  if (ok_bucket_admits(b, c->s->cfg.max_capacity, count)) {
    c->op->admit.admitted = 1;
    return ok_admit_request(c, d);
  }
  c->s->rate_waits++;
  ok_op_log(c, "pacing %s: request %ld of the %ld allowed this minute (%.0f%% of %.0f): waiting %.1f s", b->name, count,
            ok_bucket_allowed(b, c->s->cfg.max_capacity), c->s->cfg.max_capacity * 100, b->limit, wait);
  ok_op_release_slot(c);
  if (c->now + wait > c->op->admit.queue_deadline) return queue_timeout(c, d);
  return ok_decide_sleep(d, wait, "ratelimit");
}
