/* fuzz_dotenv: ok_dotenv_parse on a .env file, with scratch of exactly the documented size
 * (n bytes). Every pair has a well-formed key inside the buffer and a value inside the
 * scratch with no NUL byte (C would cut it there); the count returned is the number of pairs
 * reported. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/pure/pure.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "property failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

typedef struct { const char *buf, *scratch; size_t n; int pairs; } ctx;

static void on_pair(void *ud, const char *k, size_t kn, const char *v, size_t vn) {
  ctx *c = ud;
  CHECK(kn > 0 && k >= c->buf && k + kn <= c->buf + c->n);
  CHECK(!isdigit((unsigned char)k[0]));
  for (size_t i = 0; i < kn; i++) CHECK(isalnum((unsigned char)k[i]) || k[i] == '_' || k[i] == '.');
  CHECK(v == c->scratch && vn <= c->n);
  CHECK(memchr(v, '\0', vn) == NULL);
  c->pairs++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size ? size : 1), *scratch = malloc(size ? size : 1);
  ctx c = {buf, scratch, size, 0};
  int r;
  memcpy(buf, data, size);
  r = ok_dotenv_parse(buf, size, scratch, on_pair, &c);
  if (r >= 0) CHECK(r == c.pairs);
  else CHECK(-r >= 1);
  free(buf);
  free(scratch);
  return 0;
}
