/* fuzz_path: ok_path_dot_segment, the check that keeps a request on the resource its caller
 * named. Beyond memory safety it checks the answer against an independent reading (each raw
 * segment fully decoded, split at '/' and '\', any "." or ".." piece is a dot segment), that a
 * named segment is really one of the path's, and that a path it lets through is left unchanged
 * by RFC 3986 section 5.2.4's remove_dot_segments, raw and with its escapes decoded: no layer
 * below (libcurl, a proxy, the server) can turn it into another path. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/pure/pure.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "property failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

static int hex(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes s[0..n) (a malformed escape stays as it is) into out; returns the length. */
static size_t decode(const char *s, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n + 0 && hex((unsigned char)s[i + 1]) >= 0 && hex((unsigned char)s[i + 2]) >= 0) {
      out[o++] = (char)(hex((unsigned char)s[i + 1]) * 16 + hex((unsigned char)s[i + 2]));
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  return o;
}

static int has_dot_piece(const char *d, size_t n) {
  for (size_t i = 0; i <= n;) {
    size_t j = i;
    while (j < n && d[j] != '/' && d[j] != '\\') j++;
    if ((j - i == 1 && d[i] == '.') || (j - i == 2 && d[i] == '.' && d[i + 1] == '.')) return 1;
    i = j + 1;
  }
  return 0;
}

/* RFC 3986 section 5.2.4 on a NUL-terminated path; out has room for strlen(in) + 1. */
static void remove_dot_segments(const char *in, char *out) {
  size_t o = 0;
  while (*in) {
    if (!strncmp(in, "../", 3)) in += 3;
    else if (!strncmp(in, "./", 2)) in += 2;
    else if (!strncmp(in, "/./", 3)) in += 2;
    else if (!strcmp(in, "/.")) in = "/";
    else if (!strncmp(in, "/../", 4) || !strcmp(in, "/..")) {
      in = in[3] ? in + 3 : "/";
      while (o > 0 && out[o - 1] != '/') o--;
      if (o > 0) o--;
    } else if (!strcmp(in, ".") || !strcmp(in, "..")) in += strlen(in);
    else {
      do out[o++] = *in++; while (*in && *in != '/');
    }
  }
  out[o] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *path = malloc(size + 1), *seg_buf = malloc(size + 1), *a = malloc(size + 2), *b = malloc(size + 2);
  size_t seglen = 0, end = 0;
  const char *seg;
  int expect = 0;
  memcpy(path, data, size);
  path[size] = '\0';
  seg = ok_path_dot_segment(path, size, &seglen);
  while (end < size && path[end] != '?' && path[end] != '#') end++;
  for (size_t i = 0; i <= end && !expect;) { /* the independent reading */
    size_t j = i;
    while (j < end && path[j] != '/') j++;
    expect = has_dot_piece(seg_buf, decode(path + i, j - i, seg_buf));
    i = j + 1;
  }
  CHECK(!seg == !expect);
  if (seg) {
    CHECK(seg >= path && seg + seglen <= path + end);
    CHECK(seg == path || seg[-1] == '/');
    CHECK(seg + seglen == path + end || seg[seglen] == '/');
  } else if (end > 0 && path[0] == '/' && !memchr(path, '\0', end)) {
    char *raw = malloc(end + 1), *dec = malloc(end + 1);
    size_t dn;
    memcpy(raw, path, end);
    raw[end] = '\0';
    remove_dot_segments(raw, a);
    CHECK(strcmp(a, raw) == 0);
    dn = decode(raw, end, dec);
    dec[dn] = '\0';
    if (strlen(dec) == dn) {
      remove_dot_segments(dec, b);
      CHECK(strcmp(b, dec) == 0);
    }
    free(raw);
    free(dec);
  }
  free(path);
  free(seg_buf);
  free(a);
  free(b);
  return 0;
}
