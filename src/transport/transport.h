/* transport.h: the plain driver's transport (transport/curl.c), reached from Lua as
 * oktadpop.libcurl; it knows the Lua basics and libcurl, nothing of the core. */
#ifndef OKTADPOP_TRANSPORT_H
#define OKTADPOP_TRANSPORT_H

#include "lua/oktadpop.h"

/* Sets oktadpop.libcurl (engine, clock) in the module table on top. */
void ok_transport_open(lua_State *L);

#endif
