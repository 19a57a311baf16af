/* url.c: URLs as DPoP and the org see them, in pure C (no Lua, no I/O): origins, DPoP htu
 * normalisation, loopback hosts and percent-encoding of path segments, query and form values.
 * Every result is malloc'd or written to a caller buffer. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "pure/pure.h"

typedef struct {
  int https;
  const char *host; size_t hostlen;
  const char *port; size_t portlen; /* NULL when absent */
  const char *path; size_t pathlen; /* without query and fragment */
} url_parts;

static const char *url_split(const char *u, size_t n, url_parts *p) {
  const char *end = u + n, *a, *auth_end, *q;
  memset(p, 0, sizeof *p);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)u[i] <= 0x20 || u[i] == 0x7f) return "URL contains a space or control character";
  if (n >= 8 && strncasecmp(u, "https://", 8) == 0) { p->https = 1; a = u + 8; }
  else if (n >= 7 && strncasecmp(u, "http://", 7) == 0) a = u + 7;
  else return "URL must start with https:// or http://";
  for (auth_end = a; auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#'; auth_end++)
    if (*auth_end == '@') return "URL must not carry credentials";
  if (auth_end == a) return "URL has no host";
  p->host = a;
  if (*a == '[') { /* IPv6 literal */
    const char *rb = memchr(a, ']', (size_t)(auth_end - a));
    if (!rb) return "URL has a malformed IPv6 host";
    p->hostlen = (size_t)(rb + 1 - a);
    a = rb + 1;
  } else {
    const char *colon = memchr(a, ':', (size_t)(auth_end - a));
    p->hostlen = (size_t)((colon ? colon : auth_end) - a);
    a = colon ? colon : auth_end;
  }
  if (a < auth_end) {
    if (*a != ':' || a + 1 == auth_end || auth_end - a > 6) return "URL has a malformed port";
    p->port = a + 1;
    p->portlen = (size_t)(auth_end - a - 1);
    for (size_t i = 0; i < p->portlen; i++)
      if (!isdigit((unsigned char)p->port[i])) return "URL has a malformed port";
  }
  if (p->hostlen == 0) return "URL has no host";
  p->path = auth_end;
  for (q = auth_end; q < end && *q != '?' && *q != '#'; q++) {}
  p->pathlen = (size_t)(q - auth_end);
  return NULL;
}

/* Appends scheme://host[:port] (lower-cased, default port dropped) to out. */
static size_t origin_write(const url_parts *p, char *out) {
  size_t o = 0;
  const char *scheme = p->https ? "https://" : "http://";
  memcpy(out, scheme, strlen(scheme));
  o += strlen(scheme);
  for (size_t i = 0; i < p->hostlen; i++) out[o++] = (char)tolower((unsigned char)p->host[i]);
  if (p->port) {
    const char *dflt = p->https ? "443" : "80";
    size_t skip = 0;
    while (skip + 1 < p->portlen && p->port[skip] == '0') skip++; /* "0443" is 443 */
    if (!(p->portlen - skip == strlen(dflt) && memcmp(p->port + skip, dflt, strlen(dflt)) == 0)) {
      out[o++] = ':';
      memcpy(out + o, p->port + skip, p->portlen - skip);
      o += p->portlen - skip;
    }
  }
  return o;
}

int ok_url_origin(const char *url, size_t n, char *out, size_t outsz, const char **why) {
  url_parts p;
  const char *err = url_split(url, n, &p);
  if (err) { if (why) *why = err; return -1; }
  if (p.hostlen + p.portlen + 10 > outsz) { if (why) *why = "URL host is too long"; return -1; }
  out[origin_write(&p, out)] = '\0';
  return 0;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Writes byte c as %XX, upper-case hex (RFC 3986 section 2.1); returns 3. */
static size_t put_pct(char *out, unsigned c) {
  static const char hex[] = "0123456789ABCDEF";
  out[0] = '%';
  out[1] = hex[c >> 4];
  out[2] = hex[c & 15];
  return 3;
}

/* RFC 3986 pchar characters that never need escaping in a path: unreserved, sub-delims, ':' '@'.
 * Not NUL: strchr finds the terminator, and a decoded %00 would cut the htu short. */
static int path_safe(int c) {
  return c != 0 && (isalnum(c) || strchr("-._~!$&'()*+,;=:@", c) != NULL);
}

#define MALFORMED_ESCAPE "URL path has a malformed percent escape"

/* The byte the escape at path[i] (a '%') stands for, or -1 when it is malformed. */
static int escaped_byte(const char *path, size_t len, size_t i) {
  int hi = i + 2 < len ? hexval((unsigned char)path[i + 1]) : -1;
  int lo = i + 2 < len ? hexval((unsigned char)path[i + 2]) : -1;
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

char *ok_htu_normalize(const char *url, size_t n, const char **why) {
  url_parts p;
  const char *err = url_split(url, n, &p);
  char *out;
  size_t o;
  if (err) { if (why) *why = err; return NULL; }
  out = malloc(p.hostlen + p.portlen + 3 * p.pathlen + 16);
  if (!out) { if (why) *why = "out of memory"; return NULL; }
  o = origin_write(&p, out);
  if (p.pathlen == 0) out[o++] = '/';
  for (size_t i = 0; i < p.pathlen; i++) {
    int c = (unsigned char)p.path[i];
    if (c == '%') {
      if ((c = escaped_byte(p.path, p.pathlen, i)) < 0) { free(out); if (why) *why = MALFORMED_ESCAPE; return NULL; }
      if (path_safe(c)) out[o++] = (char)c;
      else o += put_pct(out + o, (unsigned)c);
      i += 2;
    } else if (path_safe(c) || c == '/') {
      out[o++] = (char)c;
    } else { /* raw bytes that need escaping (e.g. UTF-8) get it, so both spellings agree */
      o += put_pct(out + o, (unsigned)c);
    }
  }
  out[o] = '\0';
  return out;
}

/* Whether the n bytes at s are well-formed UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF), so that a decoded path can go into a JSON string as it is. */
static int utf8_valid(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i], len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    unsigned long cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    if (!len || i + len > n) return 0;
    for (unsigned k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

char *ok_htu_okta(const char *url, size_t n, const char **why) {
  url_parts p;
  const char *err = url_split(url, n, &p);
  unsigned char *path;
  char *out;
  size_t o, m = 0;
  int utf8;
  if (err) { if (why) *why = err; return NULL; }
  if (!(path = malloc(p.pathlen + 1)) || !(out = malloc(p.hostlen + p.portlen + 3 * p.pathlen + 16))) {
    free(path);
    if (why) *why = "out of memory";
    return NULL;
  }
  for (size_t i = 0; i < p.pathlen; i++) { /* every escape decoded, as Okta's server sees the path */
    int c = p.path[i] == '%' ? escaped_byte(p.path, p.pathlen, i) : (unsigned char)p.path[i];
    if (c < 0) { free(path); free(out); if (why) *why = MALFORMED_ESCAPE; return NULL; }
    if (p.path[i] == '%') i += 2;
    path[m++] = (unsigned char)c;
  }
  utf8 = utf8_valid(path, m);
  o = origin_write(&p, out);
  if (m == 0) out[o++] = '/';
  for (size_t i = 0; i < m; i++) { /* then the four the SDK escapes again (strchr counts NUL in: it
                                     * stays %00), and bytes that are not UTF-8 */
    if (strchr("% \"#", path[i]) || (path[i] >= 0x80 && !utf8)) o += put_pct(out + o, path[i]);
    else out[o++] = (char)path[i];
  }
  out[o] = '\0';
  free(path);
  return out;
}

const char *ok_path_dot_segment(const char *path, size_t n, size_t *seglen) {
  size_t end = 0, seg = 0, dots = 0, len = 0;
  while (end < n && path[end] != '?' && path[end] != '#') end++;
  for (size_t i = 0; i <= end; i++) {
    /* each piece of a segment, decoded, between '/' and escaped '/' or '\\' (which a decoding
     * proxy, or Okta's htu comparison, would turn into separators): "." or ".." is refused */
    int raw_sep = i == end || path[i] == '/';
    int c = raw_sep ? '/' : path[i] == '%' ? escaped_byte(path, end, i) : (unsigned char)path[i];
    if (!raw_sep && path[i] == '%' && c >= 0) i += 2;
    if (c == '/' || c == '\\') {
      if (len > 0 && len == dots && dots <= 2) {
        size_t stop = i;
        while (stop < end && path[stop] != '/') stop++;
        if (seglen) *seglen = stop - seg;
        return path + seg;
      }
      dots = len = 0;
      if (raw_sep) seg = i + 1;
      continue;
    }
    len++;
    dots += c == '.';
  }
  return NULL;
}

const char *ok_url_path(const char *url) {
  url_parts p;
  return url_split(url, strlen(url), &p) ? NULL : p.path;
}

int ok_host_is_loopback(const char *origin) {
  const char *h = strstr(origin, "://");
  size_t n;
  if (!h) return 0;
  h += 3;
  n = strcspn(h, ":");
  if (*h == '[') return strncmp(h, "[::1]", 5) == 0;
  if (n == 9 && strncmp(h, "localhost", 9) == 0) return 1;
  if (n >= 7 && strncmp(h, "127.", 4) == 0) {
    for (size_t i = 4; i < n; i++) if (!isdigit((unsigned char)h[i]) && h[i] != '.') return 0;
    return 1;
  }
  return 0;
}

size_t ok_pct_encode(const char *s, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') out[o++] = (char)c;
    else o += put_pct(out + o, c);
  }
  return o;
}
