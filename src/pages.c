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
 * Part of the core: no I/O. */
#include <string.h>
#include "op.h"

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

static int done(ok_ctx *c) {
  lua_State *L = c->L;
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "done"); lua_setfield(L, -2, "action");
  lua_pushnumber(L, c->op->pages); lua_setfield(L, -2, "pages");
  lua_pushnumber(L, c->op->items); lua_setfield(L, -2, "items");
  if (c->op->skip > 0) { /* cut mid-page: the resume point is that page itself */
    lua_pushstring(L, c->op->url); lua_setfield(L, -2, "next");
    lua_pushnumber(L, c->op->skip); lua_setfield(L, -2, "skip");
  } else if (c->op->next) {
    lua_pushstring(L, c->op->next); lua_setfield(L, -2, "next");
  }
  return ok_op_emit(c, PH_END);
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

/* The next link, checked to be on the org's origin; 0 with nil, err pushed when refused. */
static int take_next(ok_ctx *c, int ridx) {
  lua_State *L = c->L;
  lua_getfield(L, ridx, "next");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); ok_op_set_str(&c->op->next, NULL); return 1; }
  if (ok_request_url(L, c->s, lua_tostring(L, -1), 0) != 1) {
    lua_getfield(L, -1, "message");
    ok_fail(L, "config", "the next link was refused: %s", lua_tostring(L, -1));
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

static int poll_over(ok_ctx *c, double at) {
  ok_op *op = c->op;
  return op->items >= op->max_items || op->pages >= op->max_pages || at >= op->stop_at;
}

int ok_pages_answer(ok_ctx *c, int ridx) {
  lua_State *L = c->L;
  ok_op *op = c->op;
  size_t n;
  set_error(c, ridx);
  if (op->kind == OK_OP_CALL) {
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "done"); lua_setfield(L, -2, "action");
    lua_pushvalue(L, ridx); lua_setfield(L, -2, "response");
    return ok_op_emit(c, PH_END);
  }
  lua_getfield(L, ridx, "error");
  if (!lua_isnil(L, -1)) return ok_op_emit_fail(c);
  lua_getfield(L, ridx, "body");
  if (!is_list(L, -1)) {
    ok_error_push(L, "json", "%s %s: the page is not a JSON array", op->method, op->url);
    return ok_op_emit_fail(c);
  }
  if (!take_next(c, ridx)) return ok_op_fail_pushed(c);
  n = lua_rawlen(L, -1);
  op->pages++;
  if ((double)n > op->max_items - op->items) { /* max_items is reached inside this page */
    size_t keep = (size_t)(op->max_items - op->items);
    cut_page(L, keep);
    op->skip = (double)keep;
    n = keep;
  }
  op->items += (double)n;
  if (n > 0) {
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "items"); lua_setfield(L, -2, "action");
    lua_pushvalue(L, -2); lua_setfield(L, -2, "items");
    lua_pushstring(L, op->url); lua_setfield(L, -2, "url");
    if (op->next) { lua_pushstring(L, op->next); lua_setfield(L, -2, "next"); }
    return ok_op_emit(c, PH_ITEMS);
  }
  if (op->kind == OK_OP_PAGES || poll_over(c, c->now + op->interval)) return done(c);
  move_to(c, op->next ? op->next : op->url);
  ok_op_log(c, "no new items: polling again in %.1f s", op->interval);
  return ok_op_emit_sleep(c, op->interval, "poll", NULL);
}

int ok_pages_after_items(ok_ctx *c) {
  ok_op *op = c->op;
  if (op->kind == OK_OP_POLL) {
    if (poll_over(c, c->now)) return done(c);
    move_to(c, op->next ? op->next : op->url);
    return ok_op_advance(c);
  }
  if (!op->next || op->items >= op->max_items) return done(c);
  if (op->pages >= op->max_pages) {
    ok_error_push(c->L, "limit", "stopped after max_pages (%.0f) pages: resume from err.next", op->max_pages);
    lua_pushstring(c->L, op->next);
    lua_setfield(c->L, -2, "next");
    return ok_op_emit_fail(c);
  }
  if (strcmp(op->next, op->url) == 0) {
    ok_error_push(c->L, "http", "%s: the server's next link repeats this page", op->url);
    return ok_op_emit_fail(c);
  }
  move_to(c, op->next);
  return ok_op_advance(c);
}
