/* session.c: what one client knows between operations: its config and keys, the token (with
 * the scopes it lacks), the DPoP nonces of the authorization and resource servers, the offset
 * of the server's clock, and its rate-limit buckets; and the token state a shared store keeps
 * for other processes. Part of the core: no I/O, and the time is always the driver's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "core/core.h"

#define OK_CLOCK_SKEW_MIN 5.0        /* below this, the driver's clock is trusted for iat */
#define OK_MAX_CLOCK_OFFSET 43200.0  /* a real clock is not off by more than 12 h: a Date beyond is ignored */
#define OK_MAX_NONCE 512

static char *dup_cstr(const char *s) {
  size_t n;
  char *p;
  if (!s) return NULL;
  n = strlen(s) + 1;
  if ((p = malloc(n))) memcpy(p, s, n);
  return p;
}

/* Replaces *slot with a copy of s (NULL clears); secrets are wiped before they are freed. */
static void set_str(char **slot, const char *s, int secret) {
  char *old = *slot;
  *slot = dup_cstr(s);
  if (old && secret) OPENSSL_cleanse(old, strlen(old));
  free(old);
}

ok_session *ok_session_check(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, OK_SESSION_MT);
}

ok_session *ok_session_usable(lua_State *L, int idx) {
  ok_session *s = ok_session_check(L, idx);
  if (s->closed) { ok_fail(L, "config", "the client is closed"); return NULL; }
  if (!s->assertion_key->pkey || (s->cfg.dpop && !s->dpop_key->pkey)) {
    ok_fail(L, "key", "a key of this client has been freed (its __gc was called): make a new client");
    return NULL;
  }
  return s;
}

int ok_token_fresh(const ok_session *s, double now) {
  return s->token && s->expires_at - s->token_skew > now;
}

/* A token shorter-lived than twice renew_skew is renewed at half its life, not at once. */
static double skew_for(const ok_session *s, double lifetime) {
  return lifetime / 2 < s->cfg.renew_skew ? lifetime / 2 : s->cfg.renew_skew;
}

void ok_session_clear_token(ok_session *s) {
  set_str(&s->token, NULL, 1);
  set_str(&s->token_type, NULL, 0);
  set_str(&s->token_scope, NULL, 0);
  set_str(&s->missing_scopes, NULL, 0);
  s->token_len = 0;
  s->token_ath[0] = '\0';
  s->expires_at = 0;
}

void ok_session_set_nonce(ok_session *s, int is_token, const char *nonce) {
  if (nonce && *nonce && strlen(nonce) < OK_MAX_NONCE) set_str(is_token ? &s->as_nonce : &s->rs_nonce, nonce, 0);
}

void ok_session_learn(ok_session *s, int is_token, const char *nonce, const char *date, double now) {
  ok_session_set_nonce(s, is_token, nonce);
  if (!date || strlen(date) >= sizeof s->date_seen) return;
  if (strcmp(date, s->date_seen) != 0) { /* servers send the same Date for a whole second */
    s->date_value = ok_http_date(date);
    strcpy(s->date_seen, date);
  }
  if (s->date_value > 0 && fabs(s->date_value - now) <= OK_MAX_CLOCK_OFFSET) s->clock_offset = s->date_value - now;
}

double ok_server_now(const ok_session *s, double now) {
  return fabs(s->clock_offset) > OK_CLOCK_SKEW_MIN ? now + s->clock_offset : now;
}

/* Requested scopes the token's scope lacks, space-separated; NULL when none. */
static char *missing_scopes(const char *requested, const char *granted) {
  size_t n = strlen(requested);
  char *out = malloc(n + 1), *o = out;
  if (!out) return NULL;
  for (const char *p = requested; *p;) {
    size_t len = strcspn(p, " ");
    int found = 0;
    for (const char *g = granted; *g && !found;) {
      size_t glen = strcspn(g, " ");
      found = glen == len && strncmp(g, p, len) == 0;
      g += glen + (g[glen] == ' ');
    }
    if (!found) {
      if (o > out) *o++ = ' ';
      memcpy(o, p, len);
      o += len;
    }
    p += len + (p[len] == ' ');
  }
  *o = '\0';
  if (o == out) { free(out); return NULL; }
  return out;
}

const char *ok_session_take_token(ok_session *s, const char *token, const char *type, const char *scope,
                                  double expires_at, double lifetime) {
  if (!token || !*token || strpbrk(token, "\r\n ") || strlen(token) > 64 * 1024) return "no usable access_token";
  if (s->cfg.dpop && (!type || strcasecmp(type, "DPoP") != 0)) return "not DPoP";
  if (!scope) scope = s->cfg.scopes;
  if (s->token && strcmp(s->token, token) == 0) { /* the same token again: only its expiry */
    s->expires_at = expires_at;
    s->token_skew = skew_for(s, lifetime);
    return NULL;
  }
  ok_session_clear_token(s);
  s->token = dup_cstr(token);
  s->token_type = dup_cstr(type ? type : "Bearer");
  s->token_scope = dup_cstr(scope);
  if (!s->token || !s->token_type || !s->token_scope) { ok_session_clear_token(s); return "out of memory"; }
  s->missing_scopes = missing_scopes(s->cfg.scopes, scope);
  s->token_len = strlen(token);
  s->expires_at = expires_at;
  s->token_skew = skew_for(s, lifetime);
  ok_ath_of(token, s->token_len, s->token_ath);
  return NULL;
}

void ok_session_push_state(lua_State *L, ok_session *s) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, s->token); lua_setfield(L, -2, "token");
  lua_pushnumber(L, 2 * s->token_skew); lua_setfield(L, -2, "lifetime");
  lua_pushstring(L, s->token_type); lua_setfield(L, -2, "token_type");
  lua_pushnumber(L, s->expires_at); lua_setfield(L, -2, "expires_at");
  lua_pushstring(L, s->token_scope); lua_setfield(L, -2, "scope");
  if (s->as_nonce) { lua_pushstring(L, s->as_nonce); lua_setfield(L, -2, "as_nonce"); }
  if (!ok_json_encode(L, -1)) { lua_pop(L, 2); lua_pushnil(L); return; }
  lua_remove(L, -2);
}

int ok_session_adopt_state(lua_State *L, ok_session *s, int idx, double now, const char *rejected) {
  size_t n;
  const char *json = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
  int top = lua_gettop(L), fresh = 0;
  if (!json || !ok_json_decode(L, json, n) || !lua_istable(L, -1)) { lua_settop(L, top); return 0; }
  lua_getfield(L, -1, "as_nonce");
  if (lua_type(L, -1) == LUA_TSTRING) ok_session_set_nonce(s, 1, lua_tostring(L, -1));
  lua_getfield(L, -2, "token");
  lua_getfield(L, -3, "token_type");
  lua_getfield(L, -4, "expires_at");
  lua_getfield(L, -5, "scope");
  lua_getfield(L, -6, "lifetime");
  if (lua_type(L, -5) == LUA_TSTRING && lua_type(L, -3) == LUA_TNUMBER && lua_type(L, -1) == LUA_TNUMBER) {
    const char *tok = lua_tostring(L, -5);
    double expires_at = lua_tonumber(L, -3), lifetime = lua_tonumber(L, -1);
    char ath[44];
    ok_ath_of(tok, lua_rawlen(L, -5), ath);
    if (!(rejected && strcmp(ath, rejected) == 0) && expires_at - skew_for(s, lifetime) > now)
      fresh = ok_session_take_token(s, tok, lua_tostring(L, -4), lua_tostring(L, -2), expires_at, lifetime) == NULL;
  }
  lua_settop(L, top);
  return fresh;
}

ok_bucket *ok_session_bucket(ok_session *s, const char *name) {
  int i;
  for (i = 0; i < s->nbuckets; i++)
    if (strcmp(s->buckets[i].name, name) == 0) return &s->buckets[i];
  if (s->nbuckets < OK_MAX_BUCKETS) i = s->nbuckets++;
  else i = (int)(s->api_requests % OK_MAX_BUCKETS); /* full: forget one; it is learned again */
  memset(&s->buckets[i], 0, sizeof s->buckets[i]);
  snprintf(s->buckets[i].name, sizeof s->buckets[i].name, "%s", name);
  return &s->buckets[i];
}

ok_bucket *ok_session_counted(ok_session *s, ok_bucket *b) {
  return b->counted_as[0] ? ok_session_bucket(s, b->counted_as) : b;
}

#define OK_DEGRADED_SHARE 0.25

double ok_session_concurrency(const ok_session *s) {
  double max = s->degraded ? ceil(s->cfg.max_concurrency * OK_DEGRADED_SHARE) : s->cfg.max_concurrency;
  return s->concurrency_cap > 0 && s->concurrency_cap < max ? s->concurrency_cap : max;
}

double ok_session_capacity(const ok_session *s) {
  return s->degraded ? s->cfg.max_capacity * OK_DEGRADED_SHARE : s->cfg.max_capacity;
}

static void name_keys(char out[32], const char *tag, const char *id) {
  unsigned char md[32];
  ok_sha256(id, strlen(id), md);
  memcpy(out, tag, 4);
  ok_b64url_encode(md, 16, out + 4);
  strcpy(out + 26, ":");
}

/* Names this client in a shared store: org, client, token endpoint, scopes and DPoP key all
 * decide which token it may use, so clients differing in any of them never share one; the
 * budget is the app's (org and client), whatever token each of its clients holds. */
static void store_prefix(ok_session *s) {
  const ok_config *c = &s->cfg;
  size_t n = strlen(c->org_origin) + strlen(c->client_id) + strlen(c->token_url) + strlen(c->scopes) + 64;
  char *id = malloc(n);
  if (!id) return;
  snprintf(id, n, "%s\n%s", c->org_origin, c->client_id);
  name_keys(s->app_prefix, "oka:", id);
  snprintf(id, n, "%s\n%s\n%s\n%s\n%s", c->org_origin, c->client_id, c->token_url, c->scopes,
           c->dpop ? s->dpop_key->thumbprint : "bearer");
  name_keys(s->store_prefix, "okd:", id);
  free(id);
}

int ok_session_gc(lua_State *L) {
  ok_session *s = ok_session_check(L, 1);
  ok_session_clear_token(s);
  ok_config_free(&s->cfg);
  free(s->as_nonce);
  free(s->rs_nonce);
  memset(s, 0, sizeof *s);
  s->closed = 1;
  return 0;
}

int ok_session_create(lua_State *L, int cfg) {
  ok_session *s;
  int sidx, uv;
  cfg = lua_absindex(L, cfg);
  luaL_checktype(L, cfg, LUA_TTABLE);
  s = lua_newuserdata(L, sizeof *s); /* first: whatever config_read allocates, __gc frees */
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, OK_SESSION_MT);
  sidx = lua_gettop(L);
  lua_newtable(L);
  uv = lua_gettop(L);
  if (!ok_config_read(L, cfg, uv, &s->cfg)) return 0;
  lua_getfield(L, uv, "private_key");
  s->assertion_key = ok_key_check(L, -1);
  lua_getfield(L, uv, "dpop_key");
  s->dpop_key = lua_isnil(L, -1) ? NULL : ok_key_check(L, -1);
  lua_pop(L, 2);
  lua_setuservalue(L, sidx);
  store_prefix(s);
  lua_settop(L, sidx);
  return 1;
}
