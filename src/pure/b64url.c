/* b64url.c: base64url without padding (RFC 7515 section 2) over OpenSSL's base64 coder. */
#include <openssl/evp.h>
#include <string.h>
#include "pure/pure.h"

size_t ok_b64url_len(size_t n) { return (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0); }

size_t ok_b64url_encode(const unsigned char *in, size_t n, char *out) {
  size_t done = 0, len = ok_b64url_len(n);
  unsigned char block[4 * 48 + 1];
  /* EVP_EncodeBlock NUL-terminates and pads, so encode in chunks into a scratch block. */
  while (done < n) {
    size_t chunk = n - done > 144 ? 144 : n - done;
    int w = EVP_EncodeBlock(block, in + done, (int)chunk);
    for (int i = 0; i < w; i++) {
      unsigned char c = block[i];
      if (c == '=') break;
      out[(done / 3) * 4 + (size_t)i] = c == '+' ? '-' : c == '/' ? '_' : (char)c;
    }
    done += chunk;
  }
  return len;
}

static int b64val(unsigned char c) { /* c is already known to be in the standard alphabet */
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  return c == '+' ? 62 : 63;
}

size_t ok_b64url_room(size_t n) { return n / 4 * 3 + 3; }

long ok_b64url_decode(const char *in, size_t n, unsigned char *out) {
  unsigned char quad[4];
  size_t o = 0;
  if (n % 4 == 1) return -1;
  for (size_t i = 0; i < n; i += 4) {
    size_t k = n - i < 4 ? n - i : 4;
    for (size_t j = 0; j < 4; j++) {
      if (j >= k) { quad[j] = '='; continue; }
      char c = in[i + j];
      if (c == '-') c = '+';
      else if (c == '_') c = '/';
      else if (c == '+' || c == '/' || c == '=') return -1; /* only the URL-safe alphabet */
      quad[j] = (unsigned char)c;
    }
    int w = EVP_DecodeBlock(out + o, quad, 4);
    if (w != 3) return -1;
    /* A short last group must leave its unused low bits zero, so that every byte string has
     * exactly one encoding (no malleable signatures or JWK members). */
    if (k < 4 && (b64val(quad[k - 1]) & (k == 2 ? 0x0F : 0x03))) return -1;
    o += 3 - (4 - k);
  }
  return (long)o;
}
