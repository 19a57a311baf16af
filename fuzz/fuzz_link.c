/* fuzz_link: ok_link_next on a server's Link header value. The result is a '<...>' target
 * taken from the input, without its '>'. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/pure/pure.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "property failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *v = malloc(size ? size : 1), *next;
  memcpy(v, data, size);
  next = ok_link_next(v, size);
  if (next) {
    size_t n = strlen(next);
    CHECK(!strchr(next, '>'));
    CHECK(n + 2 <= size);
    /* it was written <next> in the input (a NUL inside the target only shortens it) */
    int found = 0;
    for (size_t i = 0; i + n + 1 < size && !found; i++)
      found = v[i] == '<' && memcmp(v + i + 1, next, n) == 0;
    CHECK(found);
    free(next);
  }
  free(v);
  return 0;
}
