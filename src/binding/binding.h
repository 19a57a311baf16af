/* binding.h: the Lua binding above the core: configuration as callers give it (setup.c reads
 * key files, the environment and .env), the in-process store (store.c), the core's Lua face
 * (core_lua.c: oktadpop.core) and the module entry (module.c). The client surface itself is
 * Lua (lua/oktadpop/client.lua) over a driver: lua/oktadpop/curl.lua with the libcurl
 * transport (transport/curl.c), or lua/oktadpop/resty.lua in nginx. */
#ifndef OKTADPOP_BINDING_H
#define OKTADPOP_BINDING_H

#include "core/core.h"
#include "transport/transport.h"

#define OK_STORE_MT "oktadpop.memory_store"

/* ---- setup.c: configuration from callers: key sources, files, the environment ---- */
/* Pushes a session for the caller's config table at cfgidx, its key sources loaded, and a
 * list of warnings for the debug log (a key file others can read); returns 1. Or pushes
 * nil, err and returns 0. `drop` names driver options (NULL-terminated) to leave out. */
int ok_setup_session(lua_State *L, int cfgidx, const char *const *drop);
/* Pushes the config table from_env makes (environment over the .env at path, or ./.env) and
 * returns 1; or nil, err and 0. */
int ok_setup_env(lua_State *L, const char *path);
void ok_setup_open(lua_State *L);

/* ---- store.c: the in-process store ---- */
void ok_store_open(lua_State *L);

/* ---- core_lua.c: oktadpop.core, the core's face for drivers ---- */
void ok_core_open(lua_State *L);

#endif
