/* setup.c: configuration as callers give it, turned into what the core takes. Here, and not in
 * the core, files and the environment are read: key sources (PEM, JWK, or a file path) become
 * key objects, a key file its group or others can read earns a warning, OKTADPOP_DEBUG turns the
 * debug log on, and from_env reads the seed's .env names (and the Okta SDKs'), the environment
 * winning over the file. Every driver builds its session here (oktadpop.core.session). */
/*** @module oktadpop */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "binding/binding.h"

#define OK_ENV_FILE_MAX (1024 * 1024)

/* Whether the debug log is on for the config at cfg: debug=, or OKTADPOP_DEBUG=1. */
static int setup_debug(lua_State *L, int cfg) {
  const char *env = getenv("OKTADPOP_DEBUG");
  int on;
  lua_getfield(L, cfg, "debug");
  on = lua_isfunction(L, -1) || lua_toboolean(L, -1) || (lua_isnil(L, -1) && env && *env && strcmp(env, "0") != 0);
  lua_pop(L, 1);
  return on;
}

/* Loads the key source in field name of cfg into the same field of out (kid and passphrase
 * apply to the assertion key); returns 1, or 0 with nil, err naming the option. */
static int load_key_field(lua_State *L, int cfg, int out, const char *name, int with_kid) {
  int top = lua_gettop(L);
  lua_getfield(L, cfg, name);
  if (lua_isnil(L, -1) || luaL_testudata(L, -1, OK_KEY_MT)) { lua_setfield(L, out, name); return 1; }
  lua_createtable(L, 0, 2);
  lua_getfield(L, cfg, "passphrase");
  lua_setfield(L, -2, "passphrase");
  if (with_kid) { lua_getfield(L, cfg, "kid"); lua_setfield(L, -2, "kid"); }
  if (!ok_key_load(L, top + 1, top + 2)) {
    lua_getfield(L, -1, "message");
    ok_fail(L, "config", "%s: %s", name, lua_tostring(L, -1));
    return 0;
  }
  lua_setfield(L, out, name);
  lua_settop(L, top);
  return 1;
}

/* Appends a warning when the key option `name` is a file its group or others can read. */
static void mode_warning(lua_State *L, int cfg, int warnings, const char *name) {
  int mode;
  lua_getfield(L, cfg, name);
  mode = ok_key_file_mode(L, -1);
  if (mode >= 0 && (mode & 077)) {
    char line[600];
    snprintf(line, sizeof line, "warning: %s file %.400s is open to its group or others (mode %04o): chmod 600 it, "
             "owned by the user that loads it (in nginx, the worker user)", name, lua_tostring(L, -1), mode);
    lua_pushstring(L, line);
    lua_rawseti(L, warnings, (int)lua_rawlen(L, warnings) + 1);
  }
  lua_pop(L, 1);
}

/* Copies the caller's config without the setup-only and driver-only options. */
static void copy_config(lua_State *L, int cfg, const char *const *drop) {
  static const char *const setup_only[] = {"kid", "passphrase", "debug", NULL};
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, cfg)) {
    int skip = 0;
    for (int i = 0; setup_only[i] && lua_type(L, -2) == LUA_TSTRING; i++) skip |= strcmp(lua_tostring(L, -2), setup_only[i]) == 0;
    for (int i = 0; drop && drop[i] && lua_type(L, -2) == LUA_TSTRING; i++) skip |= strcmp(lua_tostring(L, -2), drop[i]) == 0;
    if (skip) { lua_pop(L, 1); continue; }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_settable(L, -4);
  }
}

int ok_setup_session(lua_State *L, int cfg, const char *const *drop) {
  const char *ca_file, *kid, *pass;
  int out, warnings;
  cfg = lua_absindex(L, cfg);
  if (!ok_opt_string(L, cfg, "ca_file", &ca_file, NULL) || !ok_opt_string(L, cfg, "kid", &kid, NULL) ||
      !ok_opt_string(L, cfg, "passphrase", &pass, NULL))
    return 0;
  lua_getfield(L, cfg, "debug");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1) && !lua_isfunction(L, -1))
    return ok_fail(L, "config", "debug must be a function(line) or a boolean"), 0;
  lua_pop(L, 1);
  if (ca_file && access(ca_file, R_OK) != 0) return ok_fail(L, "config", "ca_file %s cannot be read: %s", ca_file, strerror(errno)), 0;
  copy_config(L, cfg, drop);
  out = lua_gettop(L);
  lua_pushboolean(L, setup_debug(L, cfg));
  lua_setfield(L, out, "debug");
  if (!load_key_field(L, cfg, out, "private_key", 1) || !load_key_field(L, cfg, out, "dpop_key", 0)) return 0;
  if (!ok_session_create(L, out)) return 0;
  lua_newtable(L);
  warnings = lua_gettop(L);
  mode_warning(L, cfg, warnings, "private_key");
  mode_warning(L, cfg, warnings, "dpop_key");
  return 1;
}

/* ---- from_env ---- */

typedef struct env_ctx { lua_State *L; int tidx; } env_ctx;

static void env_set(void *ud, const char *k, size_t kn, const char *v, size_t vn) {
  env_ctx *e = ud;
  lua_pushlstring(e->L, k, kn);
  lua_pushlstring(e->L, v, vn);
  lua_rawset(e->L, e->tidx);
}

/* The value of the first of names that is set in the environment (which wins) or the .env. */
static const char *env_get(lua_State *L, int tidx, const char *const *names) {
  for (int i = 0; names[i]; i++) {
    const char *v = getenv(names[i]);
    if (v && *v) return v;
    lua_getfield(L, tidx, names[i]);
    v = lua_tostring(L, -1);
    lua_pop(L, 1); /* the .env table keeps it alive */
    if (v && *v) return v;
  }
  return NULL;
}

/* Whether line number `line` (from 1) of the n bytes at buf holds a NUL byte. */
static int line_has_nul(const char *buf, size_t n, int line) {
  const char *p = buf, *end = buf + n, *eol;
  for (int i = 1; i < line && p < end; i++) {
    eol = memchr(p, '\n', (size_t)(end - p));
    p = eol ? eol + 1 : end;
  }
  eol = memchr(p, '\n', (size_t)(end - p));
  return memchr(p, '\0', (size_t)((eol ? eol : end) - p)) != NULL;
}

/* Reads the .env file at path into the table at tidx; 1, or 0 with nil, err. */
static int read_dotenv(lua_State *L, const char *file, int tidx) {
  const char *err;
  char *buf;
  size_t got;
  int r, nul;
  env_ctx ctx = {L, tidx};
  /* the parser's scratch space follows the text in the same GC'd block */
  if ((err = ok_read_small_file(L, file, OK_ENV_FILE_MAX, 2, &buf, &got)))
    return ok_fail(L, "config", "%s: %s", file, err == OK_FILE_CANNOT_OPEN ? strerror(errno) : "not a regular file under 1 MiB"), 0;
  r = ok_dotenv_parse(buf, got, buf + got + 1, env_set, &ctx);
  nul = r < 0 && line_has_nul(buf, got, -r);
  OPENSSL_cleanse(buf, 2 * got + 2);
  lua_pop(L, 1);
  if (r < 0)
    return ok_fail(L, "config", "%s: line %d %s", file, -r, nul ? "holds a NUL byte: a value cannot" : "is not KEY=value"), 0;
  return 1;
}

int ok_setup_env(lua_State *L, const char *path) {
  static const struct { const char *option, *names[3]; int required; } vars[] = {
      {"org_url", {"OKTA_ORG_URL", "OKTA_CLIENT_ORGURL", NULL}, 1},
      {"client_id", {"OKTA_CLIENT_ID", "OKTA_CLIENT_CLIENTID", NULL}, 1},
      {"scopes", {"OKTA_SCOPES", "OKTA_CLIENT_SCOPES", NULL}, 1},
      {"private_key", {"OKTA_CC_PRIVATE_KEY_FILE", "OKTA_CLIENT_PRIVATEKEY", NULL}, 1},
      {"kid", {"OKTA_CLIENT_KEYID", NULL, NULL}, 0},
      {"dpop_key", {"OKTA_DPOP_PRIVATE_KEY_FILE", NULL, NULL}, 0},
      {"ca_file", {"OKTADPOP_CA_FILE", NULL, NULL}, 0},
      {"redis_url", {"OKTA_REDIS_URL", NULL, NULL}, 0}}; /* the driver makes it the store */
  int tidx, cfg;
  lua_newtable(L);
  tidx = lua_gettop(L);
  if ((path || access(".env", F_OK) == 0) && !read_dotenv(L, path ? path : ".env", tidx)) return 0;
  lua_newtable(L);
  cfg = lua_gettop(L);
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = env_get(L, tidx, vars[i].names);
    if (!v && vars[i].required)
      return ok_fail(L, "config", "%s%s%s is not set (in the environment or %s)", vars[i].names[0],
                     vars[i].names[1] ? " (or " : "", vars[i].names[1] ? vars[i].names[1] : "", path ? path : "./.env"), 0;
    if (!v) continue;
    if (strcmp(vars[i].option, "private_key") == 0 && strstr(v, "-----BEGIN") && strstr(v, "\\n"))
      luaL_gsub(L, v, "\\n", "\n"); /* a PEM squeezed onto one line */
    else
      lua_pushstring(L, v);
    lua_setfield(L, cfg, vars[i].option);
  }
  return 1;
}

/*** oktadpop.core.session(config [, drop]) -> session, warnings | nil, err: for drivers written
 * in Lua; drop lists the driver's own option names.
 * @function core.session
 */
static int core_session(lua_State *L) {
  const char *drop[16];
  int n = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    for (n = 0; n < 15 && lua_rawgeti(L, 2, n + 1) == LUA_TSTRING; n++) drop[n] = lua_tostring(L, -1);
  }
  drop[n] = NULL;
  ok_setup_session(L, 1, drop); /* session, warnings; or nil, err */
  return 2;
}

/*** oktadpop.core.env_config([dotenv_path]) -> config | nil, err: what from_env reads (the
 * environment over the .env file), as oktadpop.new's config.
 * @function core.env_config
 */
static int core_env_config(lua_State *L) {
  const char *path = luaL_optstring(L, 1, NULL);
  return ok_setup_env(L, path) ? 1 : 2;
}

void ok_setup_open(lua_State *L) {
  lua_pushcfunction(L, core_session);
  lua_setfield(L, -2, "session");
  lua_pushcfunction(L, core_env_config);
  lua_setfield(L, -2, "env_config");
}
