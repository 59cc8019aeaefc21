# test/fuzz/fuzz.mk — libFuzzer targets for the parsers that take outside bytes
# (included from apxs.mk; see test/fuzz/README.md).
#
#   make -f apxs.mk fuzz FUZZ_TIME=60   build with clang + libFuzzer + ASan/UBSan into
#                                       $(FUZZ_BUILD) and fuzz each target FUZZ_TIME s
#                                       (make -jN runs N targets at once); fails on a
#                                       crash, leak, timeout or OOM
#   make -f apxs.mk fuzz FUZZ_TARGETS="jsonrpc sse"      only some targets
#   make -f apxs.mk fuzz FUZZ_MERGE=1   then merge what was found into the repo corpora
#   make -f apxs.mk fuzz-replay         build each target with $(CC) and standalone.c (no
#                                       clang; ASan/UBSan under SANITIZE=1) and replay
#                                       every corpus (part of test-unit)

FUZZ_ALL     := $(patsubst test/fuzz/fuzz_%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_TIME    ?= 60
FUZZ_MAXLEN  ?= 4096
FUZZ_ARGS    ?=
FUZZ_MERGE   ?=

FUZZ_SAN     := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := $(FUZZ_SAN) $(WARN) -std=gnu11 $(APR_CFLAGS) -Imod_gemini_mcp -Igmcpctl \
                -DGMCP_SQL_DIR='"$(SQLDIR)"'
FUZZ_CORE    := $(patsubst mod_gemini_mcp/%.c,$(FUZZ_BUILD)/core/%.o,$(CORE_SRC)) \
                $(FUZZ_BUILD)/httpd_conf.o
FUZZ_BINS    := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_TARGETS))

# Larger inputs than the default where the format needs room.
FUZZ_MAXLEN_sse         := 16384
FUZZ_MAXLEN_httpd_conf  := 8192
FUZZ_MAXLEN_sql_split   := 8192

# ---- libFuzzer builds (clang) ---------------------------------------------------------
$(FUZZ_BUILD)/core/%.o: mod_gemini_mcp/%.c $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/httpd_conf.o: gmcpctl/httpd_conf.c gmcpctl/httpd_conf.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: test/fuzz/fuzz_%.c test/fuzz/fuzz.h $(FUZZ_CORE)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itest/fuzz -o $@ $< $(FUZZ_CORE) \
	    $(APR_LIBS) $(DEP_LIBS)

fuzz-build: $(FUZZ_BINS)

# Objects and targets reached through pattern rules are not intermediates to delete.
.PRECIOUS: $(FUZZ_BUILD)/core/%.o $(FUZZ_BUILD)/fuzz_% $(BUILD)/fuzz/fuzz_%

# Each run starts from the repo corpus (read-only) and writes what it finds into
# $(FUZZ_BUILD)/work/<target>; artifacts (crash-*, leak-*, timeout-*, oom-*) go to
# $(FUZZ_BUILD)/artifacts/<target>/, the log to $(FUZZ_BUILD)/logs/<target>.log.
fuzz: $(patsubst %,fuzz-run-%,$(FUZZ_TARGETS))

fuzz-run-%: $(FUZZ_BUILD)/fuzz_%
	@mkdir -p $(FUZZ_BUILD)/work/$* $(FUZZ_BUILD)/artifacts/$* $(FUZZ_BUILD)/logs
	@echo "fuzz $*: $(FUZZ_TIME) s"
	@set -e; dict=; [ -f test/fuzz/dict/$*.dict ] && dict=-dict=test/fuzz/dict/$*.dict; \
	if ! $(FUZZ_BUILD)/fuzz_$* \
	    -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 -timeout=10 \
	    -max_len=$(or $(FUZZ_MAXLEN_$*),$(FUZZ_MAXLEN)) -print_final_stats=1 $$dict \
	    -artifact_prefix=$(FUZZ_BUILD)/artifacts/$*/ $(FUZZ_ARGS) \
	    $(FUZZ_BUILD)/work/$* test/fuzz/corpus/$* >$(FUZZ_BUILD)/logs/$*.log 2>&1; then \
	    tail -n 60 $(FUZZ_BUILD)/logs/$*.log; \
	    echo "fuzz $*: FAILED (log $(FUZZ_BUILD)/logs/$*.log, artifacts" \
	         "$(FUZZ_BUILD)/artifacts/$*/)"; exit 1; fi; \
	echo "fuzz $*: $$(sed -n 's/^stat::number_of_executed_units: *//p' \
	    $(FUZZ_BUILD)/logs/$*.log) executions, no crash"
	@if [ -n "$(FUZZ_MERGE)" ]; then \
	    $(FUZZ_BUILD)/fuzz_$* -merge=1 -max_len=$(or $(FUZZ_MAXLEN_$*),$(FUZZ_MAXLEN)) \
	        test/fuzz/corpus/$* $(FUZZ_BUILD)/work/$* >>$(FUZZ_BUILD)/logs/$*.log 2>&1 \
	    && echo "fuzz $*: merged into test/fuzz/corpus/$* ($$(ls test/fuzz/corpus/$* | wc -l) files)"; \
	fi

# ---- replay with the normal compiler (no clang needed) --------------------------------
FUZZ_REPLAY := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_ALL))

$(BUILD)/fuzz/fuzz_%: test/fuzz/fuzz_%.c test/fuzz/fuzz.h test/fuzz/standalone.c $(CORE_OBJ) \
                      $(BUILD)/httpd_conf.o
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Igmcpctl -Itest/fuzz -o $@ $< test/fuzz/standalone.c $(CORE_OBJ) \
	    $(BUILD)/httpd_conf.o $(APR_LIBS) $(DEP_LIBS)

fuzz-replay: $(FUZZ_REPLAY)
	@set -e; for t in $(FUZZ_ALL); do \
	    $(BUILD)/fuzz/fuzz_$$t test/fuzz/corpus/$$t \
	        || { echo "fuzz-replay $$t: FAILED"; exit 1; }; done

fuzz-clean:
	rm -rf $(FUZZ_BUILD)
