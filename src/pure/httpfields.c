/* http.c: pure C parsers for the HTTP fields servers send us: Link rel="next" (RFC 8288),
 * WWW-Authenticate challenges (RFC 9110 section 11.6.1), HTTP dates (RFC 9110 section 5.6.7)
 * and repeated numeric headers. No Lua, no I/O, no clock. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "pure/pure.h"

static char *dup_n(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* Link: <url>; rel="self", <url>; rel="next"   (rel may hold several types) */
char *ok_link_next(const char *v, size_t n) {
  const char *end = v + n, *p = v;
  while (p < end) {
    const char *lt = memchr(p, '<', (size_t)(end - p)), *gt, *params_end;
    if (!lt || !(gt = memchr(lt, '>', (size_t)(end - lt)))) return NULL;
    params_end = memchr(gt, '<', (size_t)(end - gt));
    if (!params_end) params_end = end;
    for (const char *r = gt; r + 4 <= params_end; r++) {
      if (strncasecmp(r, "rel=", 4) != 0 || !(r == gt || r[-1] == ';' || r[-1] == ' ')) continue;
      const char *val = r + 4, *vend;
      int quoted = val < params_end && *val == '"';
      if (quoted) val++;
      for (vend = val; vend < params_end && (quoted ? *vend != '"' : (*vend != ';' && *vend != ',')); vend++) {}
      for (const char *t = val; t < vend;) { /* space-separated relation types */
        const char *te = t;
        while (te < vend && *te != ' ') te++;
        if (te - t == 4 && strncasecmp(t, "next", 4) == 0) return dup_n(lt + 1, (size_t)(gt - lt - 1));
        t = te + 1;
      }
    }
    p = params_end;
  }
  return NULL;
}

/* ---- WWW-Authenticate ---- */

static int is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

typedef struct { const char *p, *end; } cursor;

static void skip_ows(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
}

static size_t read_token(cursor *c) {
  const char *s = c->p;
  while (c->p < c->end && is_tchar(*c->p)) c->p++;
  return (size_t)(c->p - s);
}

/* Reads a token or quoted-string value; unescapes into a malloc'd copy when wanted. */
static char *read_value(cursor *c, int want) {
  const char *s;
  char *out, *o;
  if (c->p >= c->end || *c->p != '"') {
    s = c->p;
    while (c->p < c->end && (is_tchar(*c->p) || *c->p == '/' || *c->p == '=')) c->p++;
    return want ? dup_n(s, (size_t)(c->p - s)) : NULL;
  }
  s = ++c->p;
  out = o = want ? malloc((size_t)(c->end - s) + 1) : NULL;
  for (; c->p < c->end && *c->p != '"'; c->p++) {
    if (*c->p == '\\' && c->p + 1 < c->end) c->p++;
    if (o) *o++ = *c->p;
  }
  if (c->p < c->end) c->p++; /* the closing quote */
  if (o) *o = '\0';
  return out;
}

/* Looks for param in the challenges of `scheme` (NULL: any); returns its malloc'd value. */
static char *challenge_param(const char *v, size_t n, const char *scheme, const char *param) {
  cursor c = {v, v + n};
  int in_scheme = 0;
  while (c.p < c.end) {
    const char *name;
    size_t len;
    while (c.p < c.end && (*c.p == ' ' || *c.p == '\t' || *c.p == ',')) c.p++;
    name = c.p;
    if (!(len = read_token(&c))) { c.p++; continue; } /* junk: step over it */
    skip_ows(&c);
    if (c.p < c.end && *c.p == '=' && !(c.p + 1 < c.end && c.p[1] == '=')) { /* auth-param */
      int match = in_scheme && strlen(param) == len && strncasecmp(name, param, len) == 0;
      c.p++;
      skip_ows(&c);
      if (match) return read_value(&c, 1);
      read_value(&c, 0);
    } else { /* a new challenge: its scheme (a token68 after it reads as another, harmless) */
      in_scheme = !scheme || (strlen(scheme) == len && strncasecmp(name, scheme, len) == 0);
    }
  }
  return NULL;
}

char *ok_www_auth_param(const char *v, size_t n, const char *param) {
  static const char *const schemes[] = {"DPoP", "Bearer", NULL};
  for (int i = 0; schemes[i]; i++) {
    char *found = challenge_param(v, n, schemes[i], param);
    if (found) return found;
  }
  return challenge_param(v, n, NULL, param);
}

/* ---- dates and numbers ---- */

double ok_http_date(const char *s) {
  static const char *const formats[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                        "%a %b %e %H:%M:%S %Y", NULL};
  for (int i = 0; formats[i]; i++) {
    struct tm tm;
    const char *end;
    memset(&tm, 0, sizeof tm);
    end = strptime(s, formats[i], &tm);
    if (end && *end == '\0') {
      time_t t = timegm(&tm);
      return t == (time_t)-1 ? -1 : (double)t;
    }
  }
  return -1;
}

double ok_header_min(const char *s) {
  double best = -1;
  while (s && *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s) return best;
    if (v >= 0 && v < 1e13 && (best < 0 || v < best)) best = v; /* NaN and inf fail both */
    s = end + strspn(end, ", \t");
  }
  return best;
}
