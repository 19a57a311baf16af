/* admission.c: what must hold before a request goes out, through the store the driver keeps
 * (in-process, nginx's shared dict, or any store with the same five calls):
 *   a token: adopt the one another process published, else take the lock and fetch one, so
 *            that N workers or N concurrent requests make one token request, not N;
 *   a slot:  at most max_concurrency requests in flight across everyone sharing the store;
 *   budget:  at most max_capacity of the bucket's per-minute limit (ratelimit.c's rule), the
 *            first request to a bucket no one sharing the store knows going alone to learn
 *            its limit and window, which it publishes.
 * Waits are bounded: the lock by its ttl, slots and budget by max_queue_wait. Part of the
 * core: no I/O. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "op.h"

/* ---- the token ---- */

int ok_admit_send_token(ok_ctx *c) {
  ok_op *op = c->op;
  ok_session *s = c->s;
  long long iat = (long long)floor(ok_server_now(s, c->now));
  if (!ok_request_token(c->L, s, iat, op->retry_for, op->retry_is_token ? op->rl_retries : 0)) return ok_op_fail_pushed(c);
  op->sent_iat = iat;
  ok_op_set_str(&op->sent_nonce, s->cfg.dpop ? s->as_nonce : NULL);
  ok_op_log(c, "token request: POST %s (client_id %s, scope \"%s\", DPoP %s)", s->cfg.token_url, s->cfg.client_id,
            s->cfg.scopes, !s->cfg.dpop ? "off" : s->as_nonce ? "proof with nonce" : "proof without nonce");
  return ok_op_emit(c, PH_TOKEN);
}

/* The lock lives as long as the slowest token exchange: every attempt timing out, plus the
 * longest waits. */
static double lock_ttl(const ok_session *s) {
  const ok_config *f = &s->cfg;
  return (f->timeout + f->connect_timeout) * (f->max_retries + 3) + f->max_retry_wait * f->max_retries;
}

int ok_admit_token(ok_ctx *c) {
  if (c->op->holds_lock) return ok_admit_send_token(c);
  return ok_op_emit_store(c, "get", "state", 0, 0, PH_PEEK);
}

int ok_admit_on_peek(ok_ctx *c, int in) {
  if (ok_session_adopt_state(c->L, c->s, in, c->now, c->op->rejected[0] ? c->op->rejected : NULL)) {
    ok_op_log(c, "token: using the one another request or worker fetched");
    return ok_op_advance(c);
  }
  lua_pushstring(c->L, c->s->cfg.client_id);
  return ok_op_emit_store(c, "add", "lock", -1, lock_ttl(c->s), PH_LOCK);
}

int ok_admit_on_lock(ok_ctx *c, int in) {
  ok_op *op = c->op;
  if (lua_toboolean(c->L, in)) {
    op->holds_lock = 1;
    op->lock_until = c->now + lock_ttl(c->s);
    return ok_op_emit_store(c, "get", "state", 0, 0, PH_RECHECK); /* it may have landed just before */
  }
  if (!op->lock_give_up) op->lock_give_up = c->now + lock_ttl(c->s);
  if (c->now < op->lock_give_up) return ok_op_emit_sleep(c, ok_op_next_wait(op), "token_lock", NULL);
  ok_op_log(c, "the token lock outlived its holder: fetching a token without it");
  return ok_admit_send_token(c);
}

int ok_admit_on_recheck(ok_ctx *c, int in) {
  if (ok_session_adopt_state(c->L, c->s, in, c->now, c->op->rejected[0] ? c->op->rejected : NULL)) {
    ok_op_release_lock(c);
    return ok_op_advance(c);
  }
  return ok_admit_send_token(c);
}

/* Stores the token of a 200 response (its result table at ridx), publishes it for others and
 * gives the lock back; returns 1, or 0 with an error object pushed. */
int ok_admit_take_token(ok_ctx *c, int ridx) {
  lua_State *L = c->L;
  ok_session *s = c->s;
  const char *why, *type;
  double expires_in = 3600;
  lua_getfield(L, ridx, "body");
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
  ok_op_log(c, "token acquired: %s, expires in %.0f s, scope \"%s\"", s->token_type, expires_in, s->token_scope);
  if (s->missing_scopes && !s->scopes_warned) {
    s->scopes_warned = 1;
    ok_op_log(c, "warning: Okta did not grant the scopes \"%s\": grant them to the app, or calls that need them get 403",
              s->missing_scopes);
  }
  ok_session_push_state(L, s);
  if (!lua_isnil(L, -1)) ok_op_queue_store(c, "set", "state", -1, expires_in);
  ok_op_release_lock(c);
  c->op->rejected[0] = '\0';
  return 1;
}

/* Pushes {action="done", token=, info=} for a token operation. */
int ok_admit_token_done(ok_ctx *c) {
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
  return ok_op_emit(c, PH_END);
}

/* ---- a slot, the budget, then the request ---- */

static int queue_timeout(ok_ctx *c) {
  ok_fail(c->L, "ratelimit", "waited max_queue_wait (%.0f s) for a concurrency slot or the rate-limit budget",
          c->s->cfg.max_queue_wait);
  return ok_op_fail_pushed(c);
}

/* The window count's key names the bucket and the window's end, so each window counts anew;
 * it lives until the window ends, and a minute more. */
static void count_key(const ok_bucket *b, char key[OK_BUCKET_NAME + 40]) {
  snprintf(key, OK_BUCKET_NAME + 40, "rl:%s:%.0f", b->name, b->reset);
}

static double count_ttl(const ok_ctx *c, const ok_bucket *b) {
  return b->reset - ok_server_now(c->s, c->now) + 60;
}

static void shape_key(const char *bucket, char key[OK_BUCKET_NAME + 8]) {
  snprintf(key, OK_BUCKET_NAME + 8, "rlb:%s", bucket);
}

/* A probe's answer described the bucket: the probe is counted in its window like any request,
 * and the limit and window end are published for the others sharing the store (the limit
 * rarely changes and the window rolls by whole minutes, so that entry lives an hour). */
void ok_admit_probe_learned(ok_ctx *c, const ok_bucket *b) {
  char key[OK_BUCKET_NAME + 40], value[64];
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

int ok_admit_on_shape(ok_ctx *c, int in) {
  ok_bucket *b = ok_session_bucket(c->s, c->op->bucket);
  double limit, reset;
  const char *value = lua_type(c->L, in) == LUA_TSTRING ? lua_tostring(c->L, in) : NULL;
  if (value && sscanf(value, "%lf %lf", &limit, &reset) == 2 && ok_bucket_adopt(b, limit, reset))
    ok_op_log(c, "%s: limit %.0f a minute, as another process learned it", b->name, limit);
  return ok_admit_request(c);
}

static int ask_budget(ok_ctx *c, ok_bucket *b) {
  char key[OK_BUCKET_NAME + 40];
  count_key(b, key);
  lua_pushinteger(c->L, 1);
  return ok_op_emit_store(c, "incr", key, -1, count_ttl(c, b), PH_BUDGET);
}

static int send_request(ok_ctx *c) {
  lua_State *L = c->L;
  ok_op *op = c->op;
  int top = lua_gettop(L);
  ok_op_uv_get(c, "h");
  ok_op_uv_get(c, "b");
  if (!ok_request_api(L, c->s, op->method, op->url, top + 1, top + 2, (long long)floor(ok_server_now(c->s, c->now)),
                      op->retry_for, op->retry_is_token ? 0 : op->rl_retries))
    return ok_op_fail_pushed(c);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  op->wait = 0;
  ok_op_log(c, "%s %s", op->method, op->url);
  return ok_op_emit(c, PH_API);
}

int ok_admit_request(ok_ctx *c) {
  ok_op *op = c->op;
  ok_bucket *b;
  if (!op->holds_slot) {
    if (c->now > op->queue_deadline) return queue_timeout(c);
    lua_pushinteger(c->L, 1);
    return ok_op_emit_store(c, "incr", "inflight", -1, 0, PH_SLOT);
  }
  b = ok_session_bucket(c->s, op->bucket);
  ok_bucket_roll(b, ok_server_now(c->s, c->now));
  if (!op->admitted && b->limit > 0) return ask_budget(c, b);
  if (!op->admitted && !op->shape_asked) { /* another process sharing the store may know it */
    char key[OK_BUCKET_NAME + 8];
    shape_key(b->name, key);
    op->shape_asked = 1;
    return ok_op_emit_store(c, "get", key, 0, 0, PH_SHAPE);
  }
  if (!op->admitted) { /* the limit is not known yet: one request at a time learns it */
    if (b->probe_until > c->now) {
      ok_wait_figures f = {b->name, -1, -1, -1};
      ok_op_release_slot(c);
      return ok_op_emit_sleep(c, ok_op_next_wait(op), "queue", &f);
    }
    b->probe_until = c->now + c->s->cfg.timeout + c->s->cfg.connect_timeout;
    op->probing = op->admitted = 1;
  }
  return send_request(c);
}

int ok_admit_on_slot(ok_ctx *c, int in) {
  c->op->holds_slot = 1; /* counted (a store that cannot count, nil, does not stop requests) */
  if (lua_type(c->L, in) == LUA_TNUMBER && lua_tonumber(c->L, in) > c->s->cfg.max_concurrency) {
    ok_op_release_slot(c);
    return ok_op_emit_sleep(c, ok_op_next_wait(c->op), "queue", NULL);
  }
  return ok_admit_request(c);
}

int ok_admit_on_budget(ok_ctx *c, int in) {
  ok_bucket *b = ok_session_bucket(c->s, c->op->bucket);
  long count = lua_type(c->L, in) == LUA_TNUMBER ? (long)lua_tonumber(c->L, in) : 0;
  double wait = b->reset - ok_server_now(c->s, c->now) + 0.05;
  ok_wait_figures f = {b->name, b->limit, b->limit - b->seen_used, b->reset}; /* the server's, as last said */
  if (ok_bucket_admits(b, c->s->cfg.max_capacity, count)) {
    c->op->admitted = 1;
    return ok_admit_request(c);
  }
  c->s->rate_waits++;
  ok_op_log(c, "pacing %s: request %ld of the %ld allowed this minute (%.0f%% of %.0f): waiting %.1f s", b->name, count,
            ok_bucket_allowed(b, c->s->cfg.max_capacity), c->s->cfg.max_capacity * 100, b->limit, wait);
  ok_op_release_slot(c);
  if (c->now + wait > c->op->queue_deadline) return queue_timeout(c);
  return ok_op_emit_sleep(c, wait, "ratelimit", &f);
}
