/* keycache.c: a bounded LRU of imported DPoP proof keys (oktadpop.key_cache), keyed by the
 * RFC 7638 thumbprint of the proof's jwk and the proof's alg, so a returning client's key is
 * imported and checked once; and that thumbprint, computed from the jwk's members before any
 * import, so a proof by a key other than the token's cnf.jkt is refused without one. */
/*** @module oktadpop */
#include <string.h>
#include "jose/jose.h"

#define OK_KEYCACHE_DEFAULT 256
#define OK_KEYCACHE_MAX 65536
#define OK_SLOT_NAME 56 /* thumbprint (43) ":" alg (5) and the NUL */

typedef struct kc_slot {
  char name[OK_SLOT_NAME]; /* the uservalue's key for this slot: "<thumbprint>:<alg>" */
  int prev, next;          /* the recency list, most recent first; -1 ends it */
} kc_slot;

/* The keys themselves live in the userdata's uservalue table ([name] = slot, [slot] = key), so
 * Lua's collector frees an evicted key (its __gc) and nothing here owns OpenSSL memory. */
typedef struct ok_keycache {
  int size, count, head, tail;
  kc_slot slot[];
} ok_keycache;

static void kc_unlink(ok_keycache *c, int i) {
  kc_slot *s = &c->slot[i];
  if (s->prev >= 0) c->slot[s->prev].next = s->next; else c->head = s->next;
  if (s->next >= 0) c->slot[s->next].prev = s->prev; else c->tail = s->prev;
  s->prev = s->next = -1;
}

static void kc_push_front(ok_keycache *c, int i) {
  c->slot[i].prev = -1;
  c->slot[i].next = c->head;
  if (c->head >= 0) c->slot[c->head].prev = i;
  c->head = i;
  if (c->tail < 0) c->tail = i;
}

/* Pushes the cached key for name and marks it most recent; 1, or 0 with nothing pushed. */
static int kc_get(lua_State *L, ok_keycache *c, int cidx, const char *name) {
  int i, found;
  lua_getuservalue(L, cidx);
  lua_pushstring(L, name);
  lua_rawget(L, -2);
  found = lua_type(L, -1) == LUA_TNUMBER;
  i = found ? (int)lua_tointeger(L, -1) : -1;
  lua_pop(L, 1);
  if (!found) { lua_pop(L, 1); return 0; }
  lua_rawgeti(L, -1, i);
  lua_remove(L, -2);
  kc_unlink(c, i);
  kc_push_front(c, i);
  return 1;
}

/* Keeps the key at kidx under name, evicting the least recently used key when full. */
static void kc_put(lua_State *L, ok_keycache *c, int cidx, const char *name, int kidx) {
  int i;
  lua_getuservalue(L, cidx);
  if (c->count < c->size) {
    i = c->count++;
  } else {
    i = c->tail;
    kc_unlink(c, i);
    lua_pushstring(L, c->slot[i].name);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  snprintf(c->slot[i].name, sizeof c->slot[i].name, "%s", name);
  lua_pushstring(L, name);
  lua_pushinteger(L, i);
  lua_rawset(L, -3);
  lua_pushvalue(L, kidx);
  lua_rawseti(L, -2, i);
  lua_pop(L, 1);
  kc_push_front(c, i);
}

/* Appends the string member `name` of the table at jidx when it is made of base64url characters
 * only (so the canonical JSON needs no escaping and two member sets never print alike); 0 if not. */
static int add_b64_member(lua_State *L, luaL_Buffer *b, int jidx, const char *name) {
  size_t n;
  const char *s;
  int ok = 1;
  lua_getfield(L, jidx, name);
  s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  if (!s || n == 0 || n > 1024) ok = 0;
  for (size_t i = 0; ok && i < n; i++)
    ok = (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
         s[i] == '-' || s[i] == '_';
  if (ok) {
    lua_pushfstring(L, "\"%s\":\"%s\"", name, s);
    lua_remove(L, -2);
    luaL_addvalue(b); /* 5.4's buffer sits below the value: addvalue takes it from the top */
  } else {
    lua_pop(L, 1);
  }
  return ok;
}

/* RFC 7638 thumbprint of the JWK table at jidx, from its members as given, into tp[44]; 0 when
 * they are not an EC or RSA public key's in base64url (the importer then says what is wrong). */
static int jwk_thumbprint(lua_State *L, int jidx, char tp[44]) {
  const char *kty, *crv = NULL;
  unsigned char md[32];
  luaL_Buffer b;
  size_t n;
  int ok = 1, top = lua_gettop(L);
  lua_getfield(L, jidx, "kty");
  kty = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
  lua_getfield(L, jidx, "crv");
  for (int i = 0; i < 3; i++)
    if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), ok_alg_curve(OK_ES256 + i)) == 0)
      crv = ok_alg_curve(OK_ES256 + i);
  if (strcmp(kty, "EC") != 0 && strcmp(kty, "RSA") != 0) { lua_settop(L, top); return 0; }
  luaL_buffinit(L, &b);
  if (kty[0] == 'E') {
    ok = crv != NULL;
    if (ok) {
      lua_pushfstring(L, "{\"crv\":\"%s\",\"kty\":\"EC\",", crv);
      luaL_addvalue(&b);
    }
    ok = ok && add_b64_member(L, &b, jidx, "x");
    if (ok) luaL_addchar(&b, ',');
    ok = ok && add_b64_member(L, &b, jidx, "y");
  } else {
    luaL_addchar(&b, '{');
    ok = add_b64_member(L, &b, jidx, "e");
    if (ok) luaL_addstring(&b, ",\"kty\":\"RSA\",");
    ok = ok && add_b64_member(L, &b, jidx, "n");
  }
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
  if (ok) {
    const char *canon = lua_tolstring(L, -1, &n);
    ok = ok_sha256(canon, n, md);
    if (ok) tp[ok_b64url_encode(md, sizeof md, tp)] = '\0';
  }
  lua_settop(L, top);
  return ok;
}

int ok_keycache_proof_key(lua_State *L, int cidx, int jidx, int alg, const char *jkt) {
  ok_keycache *c = luaL_checkudata(L, cidx, OK_KEYCACHE_MT);
  char tp[44], name[OK_SLOT_NAME];
  ok_key *k;
  /* a JWK the importer would refuse is never found in the cache: the importer says why */
  if (!ok_jwk_members_ok(L, jidx) || !jwk_thumbprint(L, jidx, tp)) return ok_key_load_alg(L, jidx, alg);
  if (jkt && strcmp(tp, jkt) != 0) return -1;
  snprintf(name, sizeof name, "%s:%s", tp, ok_alg_name(alg));
  if (kc_get(L, c, cidx, name)) return 1;
  if (!ok_key_load_alg(L, jidx, alg)) return 0;
  k = ok_key_check(L, -1);
  /* members with leading zero bytes print another thumbprint than the key's own: not cached,
   * so a cached key's thumbprint is always the one its name says */
  if (strcmp(k->thumbprint, tp) == 0) kc_put(L, c, cidx, name, lua_gettop(L));
  return 1;
}

/*** oktadpop.key_cache([size=256]) -> a bounded LRU of imported proof keys for
 * verify_dpop_proof's key_cache option; cache:count(), cache:size() and cache:keys() (the
 * cached "<thumbprint>:<alg>" names, most recently used first) tell its use.
 * @function key_cache
 */
static int keycache_new(lua_State *L) {
  lua_Integer size = luaL_optinteger(L, 1, OK_KEYCACHE_DEFAULT);
  ok_keycache *c;
  luaL_argcheck(L, size >= 1 && size <= OK_KEYCACHE_MAX, 1, "1 to 65536 keys");
  c = lua_newuserdata(L, sizeof *c + (size_t)size * sizeof(kc_slot));
  c->size = (int)size;
  c->count = 0;
  c->head = c->tail = -1;
  luaL_setmetatable(L, OK_KEYCACHE_MT);
  lua_createtable(L, (int)size, (int)size);
  lua_setuservalue(L, -2);
  return 1;
}

/* cache:keys(): the cached names ("<thumbprint>:<alg>"), most recently used first. */
static int keycache_keys(lua_State *L) {
  ok_keycache *c = luaL_checkudata(L, 1, OK_KEYCACHE_MT);
  int n = 0;
  lua_createtable(L, c->count, 0);
  for (int i = c->head; i >= 0; i = c->slot[i].next) {
    lua_pushstring(L, c->slot[i].name);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

static int keycache_count(lua_State *L) {
  lua_pushinteger(L, ((ok_keycache *)luaL_checkudata(L, 1, OK_KEYCACHE_MT))->count);
  return 1;
}

static int keycache_size(lua_State *L) {
  lua_pushinteger(L, ((ok_keycache *)luaL_checkudata(L, 1, OK_KEYCACHE_MT))->size);
  return 1;
}

void ok_keycache_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"count", keycache_count}, {"size", keycache_size},
                                     {"keys", keycache_keys}, {NULL, NULL}};
  ok_class(L, OK_KEYCACHE_MT, methods, NULL);
  lua_pushcfunction(L, keycache_new);
  lua_setfield(L, -2, "key_cache");
}
