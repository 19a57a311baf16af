/* redisurl.c: what both Redis stores (transport/redis.c over hiredis, and the nginx one over
 * lua-resty-redis) agree on, in pure C: the URL ("redis://[user:password@]host:port[/db]",
 * escapes decoded), the key a store keeps (the caller's prefix, then a hash tag per client
 * so that one client's keys share a slot on Redis Cluster), and the scripts that make `incr`
 * with an initial value and ttl, and the guard's replay record, one atomic step each. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pure/pure.h"

/* incr(key, by, init, init_ttl): KEYS[1]; ARGV by, init, ttl in ms (0: none). */
const char OK_REDIS_INCR[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "  else redis.call('SET', KEYS[1], ARGV[2]) end\n"
    "end\n"
    "return redis.call('INCRBY', KEYS[1], ARGV[1])\n";

/* The guard's replay record: KEYS[1] the jti's key, KEYS[2] the replay cache's epoch (when
 * this dataset began: a Redis that lost its data starts a new one); ARGV ttl in ms, now, the
 * proof's iat. 1: first use; 0: seen; -1: the proof is older than the cache, which may have
 * lost the record of its use, so it cannot be checked and is refused. */
const char OK_REDIS_REPLAY[] =
    "local epoch = tonumber(redis.call('GET', KEYS[2]))\n"
    "if not epoch then epoch = tonumber(ARGV[2]) redis.call('SET', KEYS[2], ARGV[2]) end\n"
    "if tonumber(ARGV[3]) < epoch then return -1 end\n"
    "if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end\n"
    "return 0\n";

static int hexval(int c) {
  return c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
}

/* Copies n bytes of s, escapes decoded, into out (size outsz); 0 when it does not fit or an
 * escape is malformed. */
static int decode_into(const char *s, size_t n, char *out, size_t outsz) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) return 0;
      c = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
      i += 2;
    }
    if (c == 0 || o + 1 >= outsz) return 0;
    out[o++] = (char)c;
  }
  out[o] = '\0';
  return 1;
}

const char *ok_redis_url(const char *url, ok_redis_target *t) {
  const char *p, *at, *host, *host_end, *colon, *slash;
  memset(t, 0, sizeof *t);
  t->port = 6379;
  if (strncmp(url, "rediss://", 9) == 0) { t->tls = 1; p = url + 9; }
  else if (strncmp(url, "redis://", 8) == 0) p = url + 8;
  else return "a Redis URL is redis://[user:password@]host:port[/db] (or rediss://)";
  slash = strchr(p, '/');
  at = memchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
  if (at) {
    const char *sep = memchr(p, ':', (size_t)(at - p));
    if (!sep) return "the URL's credentials are user:password (or :password)";
    if (!decode_into(p, (size_t)(sep - p), t->user, sizeof t->user)) return "the URL's user is malformed or too long";
    if (!decode_into(sep + 1, (size_t)(at - sep - 1), t->password, sizeof t->password))
      return "the URL's password is malformed or longer than 255 bytes";
    p = at + 1;
  }
  host = p;
  if (*host == '[') {
    host_end = strchr(host, ']');
    if (!host_end) return "the URL's IPv6 host has no ]";
    colon = host_end[1] == ':' ? host_end + 1 : NULL;
    host++;
  } else {
    host_end = host + strcspn(host, ":/");
    colon = *host_end == ':' ? host_end : NULL;
  }
  if (host_end == host || (size_t)(host_end - host) >= sizeof t->host) return "the URL has no host, or a host too long";
  memcpy(t->host, host, (size_t)(host_end - host));
  for (const char *h = t->host; *h; h++)
    if (!isalnum((unsigned char)*h) && !strchr(".-_:", *h)) return "the URL's host holds a character a host cannot";
  if (colon) {
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || port < 1 || port > 65535 || (*end && *end != '/')) return "the URL's port is not 1 to 65535";
    t->port = (int)port;
  }
  if (slash && slash[1]) {
    char *end;
    long db = strtol(slash + 1, &end, 10);
    if (end == slash + 1 || *end || db < 0 || db > 65535) return "the URL's database is a number";
    t->db = (int)db;
  }
  return NULL;
}

size_t ok_redis_key(const char *prefix, const char *key, char *out, size_t outsz) {
  const char *first = strchr(key, ':'), *second = first ? strchr(first + 1, ':') : NULL;
  int tagged = strncmp(key, "ok", 2) == 0 && second; /* "okd:<client>:state" -> "{okd:<client>}:state" */
  int n = tagged ? snprintf(out, outsz, "%s{%.*s}%s", prefix, (int)(second - key), key, second)
                 : snprintf(out, outsz, "%s%s", prefix, key);
  return n < 0 || (size_t)n >= outsz ? 0 : (size_t)n;
}
