/* client.c: the libcurl driver and the client object scripts use: oktadpop.new / from_env,
 * and token, request, get, post, put, patch, delete, paginate, poll, batch and close. The
 * driver holds no policy: it steps the core's operations, performs their actions (send over
 * transfer.c, store on the client's store, sleep while other transfers move) and hands the
 * core's answers back. One loop runs one operation or many at once; it runs under lua_pcall,
 * so whatever raises inside it (a callback, a store, memory) first gives back the transfers
 * and what the operations hold. */
/*** @module oktadpop */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "driver.h"

typedef struct ok_client {
  ok_engine engine;
  int closed;
} ok_client;

enum { T_FREE, T_READY, T_XFER, T_SLEEP, T_FINAL };

/* One operation in a run: its state and, while sending, its transfer slot. */
typedef struct task { int state, xfer; double wake; } task;

/* A run (a userdata): n tasks of the client at cidx. The Lua table at ridx holds [k] the
 * operation of task k, [-k] its pending input, then its final action, and [n + k] the send
 * action in flight. */
typedef struct run {
  lua_State *L;
  ok_client *c;
  int uidx, cidx, sidx, stidx, ridx, n; /* stack indexes in the frame that runs it */
  task t[];
} run;

static ok_client *client_check(lua_State *L, int idx) { return luaL_checkudata(L, idx, OK_CLIENT_MT); }

/* Pushes a field of the client's uservalue: session, store, debug (a function, or a boolean). */
static void client_field(lua_State *L, int cidx, const char *name) {
  lua_getuservalue(L, cidx);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

/* Writes the log lines of the action on top to the debug function or stderr. */
static void write_log(lua_State *L, int cidx) {
  int lines;
  lua_getfield(L, -1, "log");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  lines = lua_gettop(L);
  client_field(L, cidx, "debug");
  for (int i = 1; i <= (int)lua_rawlen(L, lines); i++) {
    if (lua_isfunction(L, -1)) {
      lua_pushvalue(L, -1);
      lua_rawgeti(L, lines, i);
      if (lua_pcall(L, 1, 0, 0) != 0) lua_pop(L, 1); /* a failing logger must not break a call */
    } else if (lua_toboolean(L, -1)) {
      lua_rawgeti(L, lines, i);
      fprintf(stderr, "oktadpop: %s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
}

/* Hands the wait of the sleep action on top to the client's on_wait hook, when it has one; an
 * error inside the hook is dropped, like a failing logger's. */
static void report_wait(lua_State *L, int cidx) {
  client_field(L, cidx, "on_wait");
  if (!lua_isfunction(L, -1)) { lua_pop(L, 1); return; }
  lua_getfield(L, -2, "wait");
  if (lua_pcall(L, 1, 0, 0) != 0) lua_pop(L, 1);
}

/* ---- running operations ---- */

/* Pushes a run of n tasks for the client at cidx, with its table. */
static run *run_new(lua_State *L, int cidx, int n) {
  run *r = lua_newuserdata(L, sizeof *r + (size_t)n * sizeof(task));
  memset(r, 0, sizeof *r + (size_t)n * sizeof(task));
  r->L = L;
  r->uidx = lua_gettop(L);
  r->c = client_check(L, cidx);
  r->cidx = lua_absindex(L, cidx);
  r->n = n;
  client_field(L, r->cidx, "session");
  r->sidx = lua_gettop(L);
  client_field(L, r->cidx, "store");
  r->stidx = lua_gettop(L);
  lua_newtable(L);
  r->ridx = lua_gettop(L);
  return r;
}

/* Puts the operation on top into task k, ready to step. */
static void run_put(run *r, int k) {
  lua_rawseti(r->L, r->ridx, k);
  lua_pushnil(r->L);
  lua_rawseti(r->L, r->ridx, -k);
  r->t[k - 1].state = T_READY;
}

/* An answer (on top) to task k's last action; a send that could not start answers itself. */
static void answer(run *r, int k) {
  lua_rawseti(r->L, r->ridx, -k);
  r->t[k - 1].state = T_READY;
}

/* Starts the send action on top for task k. */
static void send(run *r, int k) {
  lua_State *L = r->L;
  task *t = &r->t[k - 1];
  if ((t->xfer = ok_xfer_take(&r->c->engine)) < 0) {
    lua_createtable(L, 0, 1);
    ok_error_push(L, "network", "too many transfers at once");
    lua_setfield(L, -2, "error");
    answer(r, k);
  } else if (!ok_xfer_start(L, &r->c->engine, t->xfer, -1, r->sidx)) {
    ok_xfer_give_back(&r->c->engine, t->xfer);
    answer(r, k);
  } else {
    lua_pushvalue(L, -1);
    lua_rawseti(L, r->ridx, k + r->n); /* kept for the messages of a failed transfer */
    t->state = T_XFER;
  }
}

/* Steps task k until it waits (a transfer, a sleep) or ends; store actions are answered here. */
static void advance(run *r, int k) {
  lua_State *L = r->L;
  task *t = &r->t[k - 1];
  while (t->state == T_READY) {
    int top = lua_gettop(L);
    const char *kind;
    lua_rawgeti(L, r->ridx, k);
    lua_rawgeti(L, r->ridx, -k);
    ok_op_step(L, top + 1, top + 2, ok_wall_clock());
    write_log(L, r->cidx);
    lua_getfield(L, -1, "action");
    kind = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (strcmp(kind, "store") == 0) {
      ok_store_run(L, r->stidx, -1);
      answer(r, k);
    } else if (strcmp(kind, "send") == 0) {
      send(r, k);
    } else if (strcmp(kind, "sleep") == 0) {
      report_wait(L, r->cidx);
      lua_getfield(L, -1, "seconds");
      t->wake = ok_wall_clock() + lua_tonumber(L, -1);
      t->state = T_SLEEP;
    } else { /* items, done or fail: the caller's */
      lua_pushvalue(L, -1);
      lua_rawseti(L, r->ridx, -k);
      t->state = T_FINAL;
    }
    lua_settop(L, top);
  }
}

/* Waits for the run's transfers and sleeps, and advances the tasks that can go on. */
static void pump(run *r) {
  double now = ok_wall_clock(), wait = 1.0;
  for (int k = 1; k <= r->n; k++)
    if (r->t[k - 1].state == T_SLEEP) wait = fmin(wait, r->t[k - 1].wake - now);
  ok_engine_wait(&r->c->engine, wait > 0 ? (int)ceil(wait * 1000) : 0);
  now = ok_wall_clock();
  for (int k = 1; k <= r->n; k++) {
    task *t = &r->t[k - 1];
    if (t->state == T_XFER && r->c->engine.xfers[t->xfer].done) {
      lua_rawgeti(r->L, r->ridx, k + r->n);
      ok_xfer_response(r->L, &r->c->engine, t->xfer, -1);
      lua_remove(r->L, -2);
      lua_pushnil(r->L);
      lua_rawseti(r->L, r->ridx, k + r->n);
      ok_xfer_give_back(&r->c->engine, t->xfer);
      answer(r, k);
    } else if (t->state == T_SLEEP && now >= t->wake) {
      t->state = T_READY;
    }
    if (t->state == T_READY) advance(r, k);
  }
}

/* Runs the store actions in the list at idx (releases of an abandoned operation). */
static int run_releases(lua_State *L) {
  for (int i = 1; i <= (int)lua_rawlen(L, 2); i++) {
    lua_rawgeti(L, 2, i);
    ok_store_run(L, 1, -1);
    lua_pop(L, 2);
  }
  return 0;
}

/* Gives back what a run cut short holds: its transfers, and its operations' slots and lock. */
static void abandon(run *r) {
  lua_State *L = r->L;
  for (int k = 1; k <= r->n; k++) {
    task *t = &r->t[k - 1];
    if (t->state == T_XFER) ok_xfer_give_back(&r->c->engine, t->xfer);
    if (t->state == T_FREE || t->state == T_FINAL) continue;
    t->state = T_FREE;
    lua_pushcfunction(L, run_releases);
    lua_pushvalue(L, r->stidx);
    lua_rawgeti(L, r->ridx, k);
    if (!luaL_testudata(L, -1, OK_OP_MT)) { lua_pop(L, 3); continue; }
    ok_op_abort(L, lua_gettop(L));
    lua_remove(L, -2);
    if (lua_pcall(L, 2, 0, 0) != 0) lua_pop(L, 1); /* the store failed too: nothing more to do */
  }
}

/* Calls body(run, client, session, store, table, ...) under lua_pcall with the nargs values
 * on top as its last arguments; the body sees the run's values at 1..5 of its own frame. On
 * an error, abandons the run and raises it again. Returns the number of the body's results. */
static int protected(lua_State *L, run *r, lua_CFunction body, int nargs) {
  int base = lua_gettop(L) - nargs, saved[4] = {r->cidx, r->sidx, r->stidx, r->ridx}, status;
  lua_pushcfunction(L, body);
  lua_insert(L, base + 1);
  for (int i = 0; i < 5; i++) {
    lua_pushvalue(L, i == 0 ? r->uidx : saved[i - 1]);
    lua_insert(L, base + 2 + i);
  }
  status = lua_pcall(L, nargs + 5, LUA_MULTRET, 0);
  r->cidx = saved[0]; r->sidx = saved[1]; r->stidx = saved[2]; r->ridx = saved[3];
  if (status != 0) {
    abandon(r);
    return lua_error(L);
  }
  return lua_gettop(L) - base;
}

/* The run of a body, its indexes moved to the body's frame. */
static run *body_run(lua_State *L) {
  run *r = lua_touserdata(L, 1);
  r->cidx = 2; r->sidx = 3; r->stidx = 4; r->ridx = 5;
  return r;
}

/* Runs task 1 to its next final action (items, done or fail), pushed. */
static int run_one(lua_State *L) {
  run *r = body_run(L);
  advance(r, 1);
  while (r->t[0].state != T_FINAL) pump(r);
  lua_rawgeti(L, r->ridx, -1);
  r->t[0].state = T_READY; /* a pages operation goes on at its next step */
  return 1;
}

/* Runs the operation on top to its next final action, which replaces it on top. */
static void drive(lua_State *L, int cidx) {
  run *r;
  int opidx = lua_gettop(L);
  r = run_new(L, cidx, 1);
  lua_pushvalue(L, opidx);
  run_put(r, 1);
  protected(L, r, run_one, 0);
  lua_replace(L, opidx);
  lua_settop(L, opidx);
}

/* ---- the client object ---- */

static ok_client *open_client(lua_State *L) {
  ok_client *c = client_check(L, 1);
  if (c->closed) { ok_fail(L, "config", "the client is closed"); return NULL; }
  return c;
}

/* Runs the operation made by the session method `method` with the arguments at 2..top. */
static int make_op(lua_State *L, const char *method) {
  int nargs = lua_gettop(L) - 1;
  client_field(L, 1, "session");
  lua_getfield(L, -1, method);
  lua_insert(L, 2);
  lua_insert(L, 3);
  lua_call(L, nargs + 1, 2);
  return !lua_isnil(L, -2);
}

/*** client:token([force]) -> token, info | nil, err
 * @function client:token
 */
static int client_token(lua_State *L) {
  if (!open_client(L)) return 2;
  lua_settop(L, 2);
  if (!make_op(L, "token_operation")) return 2;
  lua_pop(L, 1);
  drive(L, 1);
  lua_getfield(L, -1, "error");
  if (!lua_isnil(L, -1)) { lua_pushnil(L); lua_insert(L, -2); return 2; }
  lua_getfield(L, -2, "token");
  lua_getfield(L, -3, "info");
  return 2;
}

/*** client:request(method, path [, {query=, body=, headers=}]) -> res | nil, err; res.error says
 * what a non-2xx answer meant.
 * @function client:request
 */
static int client_request(lua_State *L) {
  if (!open_client(L)) return 2;
  lua_settop(L, 4);
  if (!make_op(L, "operation")) return 2;
  lua_pop(L, 1);
  drive(L, 1);
  lua_getfield(L, -1, "error");
  if (!lua_isnil(L, -1)) { lua_pushnil(L); lua_insert(L, -2); return 2; }
  lua_getfield(L, -2, "response");
  return 1;
}

/* The shared tail of get/post/put/patch/delete: (path, body or query [, query]). */
static int call(lua_State *L, const char *method, int with_body) {
  int n;
  if (!open_client(L)) return 2;
  luaL_checkstring(L, 2);
  lua_settop(L, 4);
  lua_createtable(L, 0, 2); /* 5: the request options */
  if (with_body) { lua_pushvalue(L, 3); lua_setfield(L, 5, "body"); lua_pushvalue(L, 4); lua_setfield(L, 5, "query"); }
  else { lua_pushvalue(L, 3); lua_setfield(L, 5, "query"); }
  lua_pushcfunction(L, client_request);
  lua_pushvalue(L, 1);
  lua_pushstring(L, method);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 5);
  lua_call(L, 4, 2);
  if (lua_isnil(L, -2)) return 2;
  lua_pop(L, 1);
  n = ok_result_call(L, lua_gettop(L));
  return n;
}

static int client_get(lua_State *L) { return call(L, "GET", 0); }
static int client_delete(lua_State *L) { return call(L, "DELETE", 0); }
static int client_post(lua_State *L) { return call(L, "POST", 1); }
static int client_put(lua_State *L) { return call(L, "PUT", 1); }
static int client_patch(lua_State *L) { return call(L, "PATCH", 1); }

/* The pages iterator: upvalues client, operation, page (or false), index. Raises the error,
 * whose err.next says where to resume. */
static int pages_next(lua_State *L) {
  for (;;) {
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(4));
    if (lua_istable(L, lua_upvalueindex(3)) && i < (lua_Integer)lua_rawlen(L, lua_upvalueindex(3))) {
      lua_pushinteger(L, i + 1);
      lua_replace(L, lua_upvalueindex(4));
      lua_rawgeti(L, lua_upvalueindex(3), (int)(i + 1));
      return 1;
    }
    if (!lua_toboolean(L, lua_upvalueindex(2))) return 0;
    lua_settop(L, 0);
    lua_pushboolean(L, 0); /* the page is done with: memory stays flat */
    lua_replace(L, lua_upvalueindex(3));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    drive(L, 1);
    lua_getfield(L, -1, "action");
    if (strcmp(lua_tostring(L, -1), "items") != 0) {
      lua_pushboolean(L, 0);
      lua_replace(L, lua_upvalueindex(2)); /* ended: later calls answer nothing */
      lua_getfield(L, -2, "error");
      if (!lua_isnil(L, -1)) return lua_error(L);
      return 0;
    }
    lua_getfield(L, -2, "items");
    lua_replace(L, lua_upvalueindex(3));
    lua_pushinteger(L, 0);
    lua_replace(L, lua_upvalueindex(4));
  }
}

/* Makes the iterator over the pages operation made by session method `method`. */
static int iterate(lua_State *L, const char *method) {
  if (!open_client(L)) return lua_error(L);
  if (!make_op(L, method)) { lua_remove(L, -2); return lua_error(L); }
  lua_pop(L, 1);
  lua_pushvalue(L, 1);
  lua_insert(L, -2);
  lua_pushboolean(L, 0);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, pages_next, 4);
  return 1;
}

/*** for item in client:paginate(path [, query [, {from=, max_pages=, max_items=}]]) do ... end
 * @function client:paginate
 */
static int client_paginate(lua_State *L) {
  lua_settop(L, 4);
  return iterate(L, "pages");
}

/*** for event in client:poll(path [, {since=, interval=, max_items=, duration=, from=}]) do ...
 * end
 * @function client:poll
 */
static int client_poll(lua_State *L) {
  lua_settop(L, 3);
  return iterate(L, "poll");
}

/*** client:close(): frees the connections and wipes the token; safe to call twice.
 * @function client:close
 */
static int client_close(lua_State *L) {
  ok_client *c = client_check(L, 1);
  if (c->closed) return 0;
  ok_engine_free(&c->engine);
  c->closed = 1;
  client_field(L, 1, "session");
  lua_getfield(L, -1, "close");
  lua_insert(L, -2);
  lua_call(L, 1, 0);
  return 0;
}

static int client_gc(lua_State *L) {
  ok_client *c = client_check(L, 1);
  ok_engine_free(&c->engine);
  c->closed = 1;
  return 0;
}

static int client_tostring(lua_State *L) {
  client_check(L, 1);
  client_field(L, 1, "session");
  lua_pushstring(L, luaL_tolstring(L, -1, NULL));
  return 1;
}

/* client.users, .groups, .apps, .factors, .logs: oktadpop.admin's helpers bound to this client,
 * made on first use and kept; nil when the Lua modules are not installed. */
static int namespace(lua_State *L, const char *name) {
  static const char *const names[] = {"users", "groups", "apps", "factors", "logs", NULL};
  int known = 0;
  for (int i = 0; names[i]; i++) known |= strcmp(name, names[i]) == 0;
  if (!known) return 0;
  client_field(L, 1, name);
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "oktadpop.admin");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "namespace");
  lua_pushvalue(L, 1);
  lua_pushstring(L, name);
  lua_call(L, 2, 1);
  lua_getuservalue(L, 1);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  return 1;
}

/* Methods first, then the helpers, then the session's fields (org_url, scopes, stats, ...). */
static int client_index(lua_State *L) {
  lua_getfield(L, lua_upvalueindex(1), luaL_checkstring(L, 2));
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  if (namespace(L, lua_tostring(L, 2))) return 1;
  client_field(L, 1, "session");
  lua_getfield(L, -1, lua_tostring(L, 2));
  if (lua_isfunction(L, -1)) lua_pushnil(L); /* the session's own methods are the driver's */
  return 1;
}

/* Pushes a client for the caller's config at cfgidx, or nil, err. */
static int client_create(lua_State *L, int cfg) {
  static const char *const driver_options[] = {"store", "on_wait", NULL};
  ok_client *c;
  int uv;
  cfg = lua_absindex(L, cfg);
  lua_getfield(L, cfg, "store");
  if (!lua_isnil(L, -1) && !lua_istable(L, -1) && !lua_isuserdata(L, -1))
    return ok_fail(L, "config", "store must be a table or object with get, set, add, incr and delete");
  lua_getfield(L, cfg, "on_wait");
  if (!lua_isnil(L, -1) && !lua_isfunction(L, -1)) return ok_fail(L, "config", "on_wait must be a function(wait)");
  lua_pop(L, 2);
  if (ok_setup_session(L, cfg, driver_options) != 2 || lua_isnil(L, -2)) return 2;
  c = lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, OK_CLIENT_MT);
  lua_createtable(L, 0, 3);
  uv = lua_gettop(L);
  lua_pushvalue(L, -4); lua_setfield(L, uv, "session");
  lua_getfield(L, cfg, "debug");
  if (!lua_isfunction(L, -1)) { lua_pop(L, 1); lua_pushboolean(L, ok_setup_debug(L, cfg)); }
  lua_setfield(L, uv, "debug");
  lua_getfield(L, cfg, "store");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_getfield(L, lua_upvalueindex(1), "memory_store"); lua_call(L, 0, 1); }
  lua_setfield(L, uv, "store");
  lua_getfield(L, cfg, "on_wait");
  lua_setfield(L, uv, "on_wait");
  lua_setuservalue(L, -2);
  lua_pushvalue(L, -2); /* the warnings go to the debug log */
  lua_createtable(L, 0, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, "log");
  write_log(L, lua_gettop(L) - 1);
  lua_pop(L, 1);
  return 1;
}

/*** oktadpop.new(config) -> client | nil, err
 * @function new
 */
static int client_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  return client_create(L, 1) == 1 ? 1 : 2;
}

/*** oktadpop.from_env([dotenv_path [, config]]) -> client | nil, err: the .env and environment's
 * settings, then config's own (debug=, timeout=, ...) over them.
 * @function from_env
 */
static int client_from_env(lua_State *L) {
  const char *path = luaL_optstring(L, 1, NULL);
  lua_settop(L, 2); /* 2: the config, or nil (never what setup pushes) */
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (ok_setup_env(L, path) != 1) return 2;
  if (lua_istable(L, 2)) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, -4);
    }
  }
  return client_create(L, -1) == 1 ? 1 : 2;
}

/* ---- batch: many requests at once ---- */

/* Batch body locals: 6 requests, 7 opts, 8 results, 9 failed, 10 per-task inputs. */
enum { B_REQUESTS = 6, B_OPTS, B_RESULTS, B_FAILED, B_META };

/* Pushes the next input (nil at the end): the list's next element, or the iterator's next. */
static void next_input(lua_State *L, int *index) {
  if (lua_istable(L, B_REQUESTS)) {
    lua_rawgeti(L, B_REQUESTS, *index + 1);
  } else {
    lua_pushvalue(L, B_REQUESTS);
    lua_call(L, 0, 1);
  }
  if (!lua_isnil(L, -1)) (*index)++;
}

/* Pushes the request spec of the input on top: opts.request(input), or the input; a string
 * is a path to GET. */
static void spec_of(lua_State *L) {
  lua_getfield(L, B_OPTS, "request");
  if (lua_isfunction(L, -1)) { lua_pushvalue(L, -2); lua_call(L, 1, 1); }
  else { lua_pop(L, 1); lua_pushvalue(L, -1); }
  if (lua_type(L, -1) == LUA_TSTRING) {
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "path");
  }
}

/* Pushes an operation for the spec on top, or nil, err. */
static void op_of(lua_State *L, run *r) {
  int spec = lua_gettop(L);
  if (!lua_istable(L, spec)) { ok_fail(L, "config", "a batch request must be a table {method=, path=, ...} or a path"); return; }
  lua_getfield(L, r->sidx, "operation");
  lua_pushvalue(L, r->sidx);
  lua_getfield(L, spec, "method");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_pushliteral(L, "GET"); }
  lua_getfield(L, spec, "path");
  if (lua_type(L, -1) != LUA_TSTRING || lua_type(L, -2) != LUA_TSTRING) {
    lua_settop(L, spec);
    ok_fail(L, "config", "a batch request needs path (a string) and method (a string, default GET)");
    return;
  }
  lua_createtable(L, 0, 3);
  lua_getfield(L, spec, "query"); lua_setfield(L, -2, "query");
  lua_getfield(L, spec, "body"); lua_setfield(L, -2, "body");
  lua_getfield(L, spec, "headers"); lua_setfield(L, -2, "headers");
  lua_call(L, 4, 2);
}

/* Records a result {index=, input=, request=, ok=, body=, res=, error=}: to on_result or the
 * results list, and to failed when it failed. The answer (body, res or nil, err [, res]) is
 * above base; meta holds the input and the request. */
static void record(lua_State *L, int base, int meta) {
  int n = lua_gettop(L) - base, ok = n >= 1 && !lua_isnil(L, base + 1), index;
  lua_getfield(L, meta, "index");
  index = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, index); lua_setfield(L, -2, "index");
  lua_getfield(L, meta, "input"); lua_setfield(L, -2, "input");
  lua_getfield(L, meta, "request"); lua_setfield(L, -2, "request");
  lua_pushboolean(L, ok); lua_setfield(L, -2, "ok");
  if (ok) {
    lua_pushvalue(L, base + 1); lua_setfield(L, -2, "body");
    if (n >= 2) { lua_pushvalue(L, base + 2); lua_setfield(L, -2, "res"); }
  } else {
    lua_pushvalue(L, base + 2); lua_setfield(L, -2, "error");
    if (n >= 3) { lua_pushvalue(L, base + 3); lua_setfield(L, -2, "res"); }
    lua_pushvalue(L, -1);
    lua_rawseti(L, B_FAILED, (int)lua_rawlen(L, B_FAILED) + 1);
  }
  lua_getfield(L, B_OPTS, "on_result");
  if (lua_isfunction(L, -1)) { lua_pushvalue(L, -2); lua_call(L, 1, 0); }
  else { lua_pop(L, 1); lua_pushvalue(L, -1); lua_rawseti(L, B_RESULTS, index); }
  lua_settop(L, base);
}

/* Task k ended: its answer recorded, the task freed. */
static void finish(run *r, int k) {
  lua_State *L = r->L;
  int top = lua_gettop(L), base;
  lua_rawgeti(L, B_META, k);
  lua_rawgeti(L, r->ridx, -k);
  base = lua_gettop(L);
  lua_getfield(L, base, "error");
  if (!lua_isnil(L, -1)) {
    lua_pushnil(L);
    lua_insert(L, -2);
  } else {
    lua_pop(L, 1);
    lua_getfield(L, base, "response");
    ok_result_call(L, base + 1);
    lua_remove(L, base + 1);
  }
  record(L, base, top + 1);
  lua_settop(L, top);
  lua_pushnil(L); lua_rawseti(L, r->ridx, k);
  lua_pushnil(L); lua_rawseti(L, r->ridx, -k);
  lua_pushnil(L); lua_rawseti(L, B_META, k);
  r->t[k - 1].state = T_FREE;
}

/* Starts the next input on free task k; returns 0 when the inputs are exhausted. */
static int start_next(run *r, int k, int *count) {
  lua_State *L = r->L;
  int top = lua_gettop(L), meta;
  next_input(L, count);
  if (lua_isnil(L, -1)) { lua_settop(L, top); return 0; }
  lua_createtable(L, 0, 3);
  meta = lua_gettop(L);
  lua_pushinteger(L, *count); lua_setfield(L, meta, "index");
  lua_pushvalue(L, top + 1); lua_setfield(L, meta, "input");
  lua_pushvalue(L, top + 1);
  spec_of(L);
  lua_pushvalue(L, -1); lua_setfield(L, meta, "request");
  op_of(L, r);
  if (lua_isnil(L, -2)) { /* a request that cannot be made is this input's error */
    int base = lua_gettop(L) - 2;
    record(L, base, meta);
  } else {
    lua_pop(L, 1);
    run_put(r, k);
    lua_pushvalue(L, meta);
    lua_rawseti(L, B_META, k);
    advance(r, k);
    if (r->t[k - 1].state == T_FINAL) finish(r, k);
  }
  lua_settop(L, top);
  return 1;
}

static int batch_body(lua_State *L) {
  run *r = body_run(L);
  int count = 0, more = 1;
  lua_settop(L, B_FAILED);
  lua_newtable(L); /* B_META */
  for (;;) {
    int busy = 0;
    for (int k = 1; k <= r->n && more; k++)
      while (more && r->t[k - 1].state == T_FREE) more = start_next(r, k, &count);
    for (int k = 1; k <= r->n; k++) busy |= r->t[k - 1].state != T_FREE;
    if (!busy && !more) return 0;
    if (!busy) continue;
    pump(r);
    for (int k = 1; k <= r->n; k++)
      if (r->t[k - 1].state == T_FINAL) finish(r, k);
  }
}

/*** client:batch(requests [, {concurrency=, request=fn(input), on_result=fn(result)}]) ->
 * results, failed requests: a list, or an iterator function; each input is a request {method=,
 * path=, query=, body=, headers=} (or a path to GET), or what opts.request makes of it. Every
 * request goes through the core like a single call, at most `concurrency` (default
 * max_concurrency) at once; results[i] = {index=, input=, request=, ok=, body=, res=, error=};
 * failed lists the results that failed (in the order they completed), to retry just those.
 * @function client:batch
 */
static int client_batch(lua_State *L) {
  double conc, max;
  run *r;
  if (!open_client(L)) return 2;
  lua_settop(L, 3);
  if (!lua_istable(L, 2) && !lua_isfunction(L, 2)) return luaL_argerror(L, 2, "a list of requests or an iterator function");
  if (lua_isnil(L, 3)) { lua_newtable(L); lua_replace(L, 3); }
  luaL_checktype(L, 3, LUA_TTABLE);
  client_field(L, 1, "session");
  lua_getfield(L, -1, "max_concurrency");
  max = lua_tonumber(L, -1);
  lua_pop(L, 2);
  if (!ok_opt_number(L, 3, "concurrency", max, 1, max, &conc)) return 2;
  r = run_new(L, 1, (int)conc);
  lua_newtable(L);
  lua_newtable(L);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, -4);
  lua_pushvalue(L, -4);
  protected(L, r, batch_body, 4); /* answers nothing: the two tables are on top again */
  return 2;
}

void ok_client_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"token", client_token},   {"request", client_request},   {"get", client_get},
      {"post", client_post},     {"put", client_put},           {"patch", client_patch},
      {"delete", client_delete}, {"paginate", client_paginate}, {"poll", client_poll},
      {"batch", client_batch},   {"close", client_close},       {NULL, NULL}};
  int core = lua_gettop(L) - 1; /* called with the module table, then the core table, on top */
  if (luaL_newmetatable(L, OK_CLIENT_MT)) {
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, client_tostring);
    lua_setfield(L, -2, "__tostring");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, client_close);
    lua_setfield(L, -2, "__close");
#endif
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, client_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushvalue(L, core + 1);
  lua_pushcclosure(L, client_new, 1);
  lua_setfield(L, core, "new");
  lua_pushvalue(L, core + 1);
  lua_pushcclosure(L, client_from_env, 1);
  lua_setfield(L, core, "from_env");
}
