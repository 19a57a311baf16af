/* bench/curlfloor.c URL SECONDS: libcurl alone making oktadpop's API request, the floor under
 * client:get. Same options as src/curl.c (one easy handle, NOSIGNAL, no redirects, header list
 * built per request, body and headers collected), same headers and sizes (the token from
 * BENCH_ACCESS_TOKEN, a proof from BENCH_PROOF), no signing, no Lua, no JSON.
 * Prints "rate <requests per wall second>", "cpu_us <CPU µs per request>", "n <requests>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

typedef struct sink { char *p; size_t n, cap; } sink;

static size_t collect(char *p, size_t size, size_t n, void *ud) {
  sink *s = ud;
  size_t len = size * n;
  if (s->n + len + 1 > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16384;
    char *np;
    while (cap < s->n + len + 1) cap *= 2;
    if (!(np = realloc(s->p, cap))) return 0;
    s->p = np;
    s->cap = cap;
  }
  memcpy(s->p + s->n, p, len);
  s->n += len;
  return len;
}

static double seconds(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *header(const char *name, const char *value) {
  size_t n = strlen(name) + strlen(value) + 3;
  char *h = malloc(n);
  if (h) snprintf(h, n, "%s: %s", name, value);
  return h;
}

int main(int argc, char **argv) {
  const char *token = getenv("BENCH_ACCESS_TOKEN"), *proof = getenv("BENCH_PROOF");
  char *authorization, *dpop;
  sink body = {0}, head = {0};
  double limit, w0, c0, w;
  long n = 0;
  CURL *e;
  if (argc != 3 || !token || !proof) {
    fprintf(stderr, "usage: BENCH_ACCESS_TOKEN=... BENCH_PROOF=... curlfloor URL SECONDS\n");
    return 2;
  }
  limit = atof(argv[2]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  authorization = header("Authorization", token);
  dpop = header("DPoP", proof);
  if (!(e = curl_easy_init()) || !authorization || !dpop) return 1;
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, collect);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &head);
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  w0 = seconds(CLOCK_MONOTONIC);
  c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
  do {
    struct curl_slist *list = NULL;
    const char *lines[] = {"User-Agent: oktadpop/0.1.0 libcurl/7.88.1 Lua 5.4.4", /* the default's size */
                           "Accept: application/json", authorization, dpop, "Expect:"};
    long status = 0;
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) list = curl_slist_append(list, lines[i]);
    body.n = head.n = 0;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    if (curl_easy_perform(e) != CURLE_OK) return 1;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(list);
    if (status != 200 || body.n == 0) return 1;
    n++;
  } while ((w = seconds(CLOCK_MONOTONIC) - w0) < limit);
  printf("n %ld\nrate %.1f\ncpu_us %.2f\n", n, (double)n / w, (seconds(CLOCK_PROCESS_CPUTIME_ID) - c0) / (double)n * 1e6);
  curl_easy_cleanup(e);
  free(authorization);
  free(dpop);
  free(body.p);
  free(head.p);
  return 0;
}
