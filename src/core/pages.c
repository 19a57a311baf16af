/* pages.c: the final answer to a request, and the pagination cursor. A call is done with its
 * result (and res.error for a non-2xx or unreadable answer). Pages follow Link rel="next" on
 * the org's own origin only, each page handed to the caller as one `items` action, and stop:
 *   paginate  at the first empty page or the last link (Okta's System Log always sends a next
 *             link on a polling query, even on an empty page), or fail at max_pages;
 *   poll      never on an empty page: it sleeps `interval` and asks the same link again, until
 *             max_items, max_pages or duration is reached or the caller stops.
 * max_items ends either walk at exactly that many items: a page is cut to what is left of it.
 * A failure says where to resume: err.next is the page not yet handed out, so a resumed walk
 * loses no item and repeats none. A walk that max_items stopped mid-page ends with done.next
 * naming that same page and done.skip the number of its items already handed out: a walk
 * resumed there skips that many (a page's content is the server's, so it may have moved).
 * Each rule decides; operation.c acts. Part of the core: no I/O. */
#include <string.h>
#include "core/op.h"

/* Sets res.error for an answer that is not a success: Okta's error, or unreadable JSON. */
static void set_error(ok_ctx *c, int ridx) {
  lua_State *L = c->L;
  long status;
  lua_getfield(L, ridx, "status");
  status = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (status < 200 || status > 299) {
    lua_pushfstring(L, "%s %s", c->op->method, c->op->url);
    ok_result_http_error(L, ridx, lua_tostring(L, -1), ok_server_now(c->s, c->now));
    lua_remove(L, -2);
  } else {
    lua_getfield(L, ridx, "json_error");
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
    ok_error_push(L, "json", "%s %s: HTTP %ld but %s", c->op->method, c->op->url, status, lua_tostring(L, -1));
    ok_error_setint(L, "status", status);
    lua_remove(L, -2);
  }
  lua_setfield(L, ridx, "error");
}

static int done(ok_ctx *c, ok_decision *d) {
  lua_State *L = c->L;
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "done"); lua_setfield(L, -2, "action");
  lua_pushnumber(L, c->op->walk.pages); lua_setfield(L, -2, "pages");
  lua_pushnumber(L, c->op->walk.items); lua_setfield(L, -2, "items");
  if (c->op->walk.skip > 0) { /* cut mid-page: the resume point is that page itself */
    lua_pushstring(L, c->op->url); lua_setfield(L, -2, "next");
    lua_pushnumber(L, c->op->walk.skip); lua_setfield(L, -2, "skip");
  } else if (c->op->next) {
    lua_pushstring(L, c->op->next); lua_setfield(L, -2, "next");
  }
  d->phase = PH_END;
  return ok_decide(d, NEXT_EMIT);
}

/* Replaces the list on top with its first keep items. */
static void cut_page(lua_State *L, size_t keep) {
  lua_createtable(L, (int)keep, 0);
  for (size_t i = 1; i <= keep; i++) {
    lua_rawgeti(L, -2, (lua_Integer)i);
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  lua_remove(L, -2);
}

/* The page's list: a JSON array (cjson gives a table whose keys are 1..n). */
static int is_list(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx)) return 0;
  lua_pushnil(L);
  if (!lua_next(L, idx)) return 1;
  lua_pop(L, 2);
  return lua_rawlen(L, idx) > 0;
}

/* The next link, checked to be on the org's origin; 0 with an error pushed when refused. */
static int take_next(ok_ctx *c, int ridx) {
  lua_State *L = c->L;
  lua_getfield(L, ridx, "next");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); ok_op_set_str(&c->op->next, NULL); return 1; }
  if (!ok_request_url(L, c->s, lua_tostring(L, -1), 0)) {
    lua_getfield(L, -1, "message");
    ok_error_push(L, "config", "the next link was refused: %s", lua_tostring(L, -1));
    return 0;
  }
  ok_op_set_str(&c->op->next, lua_tostring(L, -1));
  lua_pop(L, 2);
  return 1;
}

/* Moves the cursor to url (the next page, or the same poll link) as a new request. */
static void move_to(ok_ctx *c, const char *url) {
  if (url != c->op->url) ok_op_set_str(&c->op->url, url);
  ok_op_new_request(c->op, c->now, c->s);
}

/* The pages a walk has handed out, as the first 12 bytes of each URL's SHA-256 (keys of the
 * uservalue's "visited" table), so that a next link back to one of them ends the walk: a
 * proxy or server bug linking A to B and back would otherwise loop forever. A poll runs for
 * days, so it keeps two generations of OK_POLL_VISITED pages and forgets the older. */
#define OK_POLL_VISITED 1024

static int visited(ok_ctx *c, const char *url, int record) {
  lua_State *L = c->L;
  unsigned char md[32];
  int seen = 0;
  ok_sha256(url, strlen(url), md);
  for (int g = 0; g < 2 && !seen; g++) {
    ok_op_uv_get(c, g ? "visited_before" : "visited");
    if (lua_istable(L, -1)) {
      lua_pushlstring(L, (const char *)md, 12);
      lua_rawget(L, -2);
      seen = lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (!record || seen) return seen;
  if (c->op->kind == OK_OP_POLL && c->op->walk.visited >= OK_POLL_VISITED) { /* a new generation */
    ok_op_uv_get(c, "visited");
    ok_op_uv_set(c, "visited_before");
    lua_pushnil(L);
    ok_op_uv_set(c, "visited");
    c->op->walk.visited = 0;
  }
  ok_op_uv_table(c, "visited");
  lua_pushlstring(L, (const char *)md, 12);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  c->op->walk.visited++;
  return 0;
}

static int poll_over(ok_ctx *c, double at) {
  ok_op *op = c->op;
  return op->walk.items >= op->walk.max_items || op->walk.pages >= op->walk.max_pages || at >= op->walk.stop_at;
}

/* Pushes {action="items", items=, url=, next=} for the page (its list on top). */
static int items(ok_ctx *c, ok_decision *d) {
  lua_State *L = c->L;
  ok_op *op = c->op;
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "items"); lua_setfield(L, -2, "action");
  lua_pushvalue(L, -2); lua_setfield(L, -2, "items");
  lua_pushstring(L, op->url); lua_setfield(L, -2, "url");
  if (op->next) { lua_pushstring(L, op->next); lua_setfield(L, -2, "next"); }
  d->phase = PH_ITEMS;
  return ok_decide(d, NEXT_EMIT);
}

int ok_pages_answer(ok_ctx *c, int ridx, ok_decision *d) {
  lua_State *L = c->L;
  ok_op *op = c->op;
  size_t n;
  set_error(c, ridx);
  if (op->kind == OK_OP_CALL) {
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "done"); lua_setfield(L, -2, "action");
    lua_pushvalue(L, ridx); lua_setfield(L, -2, "response");
    d->phase = PH_END;
    return ok_decide(d, NEXT_EMIT);
  }
  lua_getfield(L, ridx, "error");
  if (!lua_isnil(L, -1)) return ok_decide(d, NEXT_FAIL);
  lua_getfield(L, ridx, "body");
  if (!is_list(L, -1)) {
    ok_error_push(L, "json", "%s %s: the page is not a JSON array", op->method, op->url);
    return ok_decide(d, NEXT_FAIL);
  }
  if (!take_next(c, ridx)) return ok_decide(d, NEXT_FAIL);
  n = lua_rawlen(L, -1);
  op->walk.pages++;
  if ((double)n > op->walk.max_items - op->walk.items) { /* max_items is reached inside this page */
    size_t keep = (size_t)(op->walk.max_items - op->walk.items);
    cut_page(L, keep);
    op->walk.skip = (double)keep;
    n = keep;
  }
  op->walk.items += (double)n;
  if (n > 0) {
    visited(c, op->url, 1);
    return items(c, d);
  }
  if (op->kind == OK_OP_PAGES || poll_over(c, c->now + op->walk.interval)) return done(c, d);
  move_to(c, op->next ? op->next : op->url);
  ok_op_log(c, "no new items: polling again in %.1f s", op->walk.interval);
  return ok_decide_sleep(d, op->walk.interval, "poll");
}

/* Ends the walk with an error of kind "limit" whose err.next is the page not handed out. */
static int stop_at_next(ok_ctx *c, const char *fmt, double n, ok_decision *d) {
  ok_error_push(c->L, "limit", fmt, n, c->op->next);
  lua_pushstring(c->L, c->op->next);
  lua_setfield(c->L, -2, "next");
  return ok_decide(d, NEXT_FAIL);
}

int ok_pages_after_items(ok_ctx *c, ok_decision *d) {
  ok_op *op = c->op;
  if (op->kind == OK_OP_POLL && poll_over(c, c->now)) return done(c, d);
  if ((!op->next || op->walk.items >= op->walk.max_items) && op->kind == OK_OP_PAGES) return done(c, d);
  if (op->next && visited(c, op->next, 0))
    return stop_at_next(c, "stopped after %.0f pages: the server's next link (%s) returns to a page this walk has "
                        "already handed out", op->walk.pages, d);
  if (op->kind == OK_OP_PAGES && op->walk.pages >= op->walk.max_pages)
    return stop_at_next(c, "stopped after max_pages (%.0f) pages: resume from err.next (%s)", op->walk.max_pages, d);
  move_to(c, op->next ? op->next : op->url);
  return ok_decide(d, NEXT_DECIDE);
}

void ok_pages_resume_point(ok_ctx *c) {
  lua_State *L = c->L;
  if ((c->op->kind != OK_OP_PAGES && c->op->kind != OK_OP_POLL) || !c->op->url) return;
  lua_getfield(L, -1, "next"); /* where to resume: the page not yet handed out */
  if (lua_isnil(L, -1)) { lua_pushstring(L, c->op->url); lua_setfield(L, -3, "next"); }
  lua_pop(L, 1);
}
