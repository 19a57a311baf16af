/* ratelimit.c: Okta's rate-limit buckets and the pacing arithmetic, in pure C (no Lua, no
 * clock: the time is the caller's). Okta counts requests per endpoint family in windows that
 * "typically reset every 60 seconds, though they aren't necessarily synchronized with wall
 * clock minutes", some per 10 s or per second, and reports X-Rate-Limit-Limit/-Remaining/-Reset
 * on every response (developer.okta.com: rate-limits, rl-global-mgmt, rl-best-practices). So
 * nothing here invents a window: its end is the server's latest reset, the count in it the
 * larger of the client's own and the server's (limit - remaining), and once the reset has
 * passed the bucket is unknown again until a response says. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pure/pure.h"

/* Okta's families (rl-global-mgmt, Workforce; the table left the docs in December 2025 for the
 * Admin Console's rate limit dashboard, so a configuration may extend or override it), in
 * match order. An app's users and groups count against the apps bucket: "calls to the
 * /api/v1/apps endpoint and all other endpoints of the form /api/v1/apps/(anything) including
 * /api/v1/apps/{id}/(anything)". */
static const struct { const char *pattern, *name; } OKTA_BUCKETS[] = {
    {"/api/v1/apps/{id}", "/api/v1/apps/{id}"},
    {"/api/v1/apps", "/api/v1/apps"},
    {"/api/v1/apps/*", "/api/v1/apps"},
    {"/api/v1/groups/{id}", "/api/v1/groups/{id}"},
    {"/api/v1/groups", "/api/v1/groups"},
    {"GET,POST /api/v1/users", "/api/v1/users"},
    {"GET /api/v1/users/{id}", "GET /api/v1/users/{id}"},
    {"/api/v1/users/{id}", "/api/v1/users/{id}"},
    {"/api/v1/logs", "/api/v1/logs"},
    {"/api/v1/events", "/api/v1/events"},
    {"/oauth2/v1/clients", "/oauth2/v1/clients"},
    {"/oauth2/v1/clients/*", "/oauth2/v1/clients"},
    {"/api/v1/*", "/api/v1"},
    {"/oauth2/*", "/oauth2"},
    {"*", "/"},
};

/* Whether method (upper case) is one of the comma-separated list at m (n bytes). */
static int method_listed(const char *m, size_t n, const char *method) {
  size_t len = strlen(method);
  for (const char *p = m, *end = m + n; p < end;) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    size_t k = (size_t)((comma ? comma : end) - p);
    if (k == len && strncmp(p, method, len) == 0) return 1;
    p += k + 1;
  }
  return 0;
}

/* Matches a path template: literal segments, {name} for one non-empty segment, a last "*"
 * for any rest (one segment or more); the path ends at its query. */
static int path_matches(const char *t, const char *p) {
  for (;;) {
    if (*t == '*' && t[1] == '\0') return *p && *p != '?' && *p != '#';
    if (*t == '{') {
      const char *close = strchr(t, '}');
      size_t seg = strcspn(p, "/?#");
      if (!close || seg == 0) return 0;
      t = close + 1;
      p += seg;
      continue;
    }
    if (*t == '\0') return *p == '\0' || *p == '?' || *p == '#';
    if (*t != *p) return 0;
    t++;
    p++;
  }
}

int ok_bucket_pattern_matches(const char *pattern, const char *method, const char *path) {
  const char *space = strchr(pattern, ' ');
  if (strcmp(pattern, "*") == 0) return 1;
  if (space && !method_listed(pattern, (size_t)(space - pattern), method)) return 0;
  return path_matches(space ? space + 1 : pattern, path);
}

const char *ok_bucket_pattern_check(const char *pattern) {
  const char *space = strchr(pattern, ' '), *t;
  if (strcmp(pattern, "*") == 0) return NULL;
  for (const char *m = pattern; space && m < space; m++)
    if (!((*m >= 'A' && *m <= 'Z') || *m == ',')) return "a pattern's methods are upper-case and comma-separated";
  t = space ? space + 1 : pattern;
  if (*t != '/') return "a pattern is \"[METHOD[,METHOD] ]/path\" with {id} segments and a last \"*\", or \"*\"";
  for (const char *p = t; *p; p++) {
    if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#') return "a pattern's path holds a space, '?' or '#'";
    if (*p == '*' && (p[1] || p[-1] != '/')) return "a pattern's \"*\" stands alone, last";
    if (*p == '{' && (!strchr(p, '}') || p[-1] != '/')) return "a pattern's {name} is a whole segment";
  }
  return NULL;
}

void ok_bucket_name(const ok_bucket_rule *rules, int nrules, const char *method, const char *path,
                    char out[OK_BUCKET_NAME]) {
  for (int i = 0; i < nrules; i++)
    if (ok_bucket_pattern_matches(rules[i].pattern, method, path)) {
      snprintf(out, OK_BUCKET_NAME, "%s", rules[i].name);
      return;
    }
  for (size_t i = 0; i < sizeof OKTA_BUCKETS / sizeof OKTA_BUCKETS[0]; i++)
    if (ok_bucket_pattern_matches(OKTA_BUCKETS[i].pattern, method, path)) {
      snprintf(out, OK_BUCKET_NAME, "%s", OKTA_BUCKETS[i].name);
      return;
    }
}

int ok_bucket_observe(ok_bucket *b, const char *limit, const char *remaining, const char *reset) {
  double l = limit ? ok_header_min(limit) : -1, r = remaining ? ok_header_min(remaining) : -1;
  double t = reset ? ok_header_min(reset) : -1;
  if (!(l > 0) || r < 0 || t <= 0 || t > 1e12) return 0; /* absent, or a concurrency 429 (limit 0) */
  if (r > l) r = l;
  if (t > b->reset + 0.5) { /* a later window: its count starts from what the server says */
    b->reset = t;
    b->seen_used = l - r;
  } else if (t < b->reset - 0.5) {
    return 1; /* an answer from a window already over, arriving late: nothing to learn */
  } else if (l - r > b->seen_used) {
    b->seen_used = l - r;
  }
  b->limit = l;
  b->unlimited_until = 0;
  return 1;
}

int ok_bucket_window_open(const ok_bucket *b, double now) {
  return b->limit > 0 && now < b->reset;
}

long ok_bucket_allowed(const ok_bucket *b, double max_capacity) {
  long allowed = (long)floor(b->limit * max_capacity);
  return allowed < 1 ? 1 : allowed;
}

int ok_bucket_admits(const ok_bucket *b, double max_capacity, long count) {
  double used = (double)count > b->seen_used + 1 ? (double)count : b->seen_used + 1;
  return used <= (double)ok_bucket_allowed(b, max_capacity);
}

int ok_bucket_shares_count(const ok_bucket *b, const ok_bucket *other) {
  return other != b && other->limit == b->limit && fabs(other->reset - b->reset) < 0.5 && other->seen_used >= 1 &&
         b->seen_used >= other->seen_used + 1;
}
