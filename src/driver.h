/* driver.h: the layer above the core: what a caller touches (setup.c reads key files, the
 * environment and .env), the stores (store.c), and the libcurl driver (transfer.c moves bytes,
 * client.c runs operations over it). Drivers call down into the core; never the reverse. */
#ifndef OKTADPOP_DRIVER_H
#define OKTADPOP_DRIVER_H

#include "core.h"

#define OK_STORE_MT  "oktadpop.memory_store"
#define OK_CLIENT_MT "oktadpop.client"

/* ---- setup.c: configuration from callers: key sources, files, the environment ---- */
/* Pushes a session for the caller's config table at cfgidx, its key sources loaded, and a
 * list of warnings for the debug log (a key file others can read); or nil, err. `drop`
 * names driver options (NULL-terminated) to leave out of the session's config. */
int ok_setup_session(lua_State *L, int cfgidx, const char *const *drop);
/* Pushes the config table from_env makes (environment over the .env at path, or ./.env). */
int ok_setup_env(lua_State *L, const char *path);
/* Whether the debug log is on for the config at cfgidx (debug=, or OKTADPOP_DEBUG=1). */
int ok_setup_debug(lua_State *L, int cfgidx);
void ok_setup_open(lua_State *L);

/* ---- store.c: the in-process store (the built-in store of the libcurl driver) ---- */
/* Runs the store action at actidx against the store at stidx (the memory store directly,
 * any other through its methods); pushes the answer. */
void ok_store_run(lua_State *L, int stidx, int actidx);
void ok_store_open(lua_State *L);

/* ---- transfer.c: libcurl multi transfers; no Lua in any callback ---- */
typedef struct ok_buf { char *p; size_t n, cap; } ok_buf;
typedef struct ok_xfer {
  void *easy;                  /* CURL * */
  void *headers;               /* struct curl_slist * of the request in flight */
  ok_buf body, head;
  size_t max_body;
  int active, done, body_over, head_over;
  int rc;                      /* CURLcode once done */
  char errbuf[256];
} ok_xfer;
typedef struct ok_engine {
  void *multi;                 /* CURLM *: the connection pool, HTTP/2 streams multiplexed */
  ok_xfer *xfers;
  int nxfers;
} ok_engine;
/* Takes a free transfer slot (made on first use); -1 when all OK_MAX_XFERS are busy. */
int ok_xfer_take(ok_engine *e);
void ok_xfer_give_back(ok_engine *e, int i);
/* Starts the send action at actidx on slot i with the session's settings at sidx; returns
 * 1, or 0 with a response {error=} pushed. */
int ok_xfer_start(lua_State *L, ok_engine *e, int i, int actidx, int sidx);
/* Moves bytes for up to ms milliseconds (less when a transfer finishes); marks finished ones. */
void ok_engine_wait(ok_engine *e, int ms);
/* Pushes the response of finished slot i: {status=, headers=, body=} or {error=}. */
void ok_xfer_response(lua_State *L, ok_engine *e, int i, int actidx);
void ok_engine_free(ok_engine *e);
double ok_wall_clock(void);

/* ---- client.c: the client object of the libcurl driver ---- */
void ok_client_open(lua_State *L);

#endif
