# fuzz/fuzz.mk: builds the libFuzzer targets into build/fuzz with clang
# (-fsanitize=fuzzer,address,undefined). Run from the repository root: make -f fuzz/fuzz.mk
# (make fuzz and scripts/fuzz do). The pure C targets link one source file each; fuzz_key and
# fuzz_jwt link the whole module with Lua 5.4 (-llua5.4 here only: the module never links it).
FUZZ_CC    ?= clang
PKG_CONFIG ?= pkg-config
FUZZ_DIR   := build/fuzz
SAN        := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
WARN       := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes
FCFLAGS    := -g -O1 $(SAN) -std=gnu11 -D_GNU_SOURCE -Isrc $(shell $(PKG_CONFIG) --cflags lua5.4 libcrypto libcurl hiredis)
FLIBS      := $(shell $(PKG_CONFIG) --libs libcrypto libcurl hiredis) -llua5.4 -lm
MODULE     := $(patsubst src/%.c,$(FUZZ_DIR)/obj/%.o,$(wildcard src/*/*.c))
TARGETS    := url guard_htu path link www_auth dotenv b64url key jwt

all: $(TARGETS:%=$(FUZZ_DIR)/fuzz_%)

$(FUZZ_DIR)/obj/%.o: src/%.c src/*/*.h | $(FUZZ_DIR)/obj
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FCFLAGS) $(WARN) -c -o $@ $<

$(FUZZ_DIR)/obj/fuzz_%.o: fuzz/fuzz_%.c src/*/*.h | $(FUZZ_DIR)/obj
	$(FUZZ_CC) $(FCFLAGS) $(WARN) -c -o $@ $<

$(FUZZ_DIR)/obj/lua_%.o: fuzz/fuzz_lua.c src/*/*.h | $(FUZZ_DIR)/obj
	$(FUZZ_CC) $(FCFLAGS) $(WARN) -DHARNESS='"$(CURDIR)/fuzz/$*.lua"' -c -o $@ $<

$(FUZZ_DIR)/fuzz_url $(FUZZ_DIR)/fuzz_guard_htu $(FUZZ_DIR)/fuzz_path: $(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/fuzz_%.o $(FUZZ_DIR)/obj/pure/url.o
	$(FUZZ_CC) $(SAN) -o $@ $^ $(FLIBS)
$(FUZZ_DIR)/fuzz_link $(FUZZ_DIR)/fuzz_www_auth: $(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/fuzz_%.o $(FUZZ_DIR)/obj/pure/httpfields.o
	$(FUZZ_CC) $(SAN) -o $@ $^ $(FLIBS)
$(FUZZ_DIR)/fuzz_dotenv: $(FUZZ_DIR)/obj/fuzz_dotenv.o $(FUZZ_DIR)/obj/pure/dotenv.o
	$(FUZZ_CC) $(SAN) -o $@ $^ $(FLIBS)
$(FUZZ_DIR)/fuzz_b64url: $(FUZZ_DIR)/obj/fuzz_b64url.o $(FUZZ_DIR)/obj/pure/b64url.o
	$(FUZZ_CC) $(SAN) -o $@ $^ $(FLIBS)
$(FUZZ_DIR)/fuzz_key $(FUZZ_DIR)/fuzz_jwt: $(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/lua_%.o $(MODULE)
	$(FUZZ_CC) $(SAN) -o $@ $^ $(FLIBS)

$(FUZZ_DIR)/obj:
	mkdir -p $@

.PHONY: all
