/* fuzz_www_auth: ok_www_auth_param on a WWW-Authenticate value, for each parameter oktadpop
 * reads. A value is never longer than the header. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/pure/pure.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "property failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const params[] = {"error", "error_description", "algs", "realm", "e"};
  char *v = malloc(size ? size : 1);
  memcpy(v, data, size);
  for (size_t i = 0; i < sizeof params / sizeof *params; i++) {
    char *got = ok_www_auth_param(v, size, params[i]);
    if (got) {
      CHECK(strlen(got) + strlen(params[i]) + 1 <= size);
      free(got);
    }
  }
  free(v);
  return 0;
}
