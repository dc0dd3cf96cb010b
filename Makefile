# Qoqnuz build: one static common library, one binary per service/tool/test.
# Adding a file needs no Makefile edit: common/*.c go into libqzcommon.a,
# services/<name>/*.c and tools/<name>/*.c link into build/bin/<name>,
# tests/unit/test_*.c and tests/integration/it_*.c each become a test binary.

CC      ?= cc
BUILD   ?= build
PKGS    := rdkafka avro-c libpq hiredis libmicrohttpd jansson libjwt uuid libcurl \
           sndfile aubio libebur128 fftw3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT     ?= -O2 -g
CFLAGS  := $(OPT) -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Icommon -Ilib $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
COMMON_LIB := $(BUILD)/libqzcommon.a

# lib/analysis: the audio-analysis library (linked by every binary; only the
# services that call it pull its objects out of the archive).
ANALYSIS_SRC := $(wildcard lib/analysis/*.c)
ANALYSIS_LIB := $(BUILD)/libqzanalysis.a

# Service modules other than main.c, so unit tests can link a service's pure logic.
SVC_SRC := $(filter-out %/main.c,$(wildcard services/*/*.c))
SVC_OBJ := $(SVC_SRC:%.c=$(BUILD)/%.o)
SVC_LIB := $(BUILD)/libqzsvc.a

SERVICES := $(notdir $(patsubst %/main.c,%,$(wildcard services/*/main.c)))
TOOLS    := $(notdir $(patsubst %/main.c,%,$(wildcard tools/*/main.c)))
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
IT_TESTS   := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(wildcard tests/integration/it_*.c))
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/bench_*.c))
BINS := $(addprefix $(BUILD)/bin/,$(SERVICES) $(TOOLS))

.PHONY: all deps run up down test test-asan fuzz fuzz-run bench lint format clean
all: $(BINS) $(UNIT_TESTS) $(IT_TESTS) $(BENCHES)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(COMMON_LIB): $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(ANALYSIS_LIB): $(ANALYSIS_SRC:%.c=$(BUILD)/%.o)
	@rm -f $@
	ar rcs $@ $^

$(SVC_LIB): $(SVC_OBJ)
	@rm -f $@
	ar rcs $@ $^

.SECONDARY:
.SECONDEXPANSION:
$(BUILD)/bin/%: $$(addprefix $(BUILD)/,$$(subst .c,.o,$$(wildcard services/$$*/*.c tools/$$*/*.c))) $(ANALYSIS_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(SVC_LIB) $(ANALYSIS_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(SVC_LIB) $(ANALYSIS_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/it_%: $(BUILD)/tests/integration/it_%.o $(SVC_LIB) $(ANALYSIS_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

deps:
	@bash scripts/deps.sh

# deps first, then a fresh make: pkg-config flags are read when a make starts,
# so on a new machine they exist only after deps installed the packages.
run: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash scripts/stack.sh run

up: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash scripts/stack.sh up

down:
	@BUILD=$(BUILD) bash scripts/stack.sh down

test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash scripts/test.sh

test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g $(SAN_FLAGS)" all
	@BUILD=build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 bash scripts/test.sh

# libFuzzer targets (tests/fuzz/fuzz_*.c) under ASan+UBSan, FUZZ_SECONDS each.
FUZZ_SECONDS ?= 30
FUZZ_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-run

fuzz-run:
	@$(MAKE) --no-print-directory CC=clang BUILD=build-fuzz OPT="-O1 -g $(FUZZ_FLAGS)" \
		build-fuzz/libqzcommon.a build-fuzz/libqzsvc.a build-fuzz/libqzanalysis.a
	@set -e; for f in tests/fuzz/fuzz_*.c; do \
		n=$$(basename $$f .c); \
		clang -O1 -g -fsanitize=fuzzer,address,undefined -std=c17 -D_GNU_SOURCE -Icommon -Ilib $(PKG_CFLAGS) \
			$$f build-fuzz/libqzsvc.a build-fuzz/libqzanalysis.a build-fuzz/libqzcommon.a $(LDLIBS) \
			-o build-fuzz/$$n; \
		mkdir -p build-fuzz/corpus-$$n; \
		echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
		build-fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build-fuzz/corpus-$$n 2>&1 | tail -3; \
	done

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash bench/run.sh

lint:
	clang-format --dry-run --Werror $(shell git ls-files '*.c' '*.h')

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
