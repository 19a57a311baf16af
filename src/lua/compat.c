/* compat.c: the lua-compat53 implementation, compiled once for the LuaJIT/5.1 build. */
#include "lua/compat.h"

#if LUA_VERSION_NUM < 503
#include <compat-5.3.c>
#else
typedef int oktadpop_compat_unused; /* ISO C wants a non-empty translation unit */
#endif
