/* fuzz_guard_htu: the guard's request-to-htu path. The guard compares a proof's htu with its
 * configured origin followed by the request's path (oktadpop.resty.guard: origin .. ngx.var.uri),
 * normalised as Okta compares htu. Whatever bytes the request puts in its path (a '#', a '?',
 * '@', "//", "..", escapes, control bytes), the expected htu must keep the configured origin:
 * it starts with "<origin>/" and normalises to itself. A path that does not start with '/' the
 * guard refuses before it gets here (nginx's $uri always does). The first byte picks the origin. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/pure/pure.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "property failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

static const char *const origins[] = {"https://api.example.com", "http://127.0.0.1:8080", "https://[::1]:8443",
                                      "https://api.example.com:8443"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *origin = origins[size ? data[0] % 4 : 0], *why = NULL;
  size_t olen = strlen(origin), n = size ? size - 1 : 0;
  char *htu, *norm, *again;
  if (n == 0 || data[1] != '/') return 0;
  htu = malloc(olen + n + 1);
  memcpy(htu, origin, olen);
  if (n) memcpy(htu + olen, data + 1, n);
  norm = ok_htu_normalize(htu, olen + n, &why);
  if (!norm) {
    CHECK(why != NULL); /* refused (a control byte, a bad escape): the guard answers 401 */
  } else {
    CHECK(strncmp(norm, origin, olen) == 0);
    CHECK(norm[olen] == '/');
    again = ok_htu_normalize(norm, strlen(norm), &why);
    CHECK(again && strcmp(again, norm) == 0);
    free(again);
  }
  free(norm);
  free(htu);
  return 0;
}
