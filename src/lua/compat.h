/* compat.h: one Lua C API for every build: Lua 5.4 as is, LuaJIT/5.1 through lua-compat53
 * (compat-5.3.h is found on the include path; the Makefile adds Debian's folder). */
#ifndef OKTADPOP_COMPAT_H
#define OKTADPOP_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 503
/* Prefixed symbols, compiled once in compat.c, so nothing clashes with the host's copies. */
#define COMPAT53_PREFIX oktadpop_compat53
#include <compat-5.3.h>
#endif

#endif
