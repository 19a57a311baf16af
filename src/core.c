/* core.c: the transport-free protocol core. Owns the client's config and state (token,
 * per-server DPoP nonces, clock offset) and the operation state machine: given the last
 * HTTP response it emits the next action, {action="send"} with the exact request to make,
 * {action="sleep"}, {action="done", response=} or {action="fail", error=}. It decides on the
 * token exchange with the nonce retry, resource nonce retries, token refresh, rate-limit
 * waits and server-error backoff. It never does I/O: curl.c and the OpenResty driver do. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "oktadpop.h"
#if defined(__has_include)
#if __has_include(<luajit.h>)
#include <luajit.h>
#endif
#endif

#define OK_CLOCK_SKEW_MIN 5.0 /* below this, our clock is trusted for iat */
#define OK_TOKEN_NONCE_TRIES 2
#define OK_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

double ok_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dup_cstr(const char *s) {
  char *p;
  size_t n;
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

void ok_client_clear_token(ok_client *c) {
  set_str(&c->token, NULL, 1);
  set_str(&c->token_type, NULL, 0);
  set_str(&c->token_scope, NULL, 0);
  c->token_len = 0;
  c->token_ath[0] = '\0';
  c->expires_at = 0;
}

int ok_client_token_check(const ok_client *c, const char *token, const char *type) {
  if (!token || !*token || strpbrk(token, "\r\n ")) return OK_TOKEN_UNUSABLE;
  if (c->dpop && strcasecmp(type, "DPoP") != 0) return OK_TOKEN_NOT_DPOP;
  return OK_TOKEN_OK;
}

void ok_client_set_nonce(ok_client *c, int is_token, const char *nonce) {
  if (nonce && *nonce && strlen(nonce) < 512) set_str(is_token ? &c->as_nonce : &c->rs_nonce, nonce, 0);
}

void ok_client_set_token(ok_client *c, const char *token, const char *type, const char *scope, double expires_at) {
  if (c->token && strcmp(c->token, token) == 0 && strcmp(c->token_type, type) == 0 &&
      strcmp(c->token_scope, scope) == 0) { /* nginx workers re-adopt the shared token per request */
    c->expires_at = expires_at;
    return;
  }
  ok_client_clear_token(c);
  c->token = dup_cstr(token);
  c->token_type = dup_cstr(type);
  c->token_scope = dup_cstr(scope);
  if (!c->token || !c->token_type || !c->token_scope) { ok_client_clear_token(c); return; }
  c->token_len = strlen(token);
  c->expires_at = expires_at;
  ok_ath_of(token, c->token_len, c->token_ath);
}

ok_client *ok_client_check(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, OK_CLIENT_MT);
}

static int client_gc(lua_State *L) {
  ok_client *c = ok_client_check(L, 1);
  ok_curl_free(&c->net);
  ok_client_clear_token(c);
  free(c->org_origin); free(c->token_url); free(c->client_id); free(c->scopes);
  free(c->user_agent); free(c->ca_file); free(c->proxy); free(c->as_nonce); free(c->rs_nonce);
  memset(c, 0, sizeof *c);
  c->closed = 1;
  return 0;
}

/* ---- debug log: opt-in, every line written here, and none carries a secret ---- */

void ok_client_debug(lua_State *L, int cidx, const char *fmt, ...) {
  ok_client *c = ok_client_check(L, cidx);
  char line[600];
  va_list ap;
  int has_fn;
  lua_getuservalue(L, cidx);
  lua_getfield(L, -1, "debug");
  has_fn = lua_isfunction(L, -1);
  if (!has_fn && !c->debug_stderr) { lua_pop(L, 2); return; }
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (has_fn) {
    lua_pushstring(L, line);
    if (lua_pcall(L, 1, 0, 0) != 0) lua_pop(L, 1); /* a failing logger must not break a call */
    lua_pop(L, 1);
  } else {
    fprintf(stderr, "oktadpop: %s\n", line);
    lua_pop(L, 2);
  }
}

/* ---- config ---- */

static const char *const config_keys[] = {
    "org_url", "client_id", "scopes", "private_key", "kid", "dpop", "dpop_key", "token_url",
    "timeout", "connect_timeout", "max_retries", "max_retry_wait", "ca_file", "proxy",
    "user_agent", "debug", "renew_skew", "retry_base", "max_body", "passphrase", NULL};

static int cfg_fail(lua_State *L, const char *fmt, const char *arg) {
  return ok_fail(L, "config", fmt, arg);
}

/* Reads an optional number in [lo, hi]; returns 0 and pushes nil, err when out of range. */
static int cfg_number(lua_State *L, int cfg, const char *name, double dflt, double lo, double hi, double *out) {
  lua_getfield(L, cfg, name);
  *out = dflt;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER) { lua_pop(L, 1); cfg_fail(L, "%s must be a number", name); return 0; }
    *out = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  if (!(*out >= lo && *out <= hi)) {
    ok_fail(L, "config", "%s must be between %g and %g", name, lo, hi);
    return 0;
  }
  return 1;
}

static const char *cfg_string(lua_State *L, int cfg, const char *name, int *bad) {
  const char *s = NULL;
  lua_getfield(L, cfg, name); /* left on the stack to keep the string alive */
  if (lua_type(L, -1) == LUA_TSTRING) s = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1)) *bad = 1;
  return s;
}

/* Pushes scopes as one space-separated string, from a string (spaces or commas) or a list;
 * returns 1, or 0 with nil, err pushed. */
static int cfg_scopes(lua_State *L, int cfg) {
  luaL_Buffer b;
  int t;
  lua_getfield(L, cfg, "scopes");
  t = lua_type(L, -1);
  if (t == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    luaL_buffinit(L, &b);
    for (int first = 1; *s;) {
      size_t n;
      while (*s == ' ' || *s == ',' || *s == '\t') s++;
      n = strcspn(s, " ,\t");
      if (!n) break;
      if (!first) luaL_addchar(&b, ' ');
      luaL_addlstring(&b, s, n);
      s += n;
      first = 0;
    }
    luaL_pushresult(&b);
  } else if (t == LUA_TTABLE) {
    int n = (int)lua_rawlen(L, -1), list = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
      if (i > 1) luaL_addchar(&b, ' '); /* before the push: the buffer must be on top */
      lua_rawgeti(L, list, i);
      if (lua_type(L, -1) != LUA_TSTRING) { cfg_fail(L, "%s entries must be strings", "scopes"); return 0; }
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
  } else {
    { cfg_fail(L, "%s is required: a string or a list of scope names", "scopes"); return 0; }
  }
  lua_remove(L, -2);
  {
    const char *s = lua_tostring(L, -1);
    if (!*s) { cfg_fail(L, "%s is empty", "scopes"); return 0; }
    for (; *s; s++)
      if ((unsigned char)*s < 0x21 || *s == '"' || *s == '\\' || (unsigned char)*s >= 0x7f) {
        if (*s == ' ') continue;
        cfg_fail(L, "%s holds a control or invalid character", "scopes");
        return 0;
      }
  }
  return 1;
}

/* Checks the URL at the top can be a DPoP htu (no malformed escape); else replaces it by
 * nil, err and returns 0. Pure C between the malloc and the free. */
static int url_usable(lua_State *L) {
  size_t n;
  const char *why = NULL, *url = lua_tolstring(L, -1, &n);
  char *norm = ok_htu_normalize(url, n, &why);
  free(norm);
  if (norm) return 1;
  lua_pop(L, 1);
  ok_fail(L, "config", "invalid URL: %s", why);
  return 0;
}

/* Validates an https URL (http only for loopback hosts); writes its origin. */
static int cfg_url(lua_State *L, const char *name, const char *url, char *origin, size_t osz) {
  const char *why = NULL;
  if (ok_url_origin(url, strlen(url), origin, osz, &why) != 0) {
    ok_fail(L, "config", "%s is not a valid URL: %s", name, why);
    return 0;
  }
  if (strncmp(origin, "https://", 8) != 0 && !ok_host_is_loopback(origin)) {
    ok_fail(L, "config", "%s must use https (plain http is allowed only for loopback hosts)", name);
    return 0;
  }
  lua_pushstring(L, url);
  if (!url_usable(L)) {
    lua_getfield(L, -1, "message");
    ok_fail(L, "config", "%s: %s", name, lua_tostring(L, -1));
    return 0;
  }
  lua_pop(L, 1);
  return 1;
}

/* Loads a key option into the uservalue table at uv under name; returns the key or NULL. */
static ok_key *cfg_key(lua_State *L, int cfg, int uv, const char *name, const char *kid, const char *pass) {
  ok_key *k;
  int top = lua_gettop(L);
  lua_getfield(L, cfg, name);
  lua_createtable(L, 0, 2);
  if (kid) { lua_pushstring(L, kid); lua_setfield(L, -2, "kid"); }
  if (pass) { lua_pushstring(L, pass); lua_setfield(L, -2, "passphrase"); }
  if (ok_key_load(L, top + 1, top + 2) != 1) {
    lua_getfield(L, -1, "message");
    ok_fail(L, "config", "%s: %s", name, lua_tostring(L, -1));
    return NULL;
  }
  k = ok_key_check(L, -1);
  if (!k->is_private) { ok_fail(L, "config", "%s is a public key: the private key is needed to sign", name); return NULL; }
  lua_setfield(L, uv, name);
  lua_settop(L, top);
  return k;
}

/* A key file that its group or others can open gets a warning in the debug log (it loads). */
static void key_file_warning(lua_State *L, int cfg, int cidx, const char *name) {
  int mode;
  lua_getfield(L, cfg, name);
  mode = ok_key_file_mode(L, -1);
  if (mode >= 0 && (mode & 077))
    ok_client_debug(L, cidx, "warning: %s file %s is open to its group or others (mode %04o): chmod 600 it",
                    name, lua_tostring(L, -1), mode);
  lua_pop(L, 1);
}

int ok_client_create(lua_State *L, int cfg) {
  char org[300], tok_origin[300];
  const char *org_url, *client_id, *kid, *token_url, *ca_file, *proxy, *ua, *pass;
  int bad = 0, uv, scopes;
  double timeout, ctimeout, retries, wait, skew, base, max_body;
  ok_client *c;

  cfg = lua_absindex(L, cfg);
  luaL_checktype(L, cfg, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, cfg)) { /* unknown options are typos: say so rather than ignore them */
    int known = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (int i = 0; config_keys[i]; i++) known |= strcmp(lua_tostring(L, -2), config_keys[i]) == 0;
    if (!known) return cfg_fail(L, "unknown option '%s'", lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
    lua_pop(L, 1);
  }
  org_url = cfg_string(L, cfg, "org_url", &bad);
  if (!org_url || bad) return cfg_fail(L, "%s is required: https://<your org>.okta.com", "org_url");
  if (!cfg_url(L, "org_url", org_url, org, sizeof org)) return 2;
  {
    const char *path = strstr(org_url, "://") + 3;
    path += strcspn(path, "/?#");
    if (*path && strcmp(path, "/") != 0) return cfg_fail(L, "org_url must be the org's origin, without a path: got %s", org_url);
  }
  client_id = cfg_string(L, cfg, "client_id", &bad);
  if (!client_id || !*client_id || bad) return cfg_fail(L, "%s is required", "client_id");
  if (!cfg_scopes(L, cfg)) return 2;
  scopes = lua_gettop(L);
  kid = cfg_string(L, cfg, "kid", &bad);
  token_url = cfg_string(L, cfg, "token_url", &bad);
  ca_file = cfg_string(L, cfg, "ca_file", &bad);
  proxy = cfg_string(L, cfg, "proxy", &bad);
  ua = cfg_string(L, cfg, "user_agent", &bad);
  pass = cfg_string(L, cfg, "passphrase", &bad);
  if (bad) return cfg_fail(L, "%s", "kid, token_url, ca_file, proxy, user_agent and passphrase must be strings");
  if (token_url && !cfg_url(L, "token_url", token_url, tok_origin, sizeof tok_origin)) return 2;
  if (ca_file && access(ca_file, R_OK) != 0) return cfg_fail(L, "ca_file %s cannot be read", ca_file);
  if (!cfg_number(L, cfg, "timeout", 30, 0.001, 86400, &timeout) ||
      !cfg_number(L, cfg, "connect_timeout", 10, 0.001, 3600, &ctimeout) ||
      !cfg_number(L, cfg, "max_retries", 2, 0, 10, &retries) ||
      !cfg_number(L, cfg, "max_retry_wait", 60, 0, 3600, &wait) ||
      !cfg_number(L, cfg, "renew_skew", 60, 0, 3000, &skew) ||
      !cfg_number(L, cfg, "retry_base", 0.25, 0, 60, &base) ||
      !cfg_number(L, cfg, "max_body", 16 * 1024 * 1024, 1024, 1024.0 * 1024 * 1024, &max_body))
    return 2;
  lua_getfield(L, cfg, "debug");
  if (!lua_isnil(L, -1) && !lua_isfunction(L, -1) && !lua_isboolean(L, -1))
    return cfg_fail(L, "%s must be a function(line) or a boolean", "debug");
  lua_getfield(L, cfg, "dpop");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) return cfg_fail(L, "%s must be a boolean", "dpop");

  c = lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, OK_CLIENT_MT);
  lua_newtable(L);
  uv = lua_gettop(L);
  lua_getfield(L, cfg, "debug");
  if (lua_isfunction(L, -1)) lua_setfield(L, uv, "debug");
  else {
    const char *env = getenv("OKTADPOP_DEBUG");
    c->debug_stderr = lua_toboolean(L, -1) || (env && *env && strcmp(env, "0") != 0);
    lua_pop(L, 1);
  }
  lua_getfield(L, cfg, "dpop");
  c->dpop = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!(c->assertion_key = cfg_key(L, cfg, uv, "private_key", kid, pass))) return 2;
  if (c->dpop) {
    lua_getfield(L, cfg, "dpop_key");
    if (lua_isnil(L, -1)) { /* ES256: accepted by Okta for DPoP, and the fastest to sign */
      lua_pop(L, 1);
      if (ok_key_new_generated(L, OK_ES256, 0, NULL) != 1) return 2;
      c->dpop_key = ok_key_check(L, -1);
      lua_setfield(L, uv, "dpop_key");
    } else {
      lua_pop(L, 1);
      if (!(c->dpop_key = cfg_key(L, cfg, uv, "dpop_key", NULL, NULL))) return 2;
    }
    if (strcmp(c->dpop_key->thumbprint, c->assertion_key->thumbprint) == 0)
      return cfg_fail(L, "%s", "dpop_key must not be the client assertion key (private_key): use a separate key");
  }
  lua_pushvalue(L, uv);
  lua_setuservalue(L, -3);
  lua_pop(L, 1);
  key_file_warning(L, cfg, lua_gettop(L), "private_key");
  if (c->dpop) key_file_warning(L, cfg, lua_gettop(L), "dpop_key");

  c->org_origin = dup_cstr(org);
  c->client_id = dup_cstr(client_id);
  c->scopes = dup_cstr(lua_tostring(L, scopes));
  if (token_url) c->token_url = dup_cstr(token_url);
  else {
    lua_pushfstring(L, "%s/oauth2/v1/token", org);
    c->token_url = dup_cstr(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  if (ua) c->user_agent = dup_cstr(ua);
  else {
    lua_pushfstring(L, "oktadpop/%s %s %s", OKTADPOP_VERSION, ok_curl_version(),
#if defined(LUAJIT_VERSION)
                    LUAJIT_VERSION
#else
                    LUA_RELEASE
#endif
    );
    c->user_agent = dup_cstr(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  c->ca_file = dup_cstr(ca_file);
  c->proxy = dup_cstr(proxy);
  c->allow_http = ok_host_is_loopback(org);
  c->timeout_ms = (long)(timeout * 1000);
  c->connect_timeout_ms = (long)(ctimeout * 1000);
  c->max_retries = (int)retries;
  c->max_retry_wait = wait;
  c->renew_skew = skew;
  c->retry_base = base;
  c->max_body = (size_t)max_body;
  if (!c->org_origin || !c->client_id || !c->scopes || !c->token_url || !c->user_agent ||
      (ca_file && !c->ca_file) || (proxy && !c->proxy))
    return ok_fail(L, "config", "out of memory");
  return 1;
}

/* ---- URLs ---- */

/* Pushes k=v pairs percent-encoded; into a GC'd scratch userdata, so nothing can leak. */
static void push_pair(lua_State *L, const char *k, size_t kn, const char *v, size_t vn) {
  char *out = lua_newuserdata(L, 3 * (kn + vn) + 2);
  size_t o = ok_pct_encode(k, kn, out);
  out[o++] = '=';
  o += ok_pct_encode(v, vn, out + o);
  lua_pushlstring(L, out, o);
  lua_remove(L, -2);
}

/* Pushes the query string of the table at qidx ("a=1&b=2"), in key order so URLs are
 * reproducible; list values repeat the key. */
static void push_query(lua_State *L, int qidx) {
  int keys, parts, n = 0, np = 0;
  lua_newtable(L);
  keys = lua_gettop(L);
  lua_newtable(L);
  parts = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, qidx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "query keys must be strings");
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, ++n);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, keys);
  lua_call(L, 1, 0);
  for (int i = 1; i <= n; i++) {
    size_t kn, vn;
    const char *k, *v;
    int vals, nv;
    lua_rawgeti(L, keys, i);
    k = lua_tolstring(L, -1, &kn);
    lua_pushvalue(L, -1);
    lua_gettable(L, qidx);
    vals = lua_gettop(L);
    nv = lua_istable(L, vals) ? (int)lua_rawlen(L, vals) : 1;
    for (int j = 1; j <= nv; j++) {
      if (lua_istable(L, vals)) lua_rawgeti(L, vals, j); else lua_pushvalue(L, vals);
      if (lua_isboolean(L, -1)) lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "query value for '%s' must be a string, number or boolean", k);
      v = lua_tolstring(L, -1, &vn);
      push_pair(L, k, kn, v, vn);
      lua_rawseti(L, parts, ++np);
      lua_settop(L, vals);
    }
    lua_settop(L, vals - 2);
  }
  lua_getfield(L, -1, "concat"); /* table.concat(parts, "&") */
  lua_pushvalue(L, parts);
  lua_pushliteral(L, "&");
  lua_call(L, 2, 1);
  lua_replace(L, keys);
  lua_settop(L, keys);
}

int ok_client_url(lua_State *L, ok_client *c, const char *path, int qidx) {
  luaL_Buffer b;
  char origin[300];
  const char *why = NULL;
  int query = 0;
  if (qidx) qidx = lua_absindex(L, qidx);
  for (const char *p = path; *p; p++)
    if ((unsigned char)*p <= 0x20 || *p == 0x7f)
      return ok_fail(L, "config", "path contains a space or control character: encode it");
  if (qidx && !lua_isnil(L, qidx)) {
    if (!lua_istable(L, qidx)) return ok_fail(L, "config", "query must be a table");
    push_query(L, qidx);
    query = lua_gettop(L);
  }
  luaL_buffinit(L, &b);
  if (path[0] == '/') {
    if (path[1] == '/') return ok_fail(L, "config", "path must not start with //");
    luaL_addstring(&b, c->org_origin);
  } else {
    /* an absolute URL (a next link) is used only on the org's own origin */
    if (ok_url_origin(path, strlen(path), origin, sizeof origin, &why) != 0)
      return ok_fail(L, "config", "invalid URL: %s", why);
    if (strcmp(origin, c->org_origin) != 0)
      return ok_fail(L, "config", "refusing a request to %s: only %s receives the token", origin, c->org_origin);
    path = strstr(path, "://") + 3;
    path += strcspn(path, "/?#");
    luaL_addstring(&b, c->org_origin);
    if (*path != '/') luaL_addchar(&b, '/');
  }
  luaL_addstring(&b, path);
  if (query && lua_rawlen(L, query) > 0) {
    luaL_addchar(&b, strchr(path, '?') ? '&' : '?');
    lua_pushvalue(L, query);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return url_usable(L) ? 1 : 2;
}

/* ---- operations ---- */

enum { PH_START, PH_TOKEN, PH_API, PH_SLEEP, PH_END };

typedef struct ok_op {
  int is_token_op, force, idempotent, phase, resume; /* resume: PH_TOKEN or PH_API after a sleep */
  char *method, *url;
  char *sent_nonce;   /* the nonce in the last token request's proof */
  char *retry_for;    /* X-Okta-Request-Id of the last 429, for X-Okta-Retry-For */
  int nonce_tries, rs_nonce_retried, token_refreshed, rl_retries, srv_retries;
} ok_op;

static int op_gc(lua_State *L) {
  ok_op *op = luaL_checkudata(L, 1, OK_OP_MT);
  free(op->method); free(op->url); free(op->sent_nonce); free(op->retry_for);
  memset(op, 0, sizeof *op);
  op->phase = PH_END;
  return 0;
}

int ok_op_create(lua_State *L, int cidx, const char *method, const char *url, int force, int body_idx, int headers_idx) {
  ok_op *op;
  cidx = lua_absindex(L, cidx);
  if (body_idx) body_idx = lua_absindex(L, body_idx);
  if (headers_idx) headers_idx = lua_absindex(L, headers_idx);
  op = lua_newuserdata(L, sizeof *op);
  memset(op, 0, sizeof *op);
  luaL_setmetatable(L, OK_OP_MT);
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, cidx);
  lua_setfield(L, -2, "client");
  if (body_idx && !lua_isnil(L, body_idx)) { lua_pushvalue(L, body_idx); lua_setfield(L, -2, "body"); }
  if (headers_idx && !lua_isnil(L, headers_idx)) { lua_pushvalue(L, headers_idx); lua_setfield(L, -2, "headers"); }
  lua_setuservalue(L, -2);
  op->is_token_op = method == NULL;
  op->force = force;
  if (method) {
    op->method = dup_cstr(method);
    op->url = dup_cstr(url);
    if (!op->method || !op->url) return luaL_error(L, "out of memory");
    op->idempotent = strcmp(method, "GET") == 0 || strcmp(method, "PUT") == 0 ||
                     strcmp(method, "DELETE") == 0 || strcmp(method, "HEAD") == 0 ||
                     strcmp(method, "OPTIONS") == 0;
  }
  return 1;
}

static long long proof_iat(ok_client *c) {
  double off = fabs(c->clock_offset) > OK_CLOCK_SKEW_MIN ? c->clock_offset : 0;
  return (long long)floor(ok_now() + off);
}

static int token_fresh(ok_client *c) {
  return c->token && c->expires_at - c->renew_skew > ok_now();
}

/* True when the headers table at idx has name, in any letter case. */
static int has_header(lua_State *L, int idx, const char *name) {
  int found = 0;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (!found && lua_next(L, idx)) {
    found = lua_type(L, -2) == LUA_TSTRING && strcasecmp(lua_tostring(L, -2), name) == 0;
    lua_pop(L, 1);
  }
  if (found) lua_pop(L, 1);
  return found;
}

/* Starts an action table {action="send", kind=, method=, url=, headers={}}; leaves the
 * headers table on top of it. */
static void send_begin(lua_State *L, ok_client *c, const char *kind, const char *method, const char *url) {
  lua_createtable(L, 0, 6);
  lua_pushliteral(L, "send"); lua_setfield(L, -2, "action");
  lua_pushstring(L, kind); lua_setfield(L, -2, "kind");
  lua_pushstring(L, method); lua_setfield(L, -2, "method");
  lua_pushstring(L, url); lua_setfield(L, -2, "url");
  lua_createtable(L, 0, 8);
  lua_pushstring(L, c->user_agent); lua_setfield(L, -2, "User-Agent");
  lua_pushliteral(L, "application/json"); lua_setfield(L, -2, "Accept");
}

/* Pushes the token request: a fresh assertion and a fresh proof every time (Okta consumes
 * an assertion's jti even when it answers use_dpop_nonce). */
static int send_token(lua_State *L, int cidx, ok_op *op) {
  ok_client *c = ok_client_check(L, cidx);
  long long iat = proof_iat(c);
  luaL_Buffer b;
  int top = lua_gettop(L), pairs;
  if (ok_assertion_make(L, c->assertion_key, c->client_id, c->token_url, iat, 300) != 1) return 0;
  if (c->dpop && ok_dpop_make(L, c->dpop_key, "POST", c->token_url, c->as_nonce, NULL, iat) != 1) return 0;
  set_str(&op->sent_nonce, c->dpop ? c->as_nonce : NULL, 0);
  send_begin(L, c, "token", "POST", c->token_url);
  lua_pushliteral(L, "application/x-www-form-urlencoded");
  lua_setfield(L, -2, "Content-Type");
  if (c->dpop) { lua_pushvalue(L, top + 2); lua_setfield(L, -2, "DPoP"); }
  lua_setfield(L, -2, "headers");
  push_pair(L, "scope", 5, c->scopes, strlen(c->scopes));
  push_pair(L, "client_assertion_type", 21, OK_ASSERTION_TYPE, strlen(OK_ASSERTION_TYPE));
  pairs = lua_gettop(L) - 1;
  luaL_buffinit(L, &b); /* absolute indexes: 5.4 pushes a placeholder, 5.1 does not */
  luaL_addstring(&b, "grant_type=client_credentials&");
  lua_pushvalue(L, pairs);
  luaL_addvalue(&b);
  luaL_addchar(&b, '&');
  lua_pushvalue(L, pairs + 1);
  luaL_addvalue(&b);
  luaL_addstring(&b, "&client_assertion=");
  lua_pushvalue(L, top + 1); /* base64url and dots: nothing to escape */
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_replace(L, -3);
  lua_pop(L, 1);
  lua_setfield(L, -2, "body");
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  c->token_requests++;
  op->phase = PH_TOKEN;
  ok_client_debug(L, cidx, "token request: POST %s (client_id %s, scope \"%s\", DPoP %s%s)", c->token_url,
                  c->client_id, c->scopes, c->dpop ? "proof" : "off",
                  c->dpop ? (c->as_nonce ? " with nonce" : " without nonce") : "");
  return 1;
}

/* Pushes the API request with a fresh proof (a retried request never replays a jti). */
static int send_token(lua_State *L, int cidx, ok_op *op);

static int send_api(lua_State *L, int cidx, int opidx, ok_op *op) {
  ok_client *c = ok_client_check(L, cidx);
  int top = lua_gettop(L);
  if (!c->token) return send_token(L, cidx, op); /* another operation may have dropped it */
  if (c->dpop && ok_dpop_make(L, c->dpop_key, op->method, op->url, c->rs_nonce, c->token_ath, proof_iat(c)) != 1)
    return 0;
  send_begin(L, c, "api", op->method, op->url);
  lua_getuservalue(L, opidx);
  lua_getfield(L, -1, "headers"); /* the caller's headers first: ours win */
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, -6);
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "body");
  if (!lua_isnil(L, -1)) {
    lua_setfield(L, -4, "body");
    if (!has_header(L, -2, "content-type")) { lua_pushliteral(L, "application/json"); lua_setfield(L, -3, "Content-Type"); }
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushfstring(L, "%s %s", c->dpop ? "DPoP" : "Bearer", c->token);
  lua_setfield(L, -2, "Authorization");
  if (c->dpop) { lua_pushvalue(L, top + 1); lua_setfield(L, -2, "DPoP"); }
  if (op->rl_retries) {
    if (op->retry_for) { lua_pushstring(L, op->retry_for); lua_setfield(L, -2, "X-Okta-Retry-For"); }
    lua_pushfstring(L, "%d", op->rl_retries); /* header values are strings */
    lua_setfield(L, -2, "X-Okta-Retry-Count");
  }
  lua_setfield(L, -2, "headers");
  if (c->dpop) lua_remove(L, top + 1);
  c->api_requests++;
  op->phase = PH_API;
  return 1;
}

static void push_sleep(lua_State *L, ok_op *op, double seconds, int resume) {
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "sleep");
  lua_setfield(L, -2, "action");
  lua_pushnumber(L, seconds);
  lua_setfield(L, -2, "seconds");
  op->phase = PH_SLEEP;
  op->resume = resume;
}

/* Turns the nil, err pair on top into {action="fail", error=err}. */
static int push_fail(lua_State *L, ok_op *op) {
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "fail");
  lua_setfield(L, -2, "action");
  lua_insert(L, -2);
  lua_setfield(L, -2, "error");
  lua_remove(L, -2);
  op->phase = PH_END;
  return 1;
}

/* Reads a response header (names are lower case) as a C string; NULL when absent. */
static const char *resp_header(lua_State *L, int hidx, const char *name) {
  const char *v;
  lua_getfield(L, hidx, name);
  v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the headers table keeps it alive */
  return v;
}

/* Seconds to wait after a 429: X-Rate-Limit-Reset minus the server's Date plus 1 s, on the
 * server's clock; Retry-After otherwise; capped by max_retry_wait. */
static double rate_limit_wait(lua_State *L, ok_client *c, int hidx) {
  const char *reset = resp_header(L, hidx, "x-rate-limit-reset");
  const char *date = resp_header(L, hidx, "date");
  const char *after = resp_header(L, hidx, "retry-after");
  double wait = 1, d = date ? ok_http_date(date) : -1;
  if (reset && d > 0) wait = atof(reset) - d + 1;
  else if (reset) wait = atof(reset) - ok_now() + 1;
  else if (after) wait = ok_http_date(after) > 0 ? ok_http_date(after) - (d > 0 ? d : ok_now()) : atof(after);
  if (!(wait >= 0)) wait = 0;
  return wait > c->max_retry_wait ? c->max_retry_wait : wait;
}

static double backoff(ok_client *c, int attempt) {
  double w = c->retry_base * pow(2, attempt);
  return w > c->max_retry_wait ? c->max_retry_wait : w;
}

/* Pushes the decoded body of the response (JSON when it says so, else the string) and sets
 * *json_err when a JSON body did not parse. */
static void push_body(lua_State *L, int ridx, int hidx, const char **json_err) {
  size_t n;
  const char *ct = resp_header(L, hidx, "content-type"), *body;
  lua_getfield(L, ridx, "body");
  body = lua_tolstring(L, -1, &n);
  *json_err = NULL;
  if (!body || n == 0) return;
  if (ct && strstr(ct, "json")) {
    if (ok_json_decode(L, body, n)) { lua_remove(L, -2); return; }
    *json_err = "the response says JSON but its body does not parse";
    lua_pop(L, 2);
  }
}

/* Pushes {status=, headers=, body=, next=} for the caller, or nil, err for a bad next link. */
static void push_result(lua_State *L, int ridx, int hidx, ok_client *c) {
  const char *json_err, *link = resp_header(L, hidx, "link");
  lua_createtable(L, 0, 5);
  lua_getfield(L, ridx, "status");
  lua_setfield(L, -2, "status");
  lua_pushvalue(L, hidx);
  lua_setfield(L, -2, "headers");
  push_body(L, ridx, hidx, &json_err);
  lua_setfield(L, -2, "body");
  if (json_err) { lua_pushstring(L, json_err); lua_setfield(L, -2, "json_error"); }
  if (link) {
    char *next = ok_link_next(link, strlen(link));
    if (next) { lua_pushstring(L, next); lua_setfield(L, -2, "next"); }
    free(next);
  }
  (void)c;
}

/* Pushes an error object for an OAuth error response of the token endpoint. */
static void push_oauth_error(lua_State *L, int ridx, int hidx, long status, const char *what) {
  const char *json_err, *code = NULL, *desc = NULL;
  push_body(L, ridx, hidx, &json_err);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "error");
    code = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
    lua_getfield(L, -2, "error_description");
    desc = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
  }
  ok_error_push(L, "oauth", "%s (HTTP %ld%s%s%s%s)", what, status, code ? ": " : "", code ? code : "",
                desc ? ": " : "", desc ? desc : "");
  ok_error_setint(L, "status", status);
  ok_error_setstr(L, "code", code);
  ok_error_setstr(L, "summary", desc);
  ok_error_setstr(L, "request_id", resp_header(L, hidx, "x-okta-request-id"));
}

/* Takes in what every response says: the server's nonce and its clock. */
static void learn(lua_State *L, ok_client *c, int hidx, int is_token) {
  const char *date = resp_header(L, hidx, "date");
  ok_client_set_nonce(c, is_token, resp_header(L, hidx, "dpop-nonce"));
  if (date) {
    double d = ok_http_date(date);
    if (d > 0) c->clock_offset = d - ok_now();
  }
}

/* Stores the token of a 200 response; pushes nothing on success, nil, err on failure. */
static int take_token(lua_State *L, int cidx, int ridx, int hidx) {
  ok_client *c = ok_client_check(L, cidx);
  const char *json_err, *tok, *type;
  double expires_in = 3600;
  push_body(L, ridx, hidx, &json_err);
  if (!lua_istable(L, -1)) { lua_pop(L, 1); ok_fail(L, "json", "token response is not a JSON object"); return 0; }
  lua_getfield(L, -1, "access_token");
  lua_getfield(L, -2, "token_type");
  lua_getfield(L, -3, "expires_in");
  lua_getfield(L, -4, "scope");
  tok = lua_type(L, -4) == LUA_TSTRING ? lua_tostring(L, -4) : NULL;
  type = lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : "";
  if (lua_type(L, -2) == LUA_TNUMBER) expires_in = lua_tonumber(L, -2);
  if (!(expires_in >= 0 && expires_in <= 86400.0 * 366)) expires_in = 0; /* NaN and absurd values: renew */
  switch (ok_client_token_check(c, tok, type)) {
  case OK_TOKEN_UNUSABLE: ok_fail(L, "oauth", "token response has no usable access_token"); return 0;
  case OK_TOKEN_NOT_DPOP:
    ok_fail(L, "oauth", "the token endpoint issued a %s token, not DPoP: the Okta app is not set to require DPoP "
            "(enable \"Require Demonstrating Proof of Possession (DPoP) header in token requests\"), or pass dpop=false", type);
    return 0;
  case OK_TOKEN_OK: break;
  }
  ok_client_set_token(c, tok, type, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : c->scopes,
                      ok_now() + expires_in);
  lua_pop(L, 5);
  if (!c->token) { ok_fail(L, "config", "out of memory"); return 0; }
  ok_client_debug(L, cidx, "token acquired: %s, expires in %.0f s, scope \"%s\"", c->token_type, expires_in,
                  c->token_scope ? c->token_scope : "");
  return 1;
}

/* Pushes {action="done", token=, info=} for a token operation. */
static int push_token_done(lua_State *L, ok_client *c, ok_op *op) {
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "done");
  lua_setfield(L, -2, "action");
  lua_pushstring(L, c->token);
  lua_setfield(L, -2, "token");
  lua_createtable(L, 0, 4);
  lua_pushstring(L, c->token_type); lua_setfield(L, -2, "token_type");
  lua_pushnumber(L, c->expires_at); lua_setfield(L, -2, "expires_at");
  lua_pushinteger(L, (lua_Integer)floor(c->expires_at - ok_now())); lua_setfield(L, -2, "expires_in");
  lua_pushstring(L, c->token_scope); lua_setfield(L, -2, "scope");
  lua_setfield(L, -2, "info");
  op->phase = PH_END;
  return 1;
}

static int push_api_done(lua_State *L, int ridx, int hidx, ok_client *c, ok_op *op) {
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "done");
  lua_setfield(L, -2, "action");
  push_result(L, ridx, hidx, c);
  lua_setfield(L, -2, "response");
  op->phase = PH_END;
  return 1;
}

/* After a token is in hand: the API call, or the end of a token operation. */
static int after_token(lua_State *L, int cidx, int opidx, ok_client *c, ok_op *op) {
  if (op->is_token_op) return push_token_done(L, c, op);
  return send_api(L, cidx, opidx, op) ? 1 : push_fail(L, op);
}

static int step_token_response(lua_State *L, int cidx, int opidx, int ridx, int hidx, ok_client *c, ok_op *op) {
  long status;
  lua_getfield(L, ridx, "status");
  status = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  ok_client_debug(L, cidx, "token response: HTTP %ld%s", status, resp_header(L, hidx, "dpop-nonce") ? " (with DPoP-Nonce)" : "");
  if (status == 200) {
    if (!take_token(L, cidx, ridx, hidx)) return push_fail(L, op);
    return after_token(L, cidx, opidx, c, op);
  }
  if (status == 400) {
    const char *json_err, *code = NULL;
    push_body(L, ridx, hidx, &json_err);
    if (lua_istable(L, -1)) { lua_getfield(L, -1, "error"); code = lua_tostring(L, -1); }
    if (code && strcmp(code, "use_dpop_nonce") == 0 && c->dpop) {
      const char *nonce = resp_header(L, hidx, "dpop-nonce");
      if (nonce && c->as_nonce && strcmp(c->as_nonce, nonce) == 0 && /* stored by learn() */
          op->nonce_tries < OK_TOKEN_NONCE_TRIES && !(op->sent_nonce && strcmp(op->sent_nonce, nonce) == 0)) {
        op->nonce_tries++;
        ok_client_debug(L, cidx, "token endpoint asked for a DPoP nonce: retrying with the server's nonce");
        return send_token(L, cidx, op) ? 1 : push_fail(L, op);
      }
      push_oauth_error(L, ridx, hidx, status, nonce ? "token endpoint keeps rejecting the DPoP nonce"
                                                     : "token endpoint asked for a DPoP nonce but sent none");
      lua_pushnil(L);
      lua_insert(L, -2);
      return push_fail(L, op);
    }
  }
  if (status == 429 && op->rl_retries < c->max_retries) {
    op->rl_retries++;
    push_sleep(L, op, rate_limit_wait(L, c, hidx), PH_TOKEN);
    return 1;
  }
  if (status >= 500 && op->srv_retries < c->max_retries) {
    push_sleep(L, op, backoff(c, op->srv_retries++), PH_TOKEN);
    return 1;
  }
  push_oauth_error(L, ridx, hidx, status, "token request failed");
  lua_pushnil(L);
  lua_insert(L, -2);
  return push_fail(L, op);
}

/* What the WWW-Authenticate challenge says: 1 use_dpop_nonce, 2 invalid_token, 0 other. Pure C
 * between the parse and the free, so no Lua error can strand the copy. */
static int challenge(const char *www) {
  char *werr = www ? ok_www_auth_param(www, strlen(www), "error") : NULL;
  int kind = !werr ? 0 : strcmp(werr, "use_dpop_nonce") == 0 ? 1 : strcmp(werr, "invalid_token") == 0 ? 2 : 0;
  free(werr);
  return kind;
}

static int step_api_response(lua_State *L, int cidx, int opidx, int ridx, int hidx, ok_client *c, ok_op *op) {
  long status;
  int said;
  lua_getfield(L, ridx, "status");
  status = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  said = challenge(resp_header(L, hidx, "www-authenticate"));
  ok_client_debug(L, cidx, "%s %s -> HTTP %ld", op->method, op->url, status);
  if ((status == 401 || status == 400) && said == 1 && c->dpop && !op->rs_nonce_retried &&
      c->rs_nonce && resp_header(L, hidx, "dpop-nonce") &&
      strcmp(c->rs_nonce, resp_header(L, hidx, "dpop-nonce")) == 0) {
    op->rs_nonce_retried = 1;
    ok_client_debug(L, cidx, "resource server asked for a DPoP nonce: retrying once with it");
    return send_api(L, cidx, opidx, op) ? 1 : push_fail(L, op);
  }
  if (status == 401 && said == 2 && !op->token_refreshed) {
    op->token_refreshed = 1;
    ok_client_clear_token(c);
    ok_client_debug(L, cidx, "access token rejected (invalid_token): fetching a new one once");
    return send_token(L, cidx, op) ? 1 : push_fail(L, op);
  }
  if (status == 429 && op->rl_retries < c->max_retries) {
    const char *rid = resp_header(L, hidx, "x-okta-request-id");
    double wait = rate_limit_wait(L, c, hidx);
    set_str(&op->retry_for, rid, 0);
    op->rl_retries++;
    ok_client_debug(L, cidx, "rate limited: waiting %.1f s (retry %d of %d)", wait, op->rl_retries, c->max_retries);
    push_sleep(L, op, wait, PH_API);
    return 1;
  }
  if (status >= 500 && op->idempotent && op->srv_retries < c->max_retries) {
    double wait = backoff(c, op->srv_retries++);
    ok_client_debug(L, cidx, "server error %ld: retrying in %.2f s", status, wait);
    push_sleep(L, op, wait, PH_API);
    return 1;
  }
  return push_api_done(L, ridx, hidx, c, op);
}

int ok_op_step(lua_State *L, int opidx, int respidx) {
  ok_op *op = luaL_checkudata(L, opidx, OK_OP_MT);
  ok_client *c;
  int cidx, hidx, top;
  opidx = lua_absindex(L, opidx);
  if (respidx) respidx = lua_absindex(L, respidx);
  lua_getuservalue(L, opidx);
  lua_getfield(L, -1, "client");
  lua_remove(L, -2);
  cidx = lua_gettop(L);
  c = ok_client_check(L, cidx);
  if (c->closed) { ok_fail(L, "config", "the client is closed"); return push_fail(L, op); }
  top = lua_gettop(L);

  if (op->phase == PH_END) return luaL_error(L, "operation already finished");
  if (op->phase == PH_START || op->phase == PH_SLEEP) {
    int resume = op->resume;
    if (op->phase == PH_START) {
      if (op->is_token_op && !op->force && token_fresh(c)) return push_token_done(L, c, op);
      resume = op->force || !token_fresh(c) ? PH_TOKEN : PH_API;
    }
    if (resume == PH_API && !token_fresh(c)) resume = PH_TOKEN; /* expired while we waited */
    if (resume == PH_TOKEN) return send_token(L, cidx, op) ? 1 : push_fail(L, op);
    return send_api(L, cidx, opidx, op) ? 1 : push_fail(L, op);
  }
  if (!respidx || !lua_istable(L, respidx)) return luaL_error(L, "step expects the response to the last request");

  lua_getfield(L, respidx, "error");
  if (!lua_isnil(L, -1)) { /* no HTTP response: retry what is safe to retry */
    int is_token = op->phase == PH_TOKEN;
    if ((is_token || op->idempotent) && op->srv_retries < c->max_retries) {
      double wait = backoff(c, op->srv_retries++);
      lua_getfield(L, -1, "message");
      ok_client_debug(L, cidx, "no response (%s): retrying in %.2f s", lua_tostring(L, -1), wait);
      lua_settop(L, top);
      push_sleep(L, op, wait, is_token ? PH_TOKEN : PH_API);
      return 1;
    }
    lua_pushnil(L);
    lua_insert(L, -2);
    return push_fail(L, op);
  }
  lua_pop(L, 1);
  lua_getfield(L, respidx, "headers");
  if (!lua_istable(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
  hidx = lua_gettop(L);
  learn(L, c, hidx, op->phase == PH_TOKEN);
  if (op->phase == PH_TOKEN) return step_token_response(L, cidx, opidx, respidx, hidx, c, op);
  return step_api_response(L, cidx, opidx, respidx, hidx, c, op);
}

/* op:step([response]) -> action: the core API that drivers run. */
static int op_step(lua_State *L) {
  luaL_checkudata(L, 1, OK_OP_MT);
  return ok_op_step(L, 1, lua_isnoneornil(L, 2) ? 0 : 2);
}

void ok_core_open(lua_State *L) {
  if (luaL_newmetatable(L, OK_OP_MT)) {
    lua_pushcfunction(L, op_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    lua_pushcfunction(L, op_step);
    lua_setfield(L, -2, "step");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, OK_CLIENT_MT)) {
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
