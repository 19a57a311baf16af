/* config.c: the client configuration, checked once: required options, URLs (https, or http
 * for loopback hosts only), scopes, numeric ranges and defaults, and the two keys (already key
 * objects: setup.c loads key sources, so nothing here reads a file). Part of the core: no I/O. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "core/core.h"

static const char *const config_names[] = {
    "org_url", "client_id", "scopes", "private_key", "dpop", "dpop_key", "token_url", "timeout",
    "connect_timeout", "max_retries", "max_retry_wait", "retry_base", "renew_skew", "max_body",
    "ca_file", "proxy", "user_agent", "debug", "max_concurrency", "max_capacity", "max_queue_wait", "buckets", NULL};

/* Defaults: a timeout above Okta's 30 s query timeout, so Okta's own E0000009 arrives first;
 * two retries and 300 ms backoff like Okta's SDKs; a concurrency below a free org's 15; 40 %
 * of each rate-limit bucket, below the 50 % one app may use by default. */
static const struct {
  const char *name;
  double dflt, lo, hi;
  size_t offset;
} numbers[] = {
    {"timeout", 40, 0.001, 86400, offsetof(ok_config, timeout)},
    {"connect_timeout", 10, 0.001, 3600, offsetof(ok_config, connect_timeout)},
    {"max_retries", 2, 0, 10, offsetof(ok_config, max_retries)},
    {"max_retry_wait", 60, 0, 3600, offsetof(ok_config, max_retry_wait)},
    {"retry_base", 0.3, 0, 60, offsetof(ok_config, retry_base)},
    {"renew_skew", 60, 0, 3000, offsetof(ok_config, renew_skew)},
    {"max_body", 16 * 1024 * 1024, 1024, 1024.0 * 1024 * 1024, offsetof(ok_config, max_body)},
    {"max_concurrency", 10, 1, 1000, offsetof(ok_config, max_concurrency)},
    {"max_capacity", 0.4, 0.01, 1, offsetof(ok_config, max_capacity)},
    {"max_queue_wait", 300, 0, 86400, offsetof(ok_config, max_queue_wait)},
};

static int cfg_fail(lua_State *L, const char *fmt, const char *arg) {
  ok_fail(L, "config", fmt, arg);
  return 0;
}

static char *dup_cstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* Pushes scopes as one space-separated string, from a string (spaces or commas) or a list. */
static int push_scopes(lua_State *L, int cfg) {
  luaL_Buffer b;
  int t, list;
  lua_getfield(L, cfg, "scopes");
  list = lua_gettop(L);
  t = lua_type(L, list);
  if (t != LUA_TSTRING && t != LUA_TTABLE) return cfg_fail(L, "%s is required: a string or a list of scope names", "scopes");
  luaL_buffinit(L, &b);
  for (int i = 1, first = 1;; i++) {
    const char *s;
    if (t == LUA_TTABLE) {
      if (i > (int)lua_rawlen(L, list)) break;
      lua_rawgeti(L, list, i);
      if (lua_type(L, -1) != LUA_TSTRING) return cfg_fail(L, "%s entries must be strings", "scopes");
      s = lua_tostring(L, -1);
      lua_pop(L, 1); /* the list keeps it alive */
    } else {
      if (i > 1) break;
      s = lua_tostring(L, list);
    }
    while (*s) {
      size_t n;
      while (*s == ' ' || *s == ',' || *s == '\t') s++;
      if (!(n = strcspn(s, " ,\t"))) break;
      if (!first) luaL_addchar(&b, ' ');
      luaL_addlstring(&b, s, n);
      s += n;
      first = 0;
    }
  }
  luaL_pushresult(&b);
  lua_remove(L, list);
  return 1;
}

/* The scope string at the top: not empty, printable ASCII without quote or backslash. */
static int scopes_ok(lua_State *L) {
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  if (!n) return cfg_fail(L, "%s is empty", "scopes");
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '"' || s[i] == '\\')
      return cfg_fail(L, "%s holds a control or invalid character", "scopes");
  return 1;
}

/* Checks an https URL (http only for loopback hosts) that can be a DPoP htu; writes its origin. */
static int check_url(lua_State *L, const char *name, const char *url, char *origin, size_t osz) {
  const char *why = NULL;
  char *norm;
  if (ok_url_origin(url, strlen(url), origin, osz, &why) != 0) {
    ok_fail(L, "config", "%s is not a valid URL: %s", name, why);
    return 0;
  }
  if (strncmp(origin, "https://", 8) != 0 && !ok_host_is_loopback(origin)) {
    ok_fail(L, "config", "%s must use https (plain http is allowed only for loopback hosts)", name);
    return 0;
  }
  if (!(norm = ok_htu_normalize(url, strlen(url), &why))) {
    ok_fail(L, "config", "%s is not a valid URL: %s", name, why);
    return 0;
  }
  free(norm);
  return 1;
}

/* org_url must be an origin; token_url defaults to the org's token endpoint. */
static int read_urls(lua_State *L, int cfg, ok_config *c) {
  char org[300], other[300];
  const char *org_url, *token_url, *path;
  if (!ok_opt_string(L, cfg, "org_url", &org_url, NULL) || !ok_opt_string(L, cfg, "token_url", &token_url, NULL))
    return 0;
  if (!org_url) return cfg_fail(L, "%s is required: https://<your org>.okta.com", "org_url");
  if (!check_url(L, "org_url", org_url, org, sizeof org)) return 0;
  path = ok_url_path(org_url);
  if (path && *path && strcmp(path, "/") != 0 && *path != '?' && *path != '#')
    return cfg_fail(L, "org_url must be the org's origin, without a path: got %s", org_url);
  if (token_url && !check_url(L, "token_url", token_url, other, sizeof other)) return 0;
  c->org_origin = dup_cstr(org);
  if (token_url) c->token_url = dup_cstr(token_url);
  else if ((c->token_url = malloc(strlen(org) + 20))) snprintf(c->token_url, strlen(org) + 20, "%s/oauth2/v1/token", org);
  c->allow_http = ok_host_is_loopback(org);
  return 1;
}

static int read_strings(lua_State *L, int cfg, ok_config *c) {
  const char *client_id, *ca_file, *proxy, *ua;
  if (!ok_opt_string(L, cfg, "client_id", &client_id, NULL) || !ok_opt_string(L, cfg, "ca_file", &ca_file, NULL) ||
      !ok_opt_string(L, cfg, "proxy", &proxy, NULL) || !ok_opt_string(L, cfg, "user_agent", &ua, NULL))
    return 0;
  if (!client_id || !*client_id) return cfg_fail(L, "%s is required", "client_id");
  if (!push_scopes(L, cfg) || !scopes_ok(L)) return 0;
  c->scopes = dup_cstr(lua_tostring(L, -1));
  lua_pop(L, 1);
  c->client_id = dup_cstr(client_id);
  c->ca_file = ca_file ? dup_cstr(ca_file) : NULL;
  c->proxy = proxy ? dup_cstr(proxy) : NULL;
  if (ua) c->user_agent = dup_cstr(ua);
  else {
    lua_pushfstring(L, "oktadpop/%s (%s)", OKTADPOP_VERSION, LUA_RELEASE);
    c->user_agent = dup_cstr(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return 1;
}

/* The assertion key must be private; the DPoP key is made in memory (ES256, which Okta takes
 * for DPoP and which signs fastest) unless given, and must not be the assertion key. */
static int read_keys(lua_State *L, int cfg, int uv, ok_config *c) {
  ok_key *ak, *dk;
  lua_getfield(L, cfg, "private_key");
  if (lua_isnil(L, -1)) return cfg_fail(L, "%s is required: the client assertion key (PEM, JWK or file path)", "private_key");
  if (!(ak = luaL_testudata(L, -1, OK_KEY_MT)) || !ak->pkey) return cfg_fail(L, "%s must be a key object", "private_key");
  if (!ak->is_private) return cfg_fail(L, "%s is a public key: the private key is needed to sign", "private_key");
  lua_setfield(L, uv, "private_key");
  if (!c->dpop) return 1;
  lua_getfield(L, cfg, "dpop_key");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (!ok_key_new_generated(L, OK_ES256, 0, NULL)) return 0;
  }
  if (!(dk = luaL_testudata(L, -1, OK_KEY_MT)) || !dk->pkey) return cfg_fail(L, "%s must be a key object", "dpop_key");
  if (!dk->is_private) return cfg_fail(L, "%s is a public key: the private key is needed to sign", "dpop_key");
  if (strcmp(dk->thumbprint, ak->thumbprint) == 0)
    return cfg_fail(L, "%s", "dpop_key must not be the client assertion key (private_key): use a separate key");
  lua_setfield(L, uv, "dpop_key");
  return 1;
}

static int read_flags(lua_State *L, int cfg, ok_config *c) {
  static const char *const flags[] = {"dpop", "debug"};
  int *slots[] = {&c->dpop, &c->debug};
  c->dpop = 1;
  for (int i = 0; i < 2; i++) {
    lua_getfield(L, cfg, flags[i]);
    if (lua_isboolean(L, -1)) *slots[i] = lua_toboolean(L, -1);
    else if (!lua_isnil(L, -1)) return cfg_fail(L, "%s must be a boolean", flags[i]);
    lua_pop(L, 1);
  }
  return 1;
}

/* buckets = {{pattern, name}, ...}: each checked, kept in order (the first match wins, before
 * Okta's table). */
static int read_buckets(lua_State *L, int cfg, ok_config *c) {
  int list, n;
  lua_getfield(L, cfg, "buckets");
  list = lua_gettop(L);
  if (lua_isnil(L, list)) return lua_pop(L, 1), 1;
  if (!lua_istable(L, list) || (n = (int)lua_rawlen(L, list)) > 64)
    return cfg_fail(L, "%s must be a list of at most 64 {pattern, name} pairs", "buckets");
  if (n && !(c->bucket_rules = calloc((size_t)n, sizeof *c->bucket_rules))) return cfg_fail(L, "%s: out of memory", "buckets");
  for (int i = 1; i <= n; i++) {
    const char *pattern, *name, *why;
    size_t plen, nlen;
    lua_rawgeti(L, list, i);
    if (!lua_istable(L, -1)) return cfg_fail(L, "%s entries are {pattern, name} pairs", "buckets");
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    pattern = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &plen) : NULL;
    name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &nlen) : NULL;
    if (!pattern || !name || !nlen || plen >= OK_BUCKET_PATTERN || nlen >= OK_BUCKET_NAME || strlen(pattern) != plen ||
        strlen(name) != nlen || strpbrk(name, "\r\n:"))
      return cfg_fail(L, "%s entries are {pattern, name}: two strings, a name under 48 bytes without ':' or a line break",
                      "buckets");
    if ((why = ok_bucket_pattern_check(pattern))) {
      ok_fail(L, "config", "buckets: %s: %s", pattern, why);
      return 0;
    }
    memcpy(c->bucket_rules[c->nbucket_rules].pattern, pattern, plen + 1);
    memcpy(c->bucket_rules[c->nbucket_rules].name, name, nlen + 1);
    c->nbucket_rules++;
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
  return 1;
}

int ok_config_read(lua_State *L, int cfg, int uv, ok_config *c) {
  int top = lua_gettop(L);
  cfg = lua_absindex(L, cfg);
  uv = lua_absindex(L, uv);
  if (!ok_opts_known(L, cfg, "client", config_names)) return 0;
  for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
    if (!ok_opt_number(L, cfg, numbers[i].name, numbers[i].dflt, numbers[i].lo, numbers[i].hi,
                       (double *)((char *)c + numbers[i].offset)))
      return 0;
  if (!read_flags(L, cfg, c) || !read_urls(L, cfg, c) || !read_strings(L, cfg, c) || !read_keys(L, cfg, uv, c) ||
      !read_buckets(L, cfg, c))
    return 0;
  if (!c->org_origin || !c->token_url || !c->client_id || !c->scopes || !c->user_agent)
    return ok_fail(L, "config", "out of memory"), 0;
  lua_settop(L, top);
  return 1;
}

void ok_config_free(ok_config *c) {
  free(c->org_origin); free(c->token_url); free(c->client_id); free(c->scopes);
  free(c->user_agent); free(c->ca_file); free(c->proxy); free(c->bucket_rules);
  memset(c, 0, sizeof *c);
}
