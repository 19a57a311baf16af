/* transport/curl.c: the libcurl transport of the plain driver (lua/oktadpop/curl.lua). One
 * multi handle per client is its connection pool; many transfers run on it at once,
 * multiplexed as HTTP/2 streams where the server offers HTTP/2 (Okta does). Every transfer:
 * redirects never followed, the path sent as signed, TLS always verified, plain http only for
 * loopback origins, capped header and body sizes, no decompression, a whole-request timeout.
 * Callbacks never touch Lua, so no longjmp crosses libcurl. It moves bytes and decides
 * nothing: the core's send actions in, responses out. */
/*** @module oktadpop */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include "transport/transport.h"

#define OK_ENGINE_MT "oktadpop.curl_engine"
#define OK_MAX_HEADER_BYTES (64 * 1024)
#define OK_MAX_XFERS 256
#define OK_MAX_WHAT 300 /* "METHOD url" kept for the messages of a failed transfer */

typedef struct buffer { char *p; size_t n, cap; } buffer;

typedef struct xfer {
  CURL *easy;
  struct curl_slist *headers;  /* of the request in flight */
  buffer body, head;
  size_t max_body;
  int active, done, body_over, head_over;
  CURLcode rc;
  char what[OK_MAX_WHAT];
  char errbuf[CURL_ERROR_SIZE];
} xfer;

typedef struct engine {
  CURLM *multi;
  xfer *xfers;
  int nxfers, allow_http;
  size_t max_body;
  long connect_timeout_ms;
  char *ca_file, *proxy;
} engine;

static int curl_ready;

static int buf_add(buffer *b, const char *p, size_t n, size_t cap) {
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
  xfer *x = ud;
  if (!buf_add(&x->body, p, size * n, x->max_body)) { x->body_over = 1; return 0; }
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  if (size * n >= 5 && memcmp(p, "HTTP/", 5) == 0) x->head.n = 0; /* a new response (after a 100) */
  if (!buf_add(&x->head, p, size * n, OK_MAX_HEADER_BYTES)) { x->head_over = 1; return 0; }
  return size * n;
}

static CURL *easy_for(engine *e, xfer *x) {
  CURL *h = x->easy;
  if (h) return h;
  if (!(h = x->easy = curl_easy_init())) return NULL;
  x->max_body = e->max_body;
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: protocols by name */
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, e->allow_http ? "http,https" : "https");
#else
  curl_easy_setopt(h, CURLOPT_PROTOCOLS, e->allow_http ? (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS) : (long)CURLPROTO_HTTPS);
#endif
  curl_easy_setopt(h, CURLOPT_CAINFO, e->ca_file); /* NULL: the system's CAs */
  curl_easy_setopt(h, CURLOPT_PROXY, e->proxy);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, e->connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)e->max_body);
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

static engine *engine_check(lua_State *L, int idx) {
  engine *e = luaL_checkudata(L, idx, OK_ENGINE_MT);
  if (!e->multi) luaL_error(L, "the transport is closed");
  return e;
}

/* A free transfer slot (the array made on first use); -1 when all OK_MAX_XFERS are busy. */
static int take_slot(engine *e) {
  for (int i = 0; i < e->nxfers; i++)
    if (!e->xfers[i].active && !e->xfers[i].done) return i;
  if (e->nxfers == OK_MAX_XFERS) return -1;
  if (!e->xfers && !(e->xfers = calloc(OK_MAX_XFERS, sizeof *e->xfers))) return -1;
  return e->nxfers++;
}

static void give_back(engine *e, xfer *x) {
  if (x->active) curl_multi_remove_handle(e->multi, x->easy);
  curl_slist_free_all(x->headers);
  x->headers = NULL;
  x->active = x->done = 0;
  x->body.n = x->head.n = 0;
}

/* Pushes {error=err} naming the request, for a transfer that could not start or finish. */
static void push_failure(lua_State *L, const char *what, const char *kind, const char *why) {
  lua_createtable(L, 0, 1);
  ok_error_push(L, kind, "%s failed: %s", what, why);
  lua_setfield(L, -2, "error");
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
  if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(h, CURLOPT_NOBODY, (long)(method[0] == 'H'));
    if (method[0] == 'G') curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
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

/* Starts the send action at act; returns the slot, or -1 with a response {error=} pushed. */
static int start(lua_State *L, engine *e, int act) {
  const char *method, *url, *body;
  size_t blen = 0;
  int bad = 0, i = take_slot(e);
  xfer *x;
  lua_getfield(L, act, "method");
  lua_getfield(L, act, "url");
  method = luaL_checkstring(L, -2);
  url = luaL_checkstring(L, -1);
  if (i < 0) { push_failure(L, url, "network", "too many transfers at once"); return -1; }
  x = &e->xfers[i];
  snprintf(x->what, sizeof x->what, "%s %s", method, url);
  if (!easy_for(e, x)) { push_failure(L, x->what, "network", "cannot initialise libcurl"); return -1; }
  if (!(x->headers = header_list(L, act, &bad))) {
    push_failure(L, x->what, bad ? "config" : "network", bad ? "a header has a line break or a bad name" : "out of memory");
    return -1;
  }
  lua_getfield(L, act, "body");
  lua_getfield(L, act, "timeout");
  body = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &blen) : NULL;
  curl_easy_setopt(x->easy, CURLOPT_URL, url);
  curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
  curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)(luaL_optnumber(L, -1, 60) * 1000));
  set_method(x->easy, method, body, blen); /* the body is copied: the action may go before the transfer ends */
  lua_pop(L, 4);
  x->body.n = x->head.n = 0;
  x->body_over = x->head_over = 0;
  x->errbuf[0] = '\0';
  if (curl_multi_add_handle(e->multi, x->easy) != CURLM_OK) {
    give_back(e, x);
    push_failure(L, x->what, "network", "cannot start the transfer");
    return -1;
  }
  x->active = 1;
  return i;
}

/* Marks the transfers libcurl says are finished. */
static void collect(engine *e) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(e->multi, &left))) {
    xfer *x = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(e->multi, msg->easy_handle);
    x->rc = msg->data.result;
    x->active = 0;
    x->done = 1;
  }
}

/* Moves bytes for up to ms milliseconds, less when a transfer finishes; a sleep when none run. */
static void wait_ms(engine *e, int ms) {
  int running;
  curl_multi_perform(e->multi, &running);
  collect(e);
  for (int i = 0; i < e->nxfers; i++)
    if (e->xfers[i].done) return;
  curl_multi_poll(e->multi, NULL, 0, ms, NULL);
  curl_multi_perform(e->multi, &running);
  collect(e);
}

/* Pushes the response of finished slot i ({status=, headers=, body=} or {error=}); frees it. */
static void push_response(lua_State *L, engine *e, int i) {
  xfer *x = &e->xfers[i];
  long status = 0;
  if (x->rc != CURLE_OK) {
    char why[80];
    snprintf(why, sizeof why, "the response body exceeds max_body (%lu bytes)", (unsigned long)e->max_body);
    if (x->body_over || x->rc == CURLE_FILESIZE_EXCEEDED) push_failure(L, x->what, "network", why);
    else if (x->head_over) push_failure(L, x->what, "network", "the response headers exceed 64 KiB");
    else push_failure(L, x->what, x->rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network",
                      *x->errbuf ? x->errbuf : curl_easy_strerror(x->rc));
  } else {
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_createtable(L, 0, 3);
    if (!ok_headers_push(L, x->head.p ? x->head.p : "", x->head.n)) {
      lua_setfield(L, -3, "error");
      lua_pop(L, 1);
    } else {
      lua_setfield(L, -2, "headers");
      lua_pushinteger(L, status);
      lua_setfield(L, -2, "status");
      lua_pushlstring(L, x->body.p ? x->body.p : "", x->body.n);
      lua_setfield(L, -2, "body");
    }
  }
  give_back(e, x);
}

/*** engine:start(send_action) -> id | nil, response: starts a transfer (the response {error=}
 * when it cannot start).
 * @function engine:start
 */
static int engine_start(lua_State *L) {
  engine *e = engine_check(L, 1);
  int i;
  luaL_checktype(L, 2, LUA_TTABLE);
  if ((i = start(L, e, 2)) < 0) { lua_pushnil(L); lua_insert(L, -2); return 2; }
  lua_pushinteger(L, i + 1);
  return 1;
}

/*** engine:poll(seconds) -> id, ...: moves bytes for up to seconds (a sleep when nothing runs)
 * and answers the ids of the transfers that finished.
 * @function engine:poll
 */
static int engine_poll(lua_State *L) {
  engine *e = engine_check(L, 1);
  double s = luaL_checknumber(L, 2);
  int n = 0;
  wait_ms(e, s > 0 ? (int)(s * 1000 + 0.999) : 0);
  luaL_checkstack(L, e->nxfers, "finished transfers");
  for (int i = 0; i < e->nxfers; i++)
    if (e->xfers[i].done) { lua_pushinteger(L, i + 1); n++; }
  return n;
}

/* The slot of id at idx, which must be a transfer started and not yet answered. */
static int slot_arg(lua_State *L, engine *e, int idx) {
  lua_Integer id = luaL_checkinteger(L, idx);
  luaL_argcheck(L, id >= 1 && id <= e->nxfers && (e->xfers[id - 1].active || e->xfers[id - 1].done), idx,
                "not a transfer in flight");
  return (int)id - 1;
}

/*** engine:response(id) -> response: a finished transfer's {status=, headers=, body=} or
 * {error=}; its slot is free again.
 * @function engine:response
 */
static int engine_response(lua_State *L) {
  engine *e = engine_check(L, 1);
  int i = slot_arg(L, e, 2);
  luaL_argcheck(L, e->xfers[i].done, 2, "the transfer has not finished");
  push_response(L, e, i);
  return 1;
}

/*** engine:perform(send_action) -> response: one transfer, start to finish.
 * @function engine:perform
 */
static int engine_perform(lua_State *L) {
  engine *e = engine_check(L, 1);
  int i;
  luaL_checktype(L, 2, LUA_TTABLE);
  if ((i = start(L, e, 2)) < 0) return 1;
  while (!e->xfers[i].done) wait_ms(e, 1000);
  push_response(L, e, i);
  return 1;
}

/*** engine:cancel(id): gives up a transfer in flight.
 * @function engine:cancel
 */
static int engine_cancel(lua_State *L) {
  engine *e = engine_check(L, 1);
  give_back(e, &e->xfers[slot_arg(L, e, 2)]);
  return 0;
}

/* Frees the connections and every transfer; safe to call twice (close, then __gc). */
static int engine_close(lua_State *L) {
  engine *e = luaL_checkudata(L, 1, OK_ENGINE_MT);
  for (int i = 0; i < e->nxfers; i++) {
    xfer *x = &e->xfers[i];
    if (x->active && e->multi) curl_multi_remove_handle(e->multi, x->easy);
    curl_slist_free_all(x->headers);
    if (x->easy) curl_easy_cleanup(x->easy);
    free(x->body.p);
    free(x->head.p);
  }
  free(e->xfers);
  if (e->multi) curl_multi_cleanup(e->multi);
  free(e->ca_file);
  free(e->proxy);
  memset(e, 0, sizeof *e);
  return 0;
}

static char *dup_opt(lua_State *L, int idx, const char *name) {
  const char *s;
  char *copy;
  lua_getfield(L, idx, name);
  s = lua_tostring(L, -1);
  lua_pop(L, 1);
  if (!s) return NULL;
  if (!(copy = strdup(s))) luaL_error(L, "out of memory");
  return copy;
}

/*** oktadpop.libcurl.engine{allow_http=, ca_file=, proxy=, connect_timeout=, max_body=} ->
 * engine: a transport with its own connection pool (the plain driver makes one per client from
 * the session's settings).
 * @function libcurl.engine
 */
static int engine_new(lua_State *L) {
  engine *e;
  luaL_checktype(L, 1, LUA_TTABLE);
  e = lua_newuserdata(L, sizeof *e); /* first: what follows allocates, __gc frees */
  memset(e, 0, sizeof *e);
  luaL_setmetatable(L, OK_ENGINE_MT);
  lua_getfield(L, 1, "allow_http");
  e->allow_http = lua_toboolean(L, -1);
  lua_getfield(L, 1, "connect_timeout");
  e->connect_timeout_ms = (long)(luaL_optnumber(L, -1, 10) * 1000);
  lua_getfield(L, 1, "max_body");
  e->max_body = (size_t)luaL_optnumber(L, -1, 16 * 1024 * 1024);
  lua_pop(L, 3);
  e->ca_file = dup_opt(L, 1, "ca_file");
  e->proxy = dup_opt(L, 1, "proxy");
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return luaL_error(L, "cannot initialise libcurl");
    curl_ready = 1;
  }
  if (!(e->multi = curl_multi_init())) return luaL_error(L, "cannot initialise libcurl");
  curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  return 1;
}

/*** oktadpop.libcurl.clock() -> the wall clock, in seconds with a fraction (the core's time).
 * @function libcurl.clock
 */
static int wall_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  return 1;
}

void ok_transport_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"start", engine_start}, {"poll", engine_poll}, {"response", engine_response},
                                     {"perform", engine_perform}, {"cancel", engine_cancel}, {"close", engine_close},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", engine_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"engine", engine_new}, {"clock", wall_clock}, {NULL, NULL}};
  ok_class(L, OK_ENGINE_MT, methods, meta);
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "libcurl");
}
