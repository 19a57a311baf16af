/* ratelimit.c: Okta's rate-limit buckets and the pacing rule, in pure C (no Lua, no clock:
 * the time is the caller's). Okta counts requests per endpoint family in one-minute windows
 * and reports X-Rate-Limit-Limit/-Remaining/-Reset on every response (developer.okta.com
 * "Rate limits", rl-global-mgmt and rl-best-practices). A client stays inside a budget of
 * max_capacity of each limit: it counts what it sends in a window, and trusts the server's
 * own count (limit - remaining) when that is larger, e.g. because other apps share the bucket. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pure/pure.h"

#define OK_WINDOW 60.0 /* Okta's windows are whole minutes */

/* Families from Okta's table: collections and single objects of users, groups and apps have
 * their own buckets (GET of one user apart from writes to it); /api/v1/logs its own; the rest
 * of /api/v1 (lifecycle, members, factors) shares the default bucket. */
void ok_bucket_name(const char *method, const char *path, char out[OK_BUCKET_NAME]) {
  static const char *const own[] = {"users", "groups", "apps", "logs", "events", NULL};
  const char *seg, *rest;
  size_t n;
  if (strncmp(path, "/api/v1/", 8) != 0) {
    snprintf(out, OK_BUCKET_NAME, "%s", strncmp(path, "/oauth2/", 8) == 0 ? "/oauth2" : "/");
    return;
  }
  seg = path + 8;
  n = strcspn(seg, "/?#");
  rest = seg + n;
  for (int i = 0; own[i]; i++) {
    if (strlen(own[i]) != n || strncmp(seg, own[i], n) != 0) continue;
    if (*rest != '/' || rest[1] == '\0' || rest[1] == '?') { /* the collection */
      snprintf(out, OK_BUCKET_NAME, "/api/v1/%s", own[i]);
      return;
    }
    if (i <= 2 && !strpbrk(rest + 1, "/")) { /* one user, group or app */
      int is_users_get = i == 0 && strcmp(method, "GET") == 0;
      snprintf(out, OK_BUCKET_NAME, "%s/api/v1/%s/{id}", is_users_get ? "GET " : "", own[i]);
      return;
    }
    break;
  }
  snprintf(out, OK_BUCKET_NAME, "/api/v1");
}

int ok_bucket_observe(ok_bucket *b, const char *limit, const char *remaining, const char *reset) {
  double l = limit ? ok_header_min(limit) : -1, r = remaining ? ok_header_min(remaining) : -1;
  double t = reset ? ok_header_min(reset) : -1;
  if (!(l > 0) || r < 0 || t <= 0) return 0; /* absent, or a concurrency 429 (limit 0) */
  if (r > l) r = l;
  if (t > b->reset + 0.5) { /* a new window: its count starts from what the server says */
    b->reset = t;
    b->seen_used = l - r;
  } else if (t > b->reset - 0.5 && l - r > b->seen_used) {
    b->seen_used = l - r;
  }
  b->limit = l;
  b->probe_until = 0;
  return 1;
}

int ok_bucket_adopt(ok_bucket *b, double limit, double reset) {
  if (!(limit > 0 && limit < 1e9 && reset > 0 && reset < 1e12) || b->limit > 0) return 0;
  b->limit = limit;
  b->reset = reset;
  b->seen_used = 0;
  b->probe_until = 0;
  return 1;
}

void ok_bucket_roll(ok_bucket *b, double now) {
  if (b->limit <= 0 || now < b->reset) return;
  b->reset += OK_WINDOW * (floor((now - b->reset) / OK_WINDOW) + 1);
  b->seen_used = 0;
}

long ok_bucket_allowed(const ok_bucket *b, double max_capacity) {
  long allowed = (long)floor(b->limit * max_capacity);
  return allowed < 1 ? 1 : allowed;
}

int ok_bucket_admits(const ok_bucket *b, double max_capacity, long count) {
  double used = (double)count > b->seen_used + 1 ? (double)count : b->seen_used + 1;
  return used <= (double)ok_bucket_allowed(b, max_capacity);
}
