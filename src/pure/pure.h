/* pure.h: the pure C helpers: no Lua state, no I/O, no clock. Outside text goes in, results
 * come out malloc'd or in caller buffers, so each is easy to test and fuzz on its own. */
#ifndef OKTADPOP_PURE_H
#define OKTADPOP_PURE_H

#include <stddef.h>

/* ---- b64url.c: base64url without padding (RFC 7515 section 2) ---- */
size_t ok_b64url_len(size_t n);
/* Writes ok_b64url_len(n) chars (no NUL) to out; returns that length. */
size_t ok_b64url_encode(const unsigned char *in, size_t n, char *out);
/* Bytes ok_b64url_decode may write for n chars: it writes whole 3-byte groups. */
size_t ok_b64url_room(size_t n);
/* Decodes into out (ok_b64url_room(n) bytes); returns the length or -1 on bad input. */
long ok_b64url_decode(const char *in, size_t n, unsigned char *out);

/* ---- url.c: URLs as DPoP and the org see them ---- */
/* Normalises an absolute http(s) URL for comparing htu (RFC 9449 section 4.3, RFC 3986 section
 * 6.2.2: escapes of characters safe in a path decoded, the rest upper-case): a malloc'd string
 * or NULL. Distinct resources (a/b and a%2Fb) stay distinct: the guard compares with it. */
char *ok_htu_normalize(const char *url, size_t n, const char **why);
/* The htu Okta's resource server accepts for a URL: origin and the path with every escape
 * decoded, then % space " # escaped again (it compares the decoded path: okta-sdk-java's
 * DPoPInterceptor, merged in PR #1528 after tests on a live org; okta-sdk-python #541,
 * okta-sdk-nodejs #521). A malloc'd string or NULL. */
char *ok_htu_okta(const char *url, size_t n, const char **why);
/* Writes "scheme://host[:port]" (lower case, default port dropped) into out; 0 on success. */
int ok_url_origin(const char *url, size_t n, char *out, size_t outsz, const char **why);
/* Where the path of an absolute URL starts (after the authority), or NULL when not absolute. */
const char *ok_url_path(const char *url);
/* The first segment of the path (up to its query) that is "." or "..", raw or escaped, or that
 * decodes to pieces holding one around an escaped '/' or '\\'; NULL when none. Such a path
 * names another resource once anything on the way removes dot segments. *seglen: its length. */
const char *ok_path_dot_segment(const char *path, size_t n, size_t *seglen);
int ok_host_is_loopback(const char *origin);
/* Percent-encodes all but RFC 3986 unreserved characters; out needs 3n; returns the length. */
size_t ok_pct_encode(const char *s, size_t n, char *out);

/* ---- http.c: HTTP fields from servers ---- */
/* Finds the rel="next" target in a Link header value; returns malloc'd URL or NULL. */
char *ok_link_next(const char *value, size_t n);
/* Auth-param `param` of a WWW-Authenticate value (RFC 9110 section 11.6.1), from the DPoP
 * challenge if there is one, else Bearer, else the first; any order and quoting. malloc'd
 * value or NULL. */
char *ok_www_auth_param(const char *value, size_t n, const char *param);
/* Seconds since the epoch of an HTTP date (IMF-fixdate, RFC 850 or asctime), or -1. */
double ok_http_date(const char *s);
/* The smallest number of a header that a proxy may have repeated ("60, 58"), or -1. */
double ok_header_min(const char *s);

/* ---- dotenv.c: .env files ---- */
typedef void (*ok_dotenv_cb)(void *ud, const char *key, size_t klen, const char *val, size_t vlen);
/* Parses KEY=value lines (comments, quotes, `export`); scratch needs n bytes. Returns the
 * number of pairs, or -(line number) of the first malformed line (a NUL in a value is one). */
int ok_dotenv_parse(const char *buf, size_t n, char *scratch, ok_dotenv_cb cb, void *ud);

/* ---- ratelimit.c: Okta's rate-limit buckets and the pacing arithmetic ---- */
#define OK_BUCKET_NAME 48
#define OK_BUCKET_PATTERN 200

/* A family of endpoints: "[METHOD[,METHOD] ]/path/{id}/..." (a last "*" for any rest), or "*". */
typedef struct ok_bucket_rule {
  char pattern[OK_BUCKET_PATTERN];
  char name[OK_BUCKET_NAME];
} ok_bucket_rule;

/* NULL when pattern is well-formed, else why not. */
const char *ok_bucket_pattern_check(const char *pattern);
int ok_bucket_pattern_matches(const char *pattern, const char *method, const char *path);
/* The bucket a request counts against: the first of rules (a configuration's) that matches,
 * else Okta's table ("/api/v1/users", "GET /api/v1/users/{id}", "/api/v1/apps", ...). */
void ok_bucket_name(const ok_bucket_rule *rules, int nrules, const char *method, const char *path,
                    char out[OK_BUCKET_NAME]);

/* What one client knows of one bucket, in server seconds. */
typedef struct ok_bucket {
  char name[OK_BUCKET_NAME];
  char counted_as[OK_BUCKET_NAME]; /* another bucket whose count this one shares, or "" */
  double limit;           /* X-Rate-Limit-Limit; 0 until a response said */
  double reset;           /* the end of the window, as the server's latest X-Rate-Limit-Reset says */
  double seen_used;       /* the most of that window the server said was used (limit - remaining) */
  double unlimited_until; /* answers came without rate-limit headers: no bucket until then */
  double probe_until;     /* a request of this client is out to learn the bucket, until then */
} ok_bucket;

/* Takes in one response's headers (values as sent, or NULL); returns 1 when they described
 * an org-wide bucket (a concurrency 429 says limit 0 and is not one). */
int ok_bucket_observe(ok_bucket *b, const char *limit, const char *remaining, const char *reset);
/* Whether the window the server described is still open at server time now. */
int ok_bucket_window_open(const ok_bucket *b, double now);
/* Requests this client may send in the bucket's window: max_capacity of the limit, at least 1. */
long ok_bucket_allowed(const ok_bucket *b, double max_capacity);
/* Whether the count-th request of the window fits in the budget (the server's count wins when
 * it is higher). */
int ok_bucket_admits(const ok_bucket *b, double max_capacity, long count);
/* Whether b's first answer shows it counts with other: the same limit and window, and a count
 * that already holds other's requests. */
int ok_bucket_shares_count(const ok_bucket *b, const ok_bucket *other);

/* ---- redisurl.c: what both Redis stores agree on ---- */
typedef struct ok_redis_target {
  char host[256], user[128], password[256];
  int port, db, tls;
} ok_redis_target;
/* Reads "redis://[user:password@]host:port[/db]" (or rediss://) into t; NULL, or why not. */
const char *ok_redis_url(const char *url, ok_redis_target *t);
/* The key a Redis store keeps for a store key: prefix, then the client's part of the key in a
 * hash tag ("okd:<id>:state" becomes "{okd:<id>}:state"); its length, 0 when it does not fit. */
size_t ok_redis_key(const char *prefix, const char *key, char *out, size_t outsz);
/* The scripts of incr(key, by, init, init_ttl) and of the guard's replay record. */
extern const char OK_REDIS_INCR[], OK_REDIS_REPLAY[];

#endif
