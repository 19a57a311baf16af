/* fuzz_url: ok_htu_normalize, ok_url_origin, ok_host_is_loopback and ok_pct_encode on outside
 * bytes (next links, token URLs, request URLs). Beyond memory safety it checks properties:
 * a normalised htu has no control character and an ASCII path, starts with the URL's origin, keeps every path '/',
 * and normalises to itself; percent-encoding decodes back to the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/pure/pure.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "property failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

static size_t path_slashes(const char *u, size_t n) { /* '/' in the path of a URL known to split */
  const char *p = memchr(u, ':', n), *end = u + n;
  size_t k = 0;
  p += 3; /* "://" */
  while (p < end && *p != '/' && *p != '?' && *p != '#') p++;
  for (; p < end && *p != '?' && *p != '#'; p++) k += *p == '/';
  return k;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1; /* ok_pct_encode writes upper case only */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *u = malloc(size ? size : 1), *norm, *pct, *origin;
  const char *why = NULL;
  size_t osz = size ? data[0] : 0; /* a small out buffer too, of exactly that size */
  memcpy(u, data, size);

  norm = ok_htu_normalize(u, size, &why);
  if (!norm) {
    CHECK(why != NULL);
  } else {
    size_t n = strlen(norm), k = 0, in_slashes = path_slashes(u, size);
    char *again;
    CHECK(strncmp(norm, "https://", 8) == 0 || strncmp(norm, "http://", 7) == 0);
    /* no control character anywhere (a host may hold raw non-ASCII bytes: it is compared as
     * is); the path is printable ASCII, anything else being percent-encoded */
    for (size_t i = 0; i < n; i++) CHECK((unsigned char)norm[i] > 0x20 && norm[i] != 0x7f);
    for (const char *q = strchr(norm + 8, '/'); q && *q; q++) CHECK(*q > 0x20 && *q < 0x7f);
    CHECK(!strpbrk(norm, "?#"));
    k = path_slashes(norm, n);
    CHECK(k == in_slashes || (in_slashes == 0 && k == 1)); /* an empty path becomes "/" */
    again = ok_htu_normalize(norm, n, &why);
    CHECK(again && strcmp(again, norm) == 0);
    free(again);
  }

  origin = malloc(300);
  if (ok_url_origin(u, size, origin, 300, &why) == 0) {
    size_t on = strlen(origin);
    CHECK(on < 300);
    CHECK(!norm || (strncmp(norm, origin, on) == 0 && norm[on] == '/'));
    (void)ok_host_is_loopback(origin);
  } else {
    /* htu normalisation is never laxer than the origin parser (whose buffer bounds the host) */
    CHECK(!norm || strcmp(why, "URL host is too long") == 0);
  }
  free(origin);
  origin = malloc(osz ? osz : 1);
  if (ok_url_origin(u, size, origin, osz, &why) == 0) CHECK(strlen(origin) < osz);
  free(origin);
  free(norm);

  pct = malloc(3 * size + 1);
  {
    size_t o = ok_pct_encode(u, size, pct), j = 0;
    for (size_t i = 0; i < o; i++, j++) {
      char c = pct[i];
      CHECK(j < size);
      if (c == '%') {
        CHECK(i + 2 < o && hexval(pct[i + 1]) >= 0 && hexval(pct[i + 2]) >= 0);
        CHECK((unsigned char)u[j] == hexval(pct[i + 1]) * 16 + hexval(pct[i + 2]));
        i += 2;
      } else {
        CHECK(strchr("-._~", c) || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
        CHECK(u[j] == c);
      }
    }
    CHECK(j == size);
  }
  free(pct);
  free(u);
  return 0;
}
