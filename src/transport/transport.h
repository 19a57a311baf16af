/* transport.h: the plain driver's I/O: the libcurl transport (transport/curl.c, reached from
 * Lua as oktadpop.libcurl) and the Redis store (transport/redis.c, oktadpop.redis_store); they
 * know the Lua basics, libcurl and hiredis, nothing of the core. */
#ifndef OKTADPOP_TRANSPORT_H
#define OKTADPOP_TRANSPORT_H

#include "lua/oktadpop.h"

/* Sets oktadpop.libcurl (engine, clock) in the module table on top. */
void ok_transport_open(lua_State *L);
/* Sets oktadpop.redis_store (transport/redis.c) in the module table on top. */
void ok_redis_open(lua_State *L);

#endif
