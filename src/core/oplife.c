/* oplife.c: an operation's life: made for a session (a token fetch, a call, a page walk), its
 * page options read, its token marked for replacement, and its memory freed. What it does
 * between is operation.c's. Part of the core: no I/O. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/op.h"

int ok_op_gc(lua_State *L) {
  ok_op *op = luaL_checkudata(L, 1, OK_OP_MT);
  free(op->method); free(op->url); free(op->next); free(op->retry.retry_for); free(op->token.sent_nonce);
  memset(op, 0, sizeof *op);
  op->phase = PH_END;
  return 0;
}

int ok_op_create(lua_State *L, int sidx, enum ok_op_kind kind, const char *method, const char *url, int hidx, int bidx) {
  ok_op *op;
  ok_session *s = ok_session_check(L, sidx);
  sidx = lua_absindex(L, sidx);
  hidx = hidx ? lua_absindex(L, hidx) : 0;
  bidx = bidx ? lua_absindex(L, bidx) : 0;
  op = lua_newuserdata(L, sizeof *op); /* first: what it allocates, __gc frees */
  memset(op, 0, sizeof *op);
  luaL_setmetatable(L, OK_OP_MT);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, sidx); lua_setfield(L, -2, "session");
  if (hidx) { lua_pushvalue(L, hidx); lua_setfield(L, -2, "headers"); }
  if (bidx) { lua_pushvalue(L, bidx); lua_setfield(L, -2, "body"); }
  lua_setuservalue(L, -2);
  op->kind = kind;
  op->walk.max_pages = op->walk.max_items = op->walk.stop_at = OK_NO_LIMIT;
  if (kind == OK_OP_TOKEN) return 1;
  ok_op_set_str(&op->method, method);
  ok_op_set_str(&op->url, url);
  if (!op->method || !op->url) return luaL_error(L, "out of memory");
  op->idempotent = strcmp(method, "GET") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
                   strcmp(method, "HEAD") == 0 || strcmp(method, "OPTIONS") == 0;
  ok_bucket_name(s->cfg.bucket_rules, s->cfg.nbucket_rules, method, ok_url_path(url), op->bucket);
  return 1;
}

void ok_op_force(lua_State *L, int opidx) {
  ok_op *op = luaL_checkudata(L, opidx, OK_OP_MT);
  ok_session *s;
  lua_getuservalue(L, opidx);
  lua_getfield(L, -1, "session");
  s = ok_session_check(L, -1);
  lua_pop(L, 2);
  if (s->token) memcpy(op->token.rejected, s->token_ath, sizeof op->token.rejected);
}

const char *const ok_page_option_names[] = {"from", "interval", "max_pages", "max_items", "duration", NULL};

int ok_op_page_options(lua_State *L, int opidx, int idx) {
  ok_op *op = luaL_checkudata(L, opidx, OK_OP_MT);
  double dflt_interval = op->kind == OK_OP_POLL ? 30 : 1, duration;
  op->walk.interval = dflt_interval;
  if (!idx || lua_isnil(L, idx)) return 1;
  if (!ok_opts_known(L, idx, op->kind == OK_OP_POLL ? "poll" : "paginate", ok_page_option_names) ||
      !ok_opt_number(L, idx, "interval", dflt_interval, 0.1, 86400, &op->walk.interval) ||
      !ok_opt_number(L, idx, "max_pages", OK_NO_LIMIT, 1, OK_NO_LIMIT, &op->walk.max_pages) ||
      !ok_opt_number(L, idx, "max_items", OK_NO_LIMIT, 1, OK_NO_LIMIT, &op->walk.max_items) ||
      !ok_opt_number(L, idx, "duration", OK_NO_LIMIT, 0, OK_NO_LIMIT, &duration))
    return 0;
  op->walk.max_items = floor(op->walk.max_items); /* a page is cut at a whole item */
  op->walk.stop_at = duration; /* relative until the first step knows the time */
  return 1;
}
