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

#define OK_NO_HEADERS_WINDOW 60.0 /* answers without rate-limit headers: no bucket for a minute */

static int queue_timeout(ok_ctx *c, ok_decision *d) {
  ok_error_push(c->L, "ratelimit", "waited max_queue_wait (%.0f s) for a concurrency slot or the rate-limit budget",
                c->s->cfg.max_queue_wait);
  return ok_decide(d, NEXT_FAIL);
}

/* Gives the slot back and waits a little: another request is learning the bucket. */
static int wait_for_probe(ok_ctx *c, ok_decision *d) {
  ok_op_release_slot(c);
  c->op->admit.shape_asked = 0; /* then look again at what the others learned */
  return ok_decide_wait(d, ok_op_next_backoff(c->op), "queue", c->op->bucket, -1, -1, -1);
}

void ok_admit_count_key(const ok_bucket *b, char key[OK_STORE_KEY]) {
  snprintf(key, OK_STORE_KEY, "rl:%s:%.0f", b->name, b->reset);
}

/* A window's count lives until the window ends, and a minute more. */
static double count_ttl(const ok_ctx *c, const ok_bucket *b) {
  return b->reset - ok_server_now(c->s, c->now) + 60;
}

static void shape_key(const char *bucket, char key[OK_STORE_KEY]) {
  snprintf(key, OK_STORE_KEY, "rlb:%s", bucket);
}

/* The probe of a bucket whose window is over (or never known): its claim is named after the
 * window it follows, so that exactly one of everyone sharing the store sends it. */
static void probe_key(const ok_bucket *b, char key[OK_STORE_KEY]) {
  snprintf(key, OK_STORE_KEY, "rlp:%s:%.0f", b->name, b->reset > b->unlimited_until ? b->reset : b->unlimited_until);
}

/* Publishes what this client learned of bucket b for the others sharing the store:
 * "limit reset [counted_as]", or "unlimited until". */
static void publish_shape(ok_ctx *c, const ok_bucket *b) {
  char key[OK_STORE_KEY], value[OK_BUCKET_NAME + 64];
  shape_key(b->name, key);
  if (b->unlimited_until > 0) snprintf(value, sizeof value, "unlimited %.0f", b->unlimited_until);
  else snprintf(value, sizeof value, "%.0f %.0f %s", b->limit, b->reset, b->counted_as);
  lua_pushstring(c->L, value);
  ok_op_queue_store(c, "set", key, -1, 3600);
  lua_pop(c->L, 1);
}

void ok_admit_probe_learned(ok_ctx *c, ok_bucket *b, int described) {
  ok_bucket *counted;
  char key[OK_STORE_KEY];
  if (!described) { /* no rate-limit headers: only max_concurrency applies, until the next window's probe */
    b->unlimited_until = ok_server_now(c->s, c->now) + OK_NO_HEADERS_WINDOW;
    ok_op_log(c, "%s: the answer carried no rate-limit headers: no bucket for %.0f s, only max_concurrency",
              b->name, OK_NO_HEADERS_WINDOW);
    publish_shape(c, b);
    return;
  }
  b->counted_as[0] = '\0';
  for (int i = 0; i < c->s->nbuckets; i++)
    if (ok_bucket_shares_count(b, &c->s->buckets[i])) {
      snprintf(b->counted_as, sizeof b->counted_as, "%s", c->s->buckets[i].name);
      ok_op_log(c, "%s counts with %s: the same limit and window, and a count that holds its requests", b->name,
                b->counted_as);
    }
  counted = ok_session_counted(c->s, b);
  ok_admit_count_key(counted, key); /* the probe is counted in its window like any request */
  lua_pushinteger(c->L, 1);
  ok_op_queue_store(c, "incr", key, -1, count_ttl(c, counted));
  lua_pop(c->L, 1);
  publish_shape(c, b);
}

/* Another process's news of the bucket: adopted when it describes a window still open. */
int ok_admit_on_shape(ok_ctx *c, int in, ok_decision *d) {
  ok_bucket *b = ok_session_bucket(c->s, c->op->bucket);
  double limit, reset, snow = ok_server_now(c->s, c->now);
  char counted_as[OK_BUCKET_NAME] = "";
  const char *value = lua_type(c->L, in) == LUA_TSTRING ? lua_tostring(c->L, in) : NULL;
  if (value && sscanf(value, "unlimited %lf", &reset) == 1 && reset > snow) {
    b->unlimited_until = reset;
  } else if (value && sscanf(value, "%lf %lf %47s", &limit, &reset, counted_as) >= 2 && limit > 0 && limit < 1e9 &&
             reset > snow && reset < snow + 86400) {
    if (reset > b->reset + 0.5) b->seen_used = 0;
    b->limit = limit;
    b->reset = reset;
    snprintf(b->counted_as, sizeof b->counted_as, "%s", strcmp(counted_as, b->name) == 0 ? "" : counted_as);
    ok_op_log(c, "%s: limit %.0f, window ending in %.1f s, as another process learned it", b->name, limit, reset - snow);
  }
  return ok_admit_request(c, d);
}

/* The bucket is unknown, or its window is over: one request (of everyone sharing the store)
 * goes out to learn it; the rest wait for what it learns. */
static int probe(ok_ctx *c, ok_bucket *b, ok_decision *d) {
  if (b->probe_until > c->now) return wait_for_probe(c, d);
  probe_key(b, c->op->admit.claim);
  lua_pushinteger(c->L, 1);
  return ok_decide_store(d, "add", c->op->admit.claim, 1, c->s->cfg.timeout + c->s->cfg.connect_timeout, PH_PROBE);
}

int ok_admit_on_probe(ok_ctx *c, int in, ok_decision *d) {
  ok_bucket *b = ok_session_bucket(c->s, c->op->bucket);
  if (!lua_toboolean(c->L, in)) { c->op->admit.claim[0] = '\0'; return wait_for_probe(c, d); }
  b->probe_until = c->now + c->s->cfg.timeout + c->s->cfg.connect_timeout;
  c->op->admit.probing = c->op->admit.admitted = 1;
  return ok_decide(d, NEXT_SEND);
}

int ok_admit_request(ok_ctx *c, ok_decision *d) {
  ok_op *op = c->op;
  ok_bucket *b, *counted;
  char key[OK_STORE_KEY];
  double snow = ok_server_now(c->s, c->now);
  if (!op->admit.holds_slot) {
    if (c->now > op->admit.queue_deadline) return queue_timeout(c, d);
    if (c->now >= c->s->concurrency_checked + 1) { /* the others' concurrency 429s, once a second */
      c->s->concurrency_checked = c->now;
      return ok_decide_store(d, "get", "concurrency", 0, 0, PH_CAP);
    }
    lua_pushinteger(c->L, 1);
    return ok_decide_store(d, "incr", "inflight", 1, 0, PH_SLOT);
  }
  if (op->admit.admitted) return ok_decide(d, NEXT_SEND);
  b = ok_session_bucket(c->s, op->bucket);
  if (b->unlimited_until > snow) return op->admit.admitted = 1, ok_decide(d, NEXT_SEND);
  counted = ok_session_counted(c->s, b);
  if (ok_bucket_window_open(counted, snow)) {
    ok_admit_count_key(counted, key);
    lua_pushinteger(c->L, 1);
    return ok_decide_store(d, "incr", key, 1, count_ttl(c, counted), PH_BUDGET);
  }
  if (!op->admit.shape_asked) { /* another process sharing the store may have learned it */
    op->admit.shape_asked = 1;
    shape_key(b->name, key);
    return ok_decide_store(d, "get", key, 0, 0, PH_SHAPE);
  }
  return probe(c, b, d);
}

int ok_admit_on_cap(ok_ctx *c, int in, ok_decision *d) {
  double cap = lua_type(c->L, in) == LUA_TNUMBER ? lua_tonumber(c->L, in) : 0;
  if (cap != c->s->concurrency_cap && cap > 0)
    ok_op_log(c, "concurrency: at most %.0f in flight for now (a concurrency 429 said so)", cap);
  c->s->concurrency_cap = cap;
  return ok_admit_request(c, d);
}

int ok_admit_on_slot(ok_ctx *c, int in, ok_decision *d) {
  c->op->admit.holds_slot = 1; /* counted (a store that cannot count, nil, does not stop requests) */
  c->op->admit.inflight = lua_type(c->L, in) == LUA_TNUMBER ? lua_tonumber(c->L, in) : 0;
  if (c->op->admit.inflight > ok_session_concurrency(c->s)) {
    ok_op_release_slot(c);
    return ok_decide_sleep(d, ok_op_next_backoff(c->op), "queue");
  }
  return ok_admit_request(c, d);
}

int ok_admit_on_budget(ok_ctx *c, int in, ok_decision *d) {
  ok_bucket *b = ok_session_counted(c->s, ok_session_bucket(c->s, c->op->bucket));
  long count = lua_type(c->L, in) == LUA_TNUMBER ? (long)lua_tonumber(c->L, in) : 0;
  double snow = ok_server_now(c->s, c->now), wait = b->reset - snow + 0.05; /* never past the reset + 1 s */
  c->op->admit.count = count;
  if (ok_bucket_admits(b, ok_session_capacity(c->s), count)) {
    c->op->admit.admitted = 1;
    return ok_admit_request(c, d);
  }
  c->s->rate_waits++;
  ok_op_log(c, "pacing %s: request %ld, %ld allowed in this window (%.0f%% of the limit %.0f; the server counts %.0f "
            "used, the window ends in %.1f s): waiting %.1f s", b->name, count, ok_bucket_allowed(b, ok_session_capacity(c->s)),
            ok_session_capacity(c->s) * 100, b->limit, b->seen_used, b->reset - snow, wait);
  ok_op_release_slot(c);
  if (c->now + wait > c->op->admit.queue_deadline) return queue_timeout(c, d);
  return ok_decide_wait(d, wait, "ratelimit", b->name, b->limit, b->limit - b->seen_used, b->reset);
}
