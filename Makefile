# Postern build.  GNU make + pkg-config.
#
#   make            build everything into build/
#   make check      install deps, build (plain and ASan+UBSan), run unit,
#                   integration and short fuzz tests, print a summary
#   make demo       install deps, build, run the tunnel demo on loopback
#   make fuzz       longer fuzz runs (FUZZ_SECONDS each, default 600)
#   make bench      benchmarks (not part of check)
#
# Sources are found by folder, so adding a .c file needs no Makefile edit:
#   shared/*.c        -> libpostern.a
#   relay/*.c         -> postern-relay
#   server-proxy/*.c  -> postern-server
#   client-proxy/*.c  -> postern-client
#   tools/NAME.c      -> one program each (postern-keygen, mproxy)
#   tests/unit/test_*.c -> one Check binary each
#   tests/fuzz/fuzz_*.c -> one libFuzzer binary each (clang)

CC      ?= gcc
BUILD   ?= build
SAN     ?= 0
PKGS    := libmicrohttpd libcurl libsodium jansson inih
CHECK_PKGS := check

OPT     ?= -O2
CFLAGS_BASE := -std=c11 -Wall -Wextra -Werror -g $(OPT) -D_GNU_SOURCE \
               -Ishared -MMD -MP
ifeq ($(SAN),1)
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer \
                 -fno-sanitize-recover=undefined
  LDFLAGS_SAN := -fsanitize=address,undefined
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS := $(shell pkg-config --cflags $(CHECK_PKGS) 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs $(CHECK_PKGS) 2>/dev/null)

CFLAGS  := $(CFLAGS_BASE) $(PKG_CFLAGS) $(CFLAGS)
LDLIBS  := $(PKG_LIBS) -lm
LDFLAGS += $(LDFLAGS_SAN)

SHARED_SRC := $(wildcard shared/*.c)
RELAY_SRC  := $(wildcard relay/*.c)
SERVER_SRC := $(wildcard server-proxy/*.c)
CLIENT_SRC := $(wildcard client-proxy/*.c)
TOOL_SRC   := $(wildcard tools/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB        := $(BUILD)/libpostern.a
PROGRAMS   := $(if $(RELAY_SRC),$(BUILD)/postern-relay) \
              $(if $(SERVER_SRC),$(BUILD)/postern-server) \
              $(if $(CLIENT_SRC),$(BUILD)/postern-client) \
              $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRC))
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all deps check demo fuzz fuzz-build bench clean
# Keep objects that pattern chains would otherwise delete as intermediates.
.SECONDARY:
all: $(PROGRAMS) $(UNIT_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(call obj,$(SHARED_SRC))
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/postern-relay: $(call obj,$(RELAY_SRC)) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/postern-server: $(call obj,$(SERVER_SRC)) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/postern-client: $(call obj,$(CLIENT_SRC)) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/%: $(BUILD)/obj/tools/%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -c $< -o $@
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)
# Unit tests of a program's own modules link that program's objects
# except main.c (each program keeps main() alone in main.c).
$(BUILD)/tests/test_relay_%: $(BUILD)/obj/tests/unit/test_relay_%.o $(call obj,$(filter-out relay/main.c,$(RELAY_SRC))) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)
$(BUILD)/tests/test_server_%: $(BUILD)/obj/tests/unit/test_server_%.o $(call obj,$(filter-out server-proxy/main.c,$(SERVER_SRC))) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)
$(BUILD)/tests/test_client_%: $(BUILD)/obj/tests/unit/test_client_%.o $(call obj,$(filter-out client-proxy/main.c,$(CLIENT_SRC))) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)

# Fuzz targets: clang + libFuzzer, shared sources compiled in directly.
FUZZ_BUILD := build-fuzz
FUZZ_CFLAGS := -std=c11 -g -O1 -D_GNU_SOURCE -Ishared $(PKG_CFLAGS) \
               -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRC))
$(FUZZ_BUILD)/%: tests/fuzz/%.c $(SHARED_SRC) $(wildcard shared/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(SHARED_SRC) $(PKG_LIBS) -lm
fuzz-build: $(FUZZ_BINS)

deps:
	@bash scripts/install-deps.sh

check: deps
	@bash scripts/check.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

FUZZ_SECONDS ?= 600
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

# The benchmark's load generator (threads are fine in a measuring tool).
$(BUILD)/pbench: bench/pbench.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE -pthread -o $@ $<

bench: deps
	@bash scripts/install-deps.sh --bench
	@$(MAKE) --no-print-directory all $(BUILD)/pbench
	@bash bench/run.sh $(BUILD)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
