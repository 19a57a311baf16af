/* transfer.c: moving bytes with libcurl's multi interface. One multi handle per client is its
 * connection pool; many transfers run on it at once, multiplexed as HTTP/2 streams where the
 * server offers HTTP/2 (Okta does). Every transfer: redirects never followed, TLS always
 * verified, plain http only for loopback origins, capped header and body sizes, no
 * decompression, a whole-request timeout. Callbacks never touch Lua, so no longjmp crosses
 * libcurl. This file decides nothing about the protocol: it performs the core's send actions. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include "driver.h"

#define OK_MAX_HEADER_BYTES (64 * 1024)
#define OK_MAX_XFERS 256

static int curl_ready;

double ok_wall_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int buf_add(ok_buf *b, const char *p, size_t n, size_t cap) {
  if (b->n + n > cap) return 0;
  if (b->n + n + 1 > b->cap) {
    size_t nc = b->cap ? b->cap : 16384;
    char *np;
    while (nc < b->n + n + 1) nc *= 2;
    if (!(np = realloc(b->p, nc))) return 0;
    b->p = np;
    b->cap = nc;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
  return 1;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  ok_xfer *x = ud;
  if (!buf_add(&x->body, p, size * n, x->max_body)) { x->body_over = 1; return 0; }
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  ok_xfer *x = ud;
  if (size * n >= 5 && memcmp(p, "HTTP/", 5) == 0) x->head.n = 0; /* a new response (after a 100) */
  if (!buf_add(&x->head, p, size * n, OK_MAX_HEADER_BYTES)) { x->head_over = 1; return 0; }
  return size * n;
}

static CURLM *multi_for(ok_engine *e) {
  if (e->multi) return e->multi;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
    curl_ready = 1;
  }
  if (!(e->multi = curl_multi_init())) return NULL;
  curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  return e->multi;
}

int ok_xfer_take(ok_engine *e) {
  for (int i = 0; i < e->nxfers; i++)
    if (!e->xfers[i].active && !e->xfers[i].done) return i;
  if (e->nxfers == OK_MAX_XFERS) return -1;
  if (!e->xfers && !(e->xfers = calloc(OK_MAX_XFERS, sizeof *e->xfers))) return -1;
  return e->nxfers++;
}

void ok_xfer_give_back(ok_engine *e, int i) {
  ok_xfer *x = &e->xfers[i];
  if (x->active && e->multi) curl_multi_remove_handle(e->multi, x->easy);
  curl_slist_free_all(x->headers);
  x->headers = NULL;
  x->active = x->done = 0;
  x->body.n = x->head.n = 0;
}

/* The easy handle's fixed options, set once per slot from the session's config. */
static CURL *easy_for(ok_xfer *x, lua_State *L, int sidx) {
  CURL *h = x->easy;
  if (h) return h;
  if (!(h = x->easy = curl_easy_init())) return NULL;
  lua_getfield(L, sidx, "allow_http");
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: protocols by name */
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, lua_toboolean(L, -1) ? "http,https" : "https");
#else
  curl_easy_setopt(h, CURLOPT_PROTOCOLS, lua_toboolean(L, -1) ? (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS) : (long)CURLPROTO_HTTPS);
#endif
  lua_getfield(L, sidx, "ca_file");
  curl_easy_setopt(h, CURLOPT_CAINFO, lua_tostring(L, -1)); /* NULL: the system's CAs */
  lua_getfield(L, sidx, "proxy");
  curl_easy_setopt(h, CURLOPT_PROXY, lua_tostring(L, -1));
  lua_getfield(L, sidx, "connect_timeout");
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(lua_tonumber(L, -1) * 1000));
  lua_getfield(L, sidx, "max_body");
  x->max_body = (size_t)lua_tonumber(L, -1);
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->max_body);
  lua_pop(L, 5); /* curl copied the strings */
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L); /* the path sent is the one the htu was signed for */
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L); /* wait for a multiplexed connection rather than open another */
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(h, CURLOPT_PRIVATE, x);
  return h;
}

/* Pushes {error=err} with a message for the action at act. */
static void push_failure(lua_State *L, int act, const char *kind, const char *why) {
  lua_getfield(L, act, "method");
  lua_getfield(L, act, "url");
  lua_createtable(L, 0, 1);
  ok_error_push(L, kind, "%s %s failed: %s", lua_tostring(L, -3), lua_tostring(L, -2), why);
  lua_setfield(L, -2, "error");
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* The request headers of the action at act as a curl list; NULL (with *bad) on a bad one. The
 * core checked the caller's headers; this is the last line against a line break. */
static struct curl_slist *header_list(lua_State *L, int act, int *bad) {
  struct curl_slist *list = curl_slist_append(NULL, "Expect:"), *more; /* one round trip per request */
  lua_getfield(L, act, "headers");
  lua_pushnil(L);
  while (list && lua_next(L, -2)) {
    const char *name = lua_tostring(L, -2), *value = lua_tostring(L, -1);
    if (lua_type(L, -2) != LUA_TSTRING || !value || strpbrk(name, "\r\n: ") || strpbrk(value, "\r\n")) {
      *bad = 1;
      lua_pop(L, 3);
      curl_slist_free_all(list);
      return NULL;
    }
    lua_pushfstring(L, "%s: %s", name, value);
    more = curl_slist_append(list, lua_tostring(L, -1));
    lua_pop(L, 2);
    if (!more) { curl_slist_free_all(list); list = NULL; lua_pop(L, 1); break; }
    list = more;
  }
  if (list) lua_pop(L, 1);
  return list;
}

static void set_method(CURL *h, const char *method, const char *body, size_t len) {
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
    return;
  }
  if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
    return;
  }
  curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
  if (!body && (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0))
    body = ""; /* an empty body still gets Content-Length: 0 */
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body);
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  }
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
}

int ok_xfer_start(lua_State *L, ok_engine *e, int i, int act, int sidx) {
  ok_xfer *x = &e->xfers[i];
  CURLM *m = multi_for(e);
  CURL *h;
  int bad = 0;
  size_t blen = 0;
  const char *method, *url, *body;
  act = lua_absindex(L, act);
  sidx = lua_absindex(L, sidx);
  if (!m || !(h = easy_for(x, L, sidx))) return push_failure(L, act, "network", "cannot initialise libcurl"), 0;
  if (!(x->headers = header_list(L, act, &bad)))
    return push_failure(L, act, bad ? "config" : "network", bad ? "a header has a line break or a bad name" : "out of memory"), 0;
  lua_getfield(L, act, "method");
  lua_getfield(L, act, "url");
  lua_getfield(L, act, "body");
  lua_getfield(L, act, "timeout");
  method = lua_tostring(L, -4);
  url = lua_tostring(L, -3);
  body = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &blen) : NULL;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->headers);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(lua_tonumber(L, -1) * 1000));
  set_method(h, method, body, blen); /* the body is copied: the action may go before the transfer ends */
  lua_pop(L, 4);
  x->body.n = x->head.n = 0;
  x->body_over = x->head_over = 0;
  x->errbuf[0] = '\0';
  if (curl_multi_add_handle(m, h) != CURLM_OK) return push_failure(L, act, "network", "cannot start the transfer"), 0;
  x->active = 1;
  return 1;
}

/* Marks the transfers libcurl says are finished; returns how many. */
static int collect(ok_engine *e) {
  CURLMsg *msg;
  int left, n = 0;
  while ((msg = curl_multi_info_read(e->multi, &left))) {
    ok_xfer *x = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(e->multi, msg->easy_handle);
    x->rc = (int)msg->data.result;
    x->active = 0;
    x->done = 1;
    n++;
  }
  return n;
}

void ok_engine_wait(ok_engine *e, int ms) {
  int running;
  if (!e->multi && !multi_for(e)) return;
  curl_multi_perform(e->multi, &running);
  if (collect(e)) return;
  curl_multi_poll(e->multi, NULL, 0, ms, NULL); /* waits the whole ms when nothing runs: a sleep */
  curl_multi_perform(e->multi, &running);
  collect(e);
}

/* Pushes the response headers as a table of lower-case names; repeats joined by ", ". */
static void push_headers(lua_State *L, const ok_buf *head) {
  const char *p = head->p, *end = head->p + head->n;
  int tbl;
  lua_newtable(L);
  tbl = lua_gettop(L);
  if (!p) return;
  p = memchr(p, '\n', head->n); /* past the status line */
  while (p && ++p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p)), *colon, *v, *ve;
    char name[128];
    size_t nl;
    if (!eol) eol = end;
    colon = memchr(p, ':', (size_t)(eol - p));
    if (colon && colon > p && (nl = (size_t)(colon - p)) < sizeof name) {
      for (size_t i = 0; i < nl; i++) name[i] = (char)tolower((unsigned char)p[i]);
      name[nl] = '\0';
      for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {}
      for (ve = eol; ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
      lua_getfield(L, tbl, name);
      if (lua_isstring(L, -1)) { lua_pushliteral(L, ", "); lua_pushlstring(L, v, (size_t)(ve - v)); lua_concat(L, 3); }
      else { lua_pop(L, 1); lua_pushlstring(L, v, (size_t)(ve - v)); }
      lua_setfield(L, tbl, name);
    }
    p = eol;
  }
}

void ok_xfer_response(lua_State *L, ok_engine *e, int i, int act) {
  ok_xfer *x = &e->xfers[i];
  long status = 0;
  act = lua_absindex(L, act);
  if (x->rc != CURLE_OK) {
    char why[80];
    snprintf(why, sizeof why, "the response body exceeds max_body (%lu bytes)", (unsigned long)x->max_body);
    if (x->body_over || x->rc == CURLE_FILESIZE_EXCEEDED) push_failure(L, act, "network", why);
    else if (x->head_over) push_failure(L, act, "network", "the response headers exceed 64 KiB");
    else push_failure(L, act, x->rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network",
                      *x->errbuf ? x->errbuf : curl_easy_strerror((CURLcode)x->rc));
    return;
  }
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  push_headers(L, &x->head);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, x->body.p ? x->body.p : "", x->body.n);
  lua_setfield(L, -2, "body");
}

void ok_engine_free(ok_engine *e) {
  for (int i = 0; i < e->nxfers; i++) {
    ok_xfer *x = &e->xfers[i];
    if (x->active && e->multi) curl_multi_remove_handle(e->multi, x->easy);
    curl_slist_free_all(x->headers);
    if (x->easy) curl_easy_cleanup(x->easy);
    free(x->body.p);
    free(x->head.p);
  }
  free(e->xfers);
  if (e->multi) curl_multi_cleanup(e->multi);
  memset(e, 0, sizeof *e);
}
