# oktadpop: `make` builds build/5.4/oktadpop.so; `make LUA=luajit` builds build/5.1/oktadpop.so.
LUA        ?= lua5.4
PREFIX     ?= /usr/local
DESTDIR    ?=
PKG_CONFIG ?= pkg-config

ifeq ($(LUA),luajit)
  LUA_PC      := luajit
  LUA_VERSION := 5.1
else
  LUA_PC      := lua5.4
  LUA_VERSION := 5.4
endif

BUILD       := build/$(LUA_VERSION)
SO          := $(BUILD)/oktadpop.so
INSTALL_CMOD = $(PREFIX)/lib/lua/$(LUA_VERSION)
INSTALL_LMOD = $(PREFIX)/share/lua/$(LUA_VERSION)

WARN     := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes
CFLAGS   ?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE
# Lua headers only: the host program supplies the Lua symbols, so never -llua.
CPPFLAGS += $(shell $(PKG_CONFIG) --cflags $(LUA_PC) libcrypto libcurl)
LIBS     := $(shell $(PKG_CONFIG) --libs libcrypto libcurl)
SRCS     := $(wildcard src/*.c)
OBJS     := $(SRCS:src/%.c=$(BUILD)/%.o)

.PHONY: all test test-5.4 test-luajit install demo memcheck clean bootstrap luajit

all: $(SO)

$(BUILD)/%.o: src/%.c src/oktadpop.h src/compat.h | $(BUILD)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -fPIC -c -o $@ $<

$(SO): $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $(OBJS) $(LIBS)

$(BUILD):
	mkdir -p $@

luajit:
	$(MAKE) LUA=luajit

bootstrap:
	@scripts/bootstrap

# busted on both interpreters; scripts/test-summary adds every suite into one closing line.
test: bootstrap
	$(MAKE) all
	$(MAKE) LUA=luajit all
	@scripts/run-tests

install: $(SO)
	install -d $(DESTDIR)$(INSTALL_CMOD) $(DESTDIR)$(INSTALL_LMOD)/oktadpop/resty
	install -m 0755 $(SO) $(DESTDIR)$(INSTALL_CMOD)/oktadpop.so
	install -m 0644 lua/oktadpop/resty.lua $(DESTDIR)$(INSTALL_LMOD)/oktadpop/resty.lua
	install -m 0644 lua/oktadpop/resty/guard.lua $(DESTDIR)$(INSTALL_LMOD)/oktadpop/resty/guard.lua

memcheck: bootstrap all
	@scripts/memcheck

demo: bootstrap all
	@scripts/demo

clean:
	rm -rf build

# make bench: proofs/s, calls/s, round trips, memory, instructions; prints one table and
# writes bench/RESULTS.md (a few minutes; not part of make test).
.PHONY: bench
bench: bootstrap
	$(MAKE) all
	$(MAKE) LUA=luajit all
	@bench/run

# make fuzz [FUZZ_SECONDS=60]: builds the libFuzzer targets of fuzz/ (clang) and runs each for
# FUZZ_SECONDS; prints executions per target. make test runs them briefly (scripts/fuzz-brief).
FUZZ_SECONDS ?= 60
.PHONY: fuzz asan
fuzz: bootstrap
	@scripts/fuzz $(FUZZ_SECONDS)

# make asan: the busted specs on Lua 5.4 with the module built under ASan+UBSan in build/asan,
# the runtime LD_PRELOADed into lua5.4, leak detection on (scripts/asan).
asan: bootstrap
	@scripts/asan
