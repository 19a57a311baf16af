/* dotenv.c: .env files as the seed's dotenv reads them: KEY=value lines, `export`, comments,
 * single quotes (literal), double quotes (escapes, may span lines, e.g. a PEM). A NUL byte in a
 * value makes its line malformed: C would read the value cut short there. Pure C. */
#include <ctype.h>
#include <string.h>
#include "pure/pure.h"

int ok_dotenv_parse(const char *buf, size_t n, char *scratch, ok_dotenv_cb cb, void *ud) {
  const char *p = buf, *end = buf + n;
  int line = 0, pairs = 0;
  while (p < end) {
    const char *key, *eol;
    size_t klen, vlen = 0;
    line++;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p < end && (*p == '#' || *p == '\n' || *p == '\r')) {
      while (p < end && *p != '\n') p++;
      p++;
      continue;
    }
    if (p >= end) break;
    if ((size_t)(end - p) > 7 && memcmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
      p += 7;
      while (p < end && (*p == ' ' || *p == '\t')) p++;
    }
    key = p;
    while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == '.')) p++;
    klen = (size_t)(p - key);
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (klen == 0 || isdigit((unsigned char)*key) || p >= end || *p != '=') return -line;
    p++;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p < end && (*p == '\'' || *p == '"')) {
      char q = *p++;
      for (; p < end && *p != q; p++) {
        char c = *p;
        if (c == '\n') line++;
        if (q == '"' && c == '\\' && p + 1 < end) {
          c = *++p;
          c = c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
        }
        if (c == '\0') return -line;
        scratch[vlen++] = c;
      }
      if (p >= end) return -line; /* unterminated quote */
      p++;
      while (p < end && (*p == ' ' || *p == '\t')) p++;
      if (p < end && *p != '#' && *p != '\n' && *p != '\r') return -line;
    } else {
      const char *v = p, *ve;
      while (p < end && *p != '\n') p++;
      ve = p;
      for (const char *h = v; h < ve; h++) /* " #" starts a comment */
        if (*h == '#' && (h == v || h[-1] == ' ' || h[-1] == '\t')) { ve = h; break; }
      while (ve > v && isspace((unsigned char)ve[-1])) ve--;
      if (memchr(v, '\0', (size_t)(ve - v))) return -line;
      memcpy(scratch, v, (size_t)(ve - v));
      vlen = (size_t)(ve - v);
    }
    eol = memchr(p, '\n', (size_t)(end - p));
    p = eol ? eol + 1 : end;
    cb(ud, key, klen, scratch, vlen);
    pairs++;
  }
  return pairs;
}
