/* fuzz_b64url: ok_b64url_decode with exactly ok_b64url_room(n) bytes (ASan: never more).
 * Decoding is canonical: whatever decodes re-encodes to the same text (no second spelling of
 * a signature or a JWK member); and any bytes survive an encode/decode round trip. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/pure/pure.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "property failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *in = malloc(size ? size : 1), *enc;
  unsigned char *out = malloc(ok_b64url_room(size)), *back;
  long n;
  memcpy(in, data, size);
  n = ok_b64url_decode(in, size, out);
  if (n >= 0) {
    CHECK((size_t)n == size / 4 * 3 + (size % 4 ? size % 4 - 1 : 0));
    CHECK(ok_b64url_len((size_t)n) == size);
    enc = malloc(size ? size : 1);
    CHECK(ok_b64url_encode(out, (size_t)n, enc) == size);
    CHECK(memcmp(enc, in, size) == 0);
    free(enc);
  }
  enc = malloc(ok_b64url_len(size) + 1);
  {
    size_t m = ok_b64url_encode(data, size, enc);
    CHECK(m == ok_b64url_len(size));
    back = malloc(ok_b64url_room(m));
    CHECK(ok_b64url_decode(enc, m, back) == (long)size);
    CHECK(memcmp(back, data, size) == 0);
    free(back);
  }
  free(enc);
  free(out);
  free(in);
  return 0;
}
