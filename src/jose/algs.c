/* algs.c: the JOSE algorithms oktadpop signs and verifies with (RS256/384/512 and
 * ES256/384/512 on P-256/384/521): their names, curves and sizes, and the SHA-2 digests,
 * fetched once per process and freed with the last Lua state that has the module open. */
#include <pthread.h>
#include <string.h>
#include "jose/jose.h"

static const struct {
  const char *name, *md, *group; /* group: OpenSSL curve name for ES */
  size_t ec_size;
} alg_table[OK_ALG_COUNT] = {
  {"RS256", "SHA256", NULL, 0},          {"RS384", "SHA384", NULL, 0},
  {"RS512", "SHA512", NULL, 0},          {"ES256", "SHA256", "prime256v1", 32},
  {"ES384", "SHA384", "secp384r1", 48},  {"ES512", "SHA512", "secp521r1", 66},
};
static const char *const jwk_curves[] = {"P-256", "P-384", "P-521"};

const char *ok_alg_name(enum ok_alg alg) { return alg_table[alg].name; }
const char *ok_alg_group(enum ok_alg alg) { return alg_table[alg].group; }
const char *ok_alg_curve(enum ok_alg alg) { return ok_alg_is_ec(alg) ? jwk_curves[alg - OK_ES256] : NULL; }
int ok_alg_is_ec(enum ok_alg alg) { return alg_table[alg].group != NULL; }
size_t ok_alg_ec_size(enum ok_alg alg) { return alg_table[alg].ec_size; }

const EVP_MD *ok_alg_md(enum ok_alg alg) {
  switch (alg) {
    case OK_RS256: case OK_ES256: return EVP_sha256();
    case OK_RS384: case OK_ES384: return EVP_sha384();
    default: return EVP_sha512();
  }
}

/* The fetched digests live while some Lua state has the module open and go with the last one:
 * lua_close unloads the module, and a pointer left in its statics would leak them on every
 * load (LSan and valgrind: definitely lost). md_users counts the registry sentinels made by
 * ok_md_cache_open; the lock orders fetching against freeing across threads. */
static EVP_MD *md_cache[3];
static int md_users;
static pthread_mutex_t md_lock = PTHREAD_MUTEX_INITIALIZER;

EVP_MD *ok_md_fetched(enum ok_alg alg) {
  int i = alg == OK_RS256 || alg == OK_ES256 ? 0 : alg == OK_RS384 || alg == OK_ES384 ? 1 : 2;
  EVP_MD *md = __atomic_load_n(&md_cache[i], __ATOMIC_ACQUIRE);
  if (!md) {
    pthread_mutex_lock(&md_lock);
    if (!(md = md_cache[i])) {
      md = EVP_MD_fetch(NULL, i == 0 ? "SHA2-256" : i == 1 ? "SHA2-384" : "SHA2-512", NULL);
      __atomic_store_n(&md_cache[i], md, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&md_lock);
  }
  return md;
}

static int md_cache_release(lua_State *L) {
  (void)L;
  pthread_mutex_lock(&md_lock);
  if (md_users > 0 && --md_users == 0)
    for (int i = 0; i < 3; i++) {
      EVP_MD_free(md_cache[i]); /* refcounted: a context still holding one keeps it */
      __atomic_store_n(&md_cache[i], NULL, __ATOMIC_RELEASE);
    }
  pthread_mutex_unlock(&md_lock);
  return 0;
}

int ok_sha256(const void *data, size_t n, unsigned char out[32]) {
  EVP_MD *md = ok_md_fetched(OK_RS256);
  return md && EVP_Digest(data, n, out, NULL, md, NULL) == 1;
}

int ok_alg_from_name(const char *name) {
  for (int i = 0; i < OK_ALG_COUNT; i++)
    if (strcmp(name, alg_table[i].name) == 0) return i;
  return -1;
}

void ok_md_cache_open(lua_State *L) {
  /* one user of the digest cache per luaopen; a second luaopen in this state replaces the
   * sentinel, whose collection gives its count back */
  pthread_mutex_lock(&md_lock);
  md_users++;
  pthread_mutex_unlock(&md_lock);
  lua_newuserdata(L, 1);
  if (luaL_newmetatable(L, "oktadpop.mdcache.mt")) { /* not the sentinel's own registry key */
    lua_pushcfunction(L, md_cache_release);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "oktadpop.mdcache");
}
