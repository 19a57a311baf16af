/* curl.c: the blocking transport. One easy handle per client (its connections are reused),
 * redirects never followed, TLS always verified, http only for loopback, capped response
 * sizes, no decompression. Performs the core's send actions and hands back plain tables. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "oktadpop.h"

#define OK_MAX_HEADER_BYTES (64 * 1024)

static int curl_ready;

const char *ok_curl_version(void) {
  static char v[48];
  if (!*v) {
    curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);
    snprintf(v, sizeof v, "libcurl/%s", d->version);
  }
  return v;
}

/* Servers send the same Date for a whole second: parse each distinct one once per thread. */
double ok_http_date(const char *s) {
  static _Thread_local char last[64];
  static _Thread_local double last_value;
  time_t t;
  if (strcmp(s, last) == 0) return last_value;
  t = curl_getdate(s, NULL);
  last_value = t == (time_t)-1 ? -1 : (double)t;
  if (strlen(s) < sizeof last) strcpy(last, s);
  return last_value;
}

void ok_curl_free(ok_transport *t) {
  curl_slist_free_all(t->headers);
  if (t->easy) curl_easy_cleanup(t->easy);
  free(t->body.p);
  free(t->head.p);
  memset(t, 0, sizeof *t);
}

typedef struct sink { ok_buf *buf; size_t cap; int over; } sink;

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

/* Callbacks never touch Lua: a longjmp must not cross libcurl. */
static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  sink *s = ud;
  if (!buf_add(s->buf, p, size * n, s->cap)) { s->over = 1; return 0; }
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  sink *s = ud;
  if (size * n >= 5 && memcmp(p, "HTTP/", 5) == 0) s->buf->n = 0; /* a new response (after 100) */
  if (!buf_add(s->buf, p, size * n, s->cap)) { s->over = 1; return 0; }
  return size * n;
}

/* Sets the handle's fixed options once: they stay across requests (curl keeps them). */
static CURL *easy_for(ok_client *c) {
  CURL *e;
  if (c->net.easy) return c->net.easy;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
    curl_ready = 1;
  }
  if (!(e = curl_easy_init())) return NULL;
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, c->allow_http ? "http,https" : "https");
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  if (c->proxy) curl_easy_setopt(e, CURLOPT_PROXY, c->proxy);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  c->net.easy = e;
  return e;
}

/* A header line must not smuggle another: no CR, LF or NUL anywhere. */
static int header_ok(const char *name, const char *value) {
  if (!*name) return 0;
  for (const char *p = name; *p; p++)
    if (!(isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p))) return 0;
  return strpbrk(value, "\r\n") == NULL; /* libc's vectorised scan: values are ~1 KB tokens */
}

/* Pushes the response headers as a table of lower-case names; repeated ones joined by ", ". */
static void push_headers(lua_State *L, const ok_buf *head) {
  const char *p = head->p, *end = head->p + head->n;
  lua_newtable(L);
  if (!p) return;
  p = memchr(p, '\n', head->n); /* skip the status line */
  while (p && ++p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p)), *colon, *v, *ve;
    if (!eol) eol = end;
    colon = memchr(p, ':', (size_t)(eol - p));
    if (colon && colon > p) {
      luaL_Buffer b;
      char name[128];
      size_t nl = (size_t)(colon - p);
      if (nl < sizeof name) {
        for (size_t i = 0; i < nl; i++) name[i] = (char)tolower((unsigned char)p[i]);
        name[nl] = '\0';
        for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {}
        for (ve = eol; ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
        int tbl = lua_gettop(L), prev;
        lua_getfield(L, tbl, name);
        prev = lua_gettop(L); /* absolute: 5.4's buffinit pushes a placeholder, 5.1's does not */
        luaL_buffinit(L, &b);
        if (lua_isstring(L, prev)) { lua_pushvalue(L, prev); luaL_addvalue(&b); luaL_addstring(&b, ", "); }
        luaL_addlstring(&b, v, (size_t)(ve - v));
        luaL_pushresult(&b);
        lua_setfield(L, tbl, name);
        lua_pop(L, 1);
      }
    }
    p = eol;
  }
}

int ok_curl_send(lua_State *L, ok_client *c, int act) {
  CURL *e = easy_for(c);
  CURLcode rc;
  sink body, head;
  const char *method, *url, *req_body = NULL;
  size_t body_len = 0;
  long status = 0;
  char errbuf[CURL_ERROR_SIZE] = "";

  if (!e) return ok_error_push(L, "network", "cannot initialise libcurl");
  act = lua_absindex(L, act);
  lua_getfield(L, act, "method");
  lua_getfield(L, act, "url");
  lua_getfield(L, act, "body");
  method = lua_tostring(L, -3);
  url = lua_tostring(L, -2);
  if (lua_isstring(L, -1)) req_body = lua_tolstring(L, -1, &body_len);

  curl_slist_free_all(c->net.headers); /* a leftover from a request a Lua error cut short */
  c->net.headers = NULL;
  lua_getfield(L, act, "headers");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    struct curl_slist *more;
    const char *name = lua_tostring(L, -2), *value = lua_tostring(L, -1);
    if (lua_type(L, -2) != LUA_TSTRING || !value || !header_ok(name, value)) {
      const char *shown = lua_type(L, -2) == LUA_TSTRING && strlen(name) < 64 ? name : "?";
      lua_createtable(L, 0, 1);
      ok_error_push(L, "config", "header %s has a CR or LF or an invalid name: refused", shown);
      lua_setfield(L, -2, "error");
      return 1;
    }
    lua_pushfstring(L, "%s: %s", name, value);
    more = curl_slist_append(c->net.headers, lua_tostring(L, -1));
    lua_pop(L, 2);
    if (!more) return ok_error_push(L, "network", "out of memory");
    c->net.headers = more;
  }
  /* Not "Expect: 100-continue" on bodies: one round trip per request. */
  {
    struct curl_slist *more = curl_slist_append(c->net.headers, "Expect:");
    if (more) c->net.headers = more;
  }
  if (!req_body && (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0))
    req_body = ""; /* an empty body still gets Content-Length: 0 */

  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->net.headers);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
  } else {
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (req_body) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, req_body); /* alive in the action table */
    } else {
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
  }
  c->net.body.n = c->net.head.n = 0;
  body.buf = &c->net.body; body.cap = c->max_body; body.over = 0;
  head.buf = &c->net.head; head.cap = OK_MAX_HEADER_BYTES; head.over = 0;
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &head);
  rc = curl_easy_perform(e);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
  curl_slist_free_all(c->net.headers);
  c->net.headers = NULL;

  lua_createtable(L, 0, 3);
  if (rc != CURLE_OK) {
    const char *kind = rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network";
    const char *why = *errbuf ? errbuf : curl_easy_strerror(rc);
    if (body.over || rc == CURLE_FILESIZE_EXCEEDED)
      ok_error_push(L, "network", "%s %s: response body exceeds max_body (%lu bytes)", method, url, (unsigned long)c->max_body);
    else if (head.over)
      ok_error_push(L, "network", "%s %s: response headers exceed %d bytes", method, url, OK_MAX_HEADER_BYTES);
    else
      ok_error_push(L, kind, "%s %s failed: %s", method, url, why);
    lua_setfield(L, -2, "error");
    return 1;
  }
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  push_headers(L, &c->net.head);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, c->net.body.p ? c->net.body.p : "", c->net.body.n);
  lua_setfield(L, -2, "body");
  return 1;
}
