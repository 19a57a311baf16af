# oktadpop: `make` builds build/5.4/oktadpop.so; `make LUA=luajit` builds build/5.1/oktadpop.so.
# pkg-config runs when the build does (scripts/flags), never when make reads this file, so a
# target that first installs the packages (scripts/bootstrap) builds with them.
LUA        ?= lua5.4
PREFIX     ?= /usr/local
DESTDIR    ?=
PKG_CONFIG ?= pkg-config
CC         ?= cc
CFLAGS     ?= -O2 -g
# CI builds with WERROR=-Werror (make test does); a user's newer compiler only warns.
WERROR     ?=
# Debian's lua-compat53-dev puts compat-5.3.h here; the LuaJIT build finds it on the include path.
COMPAT53_INCDIR ?= /usr/include/lua5.1

ifeq ($(LUA),lua5.4)
  LUA_PC      := lua5.4
  LUA_VERSION := 5.4
  EXTRA_INC   :=
else ifeq ($(LUA),luajit)
  LUA_PC      := luajit
  LUA_VERSION := 5.1
  EXTRA_INC   := -I$(COMPAT53_INCDIR)
else
  $(error LUA must be lua5.4 or luajit, not '$(LUA)')
endif

BUILD        ?= build/$(LUA_VERSION)
SO           := $(BUILD)/oktadpop.so
FLAGS        := $(BUILD)/flags
INSTALL_CMOD  = $(PREFIX)/lib/lua/$(LUA_VERSION)
INSTALL_LMOD  = $(PREFIX)/share/lua/$(LUA_VERSION)
LUA_MODULES  := $(shell find lua -name '*.lua')

WARN   := -Wall -Wextra $(WERROR) -Wshadow -Wmissing-prototypes -Wstrict-prototypes
# Only luaopen_oktadpop leaves the .so; the host program supplies the Lua symbols (never -llua).
COMMON := -std=gnu11 -fPIC -fvisibility=hidden -D_GNU_SOURCE -Isrc $(EXTRA_INC)
SRCS   := $(wildcard src/*/*.c)
OBJS   := $(SRCS:src/%.c=$(BUILD)/%.o)

.PHONY: all test install demo emulator memcheck clean bootstrap luajit bench fuzz asan docs dist FORCE

all: $(SO)

# The stamp holds every flag a compile or link uses; it changes only when one does, and
# objects and the .so depend on it, so `make CFLAGS=-O0` after a build rebuilds.
$(FLAGS): FORCE | $(BUILD)
	@PKG_CONFIG="$(PKG_CONFIG)" scripts/flags $(LUA_PC) "$(CC) $(CFLAGS) $(COMMON) $(WARN)" "$(LDFLAGS)" > $@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi

$(BUILD)/%.o: src/%.c src/*/*.h $(FLAGS) Makefile
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(COMMON) $(WARN) $(shell sed -n 's/^cflags=//p' $(FLAGS)) -c -o $@ $<

$(SO): $(OBJS) $(FLAGS)
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $(OBJS) $(shell sed -n 's/^libs=//p' $(FLAGS))

$(BUILD):
	mkdir -p $@

luajit:
	$(MAKE) LUA=luajit

bootstrap:
	@scripts/bootstrap

# Every suite on Lua 5.4 and LuaJIT; scripts/run-tests ends with one "N passed, N failed" line.
test: bootstrap
	$(MAKE) WERROR=-Werror all
	$(MAKE) WERROR=-Werror LUA=luajit all
	@scripts/run-tests

demo: bootstrap
	$(MAKE) all
	@scripts/demo

# make emulator: the bundled Okta emulator alone, to try the command against; it prints the
# .env to use and the CA file, and runs until Ctrl-C.
emulator: bootstrap
	$(MAKE) all
	@scripts/emulator

memcheck: bootstrap
	$(MAKE) all
	@scripts/memcheck

install: $(SO)
	install -d $(DESTDIR)$(INSTALL_CMOD) $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(SO) $(DESTDIR)$(INSTALL_CMOD)/oktadpop.so
	install -m 0755 bin/oktadpop $(DESTDIR)$(PREFIX)/bin/oktadpop
	for f in $(LUA_MODULES); do \
	  d=$(DESTDIR)$(INSTALL_LMOD)/$$(dirname $${f#lua/}); install -d $$d && install -m 0644 $$f $$d/; \
	done

clean:
	rm -rf build

# make bench: proofs/s, calls/s, round trips, bulk pacing, memory, instructions; prints one
# table and writes bench/RESULTS.md (a few minutes; not part of make test).
bench: bootstrap
	$(MAKE) all
	$(MAKE) LUA=luajit all
	@bench/run

# make docs: the API reference in build/docs, from the sources' doc comments (ldoc, run by LuaJIT:
# Debian's ldoc wants Lua 5.1 or 5.2).
docs: bootstrap
	luajit /usr/bin/ldoc -c doc/config.ld .

# make dist: a release tarball (git archive of HEAD) and the rock luarocks packs from it, in dist/.
VERSION := 0.1.0
dist: bootstrap
	@scripts/dist $(VERSION)

# make fuzz [FUZZ_SECONDS=60]: the libFuzzer targets of fuzz/ (clang), each for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
fuzz: bootstrap
	@scripts/fuzz $(FUZZ_SECONDS)

# make asan: the busted specs on Lua 5.4 with the module under ASan+UBSan (scripts/asan).
asan: bootstrap
	@scripts/asan
