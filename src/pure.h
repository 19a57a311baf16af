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

/* ---- ratelimit.c: Okta's rate-limit buckets and the pacing rule ---- */
#define OK_BUCKET_NAME 48
/* The endpoint family a request counts against, as Okta's rate-limit tables group them:
 * "/api/v1/users" (list, create), "/api/v1/users/{id}" (one user), and so on. */
void ok_bucket_name(const char *method, const char *path, char out[OK_BUCKET_NAME]);

/* What one client knows of one bucket, from X-Rate-Limit-* headers, in server seconds. */
typedef struct ok_bucket {
  char name[OK_BUCKET_NAME];
  double limit;        /* X-Rate-Limit-Limit; 0 until a response said */
  double reset;        /* end of the window the counts belong to */
  double seen_used;    /* the most of the window the server said was used (limit - remaining) */
  double probe_until;  /* a first request is out to learn the limit, until this time */
} ok_bucket;

/* Takes in one response's headers (values as sent, or NULL); returns 1 when they described
 * an org-wide bucket (a concurrency 429 says limit 0 and is not one). */
int ok_bucket_observe(ok_bucket *b, const char *limit, const char *remaining, const char *reset);
/* Takes in a limit and a window end another process learned (its store entry); returns 1 when
 * they are usable. The window is then rolled forward by the caller. */
int ok_bucket_adopt(ok_bucket *b, double limit, double reset);
/* Moves the bucket to the window that holds server time now (Okta's windows are minutes). */
void ok_bucket_roll(ok_bucket *b, double now);
/* Requests this client may send in the bucket's window: max_capacity of the limit, at least 1. */
long ok_bucket_allowed(const ok_bucket *b, double max_capacity);
/* Whether the count-th request of the window fits in the budget. */
int ok_bucket_admits(const ok_bucket *b, double max_capacity, long count);

#endif
