# apxs.mk — build, install and test mod_gemini_mcp and gmcpctl.
#
#   make -f apxs.mk                 module, fixtures module, gmcpctl, unit tests
#   make -f apxs.mk test            everything: unit, integration (SQLite+PostgreSQL),
#                                   TypeScript SDK client, MCP conformance suites
#   make -f apxs.mk test-asan       the same under AddressSanitizer + UBSan
#   make -f apxs.mk test-valgrind   unit tests and gmcpctl under valgrind
#   make -f apxs.mk install         apxs -i, gmcpctl, sql/ (fixtures module excluded)
#   make -f apxs.mk man             man pages gmcpctl.8, mod_gemini_mcp.7 in $(BUILD)/man
#   make -f apxs.mk run             build and serve on 127.0.0.1 with SQLite
#   make -f apxs.mk deps            install the Debian packages (root)

APXS      ?= apxs
CC        ?= cc
PREFIX    ?= /usr/local
SQLDIR    ?= $(PREFIX)/share/gemini-mcp/sql
BINDIR    ?= $(PREFIX)/bin
BUILD     ?= build
SANITIZE  ?=

WARN      := -Wall -Wextra -Werror
APR_CFLAGS := $(shell apr-1-config --cflags --cppflags --includes) $(shell apu-1-config --includes)
APR_LIBS  := $(shell apr-1-config --link-ld --libs) $(shell apu-1-config --link-ld --libs)
DEP_LIBS  := -lcjose -ljansson -lcurl -lssl -lcrypto -lmagic -lsqlite3

ifeq ($(SANITIZE),1)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
BUILD     := build-asan
endif

CFLAGS    ?= -O2 -g
ALL_CFLAGS := $(CFLAGS) $(WARN) $(SAN_FLAGS) -std=gnu11 $(APR_CFLAGS) -Imod_gemini_mcp \
              -DGMCP_SQL_DIR='"$(SQLDIR)"'

CORE_SRC  := $(wildcard mod_gemini_mcp/gmcp_*.c)
CORE_HDR  := $(wildcard mod_gemini_mcp/gmcp_*.h)
GLUE_SRC  := mod_gemini_mcp/mod_gemini_mcp.c mod_gemini_mcp/mod_gemini_mcp_http.c \
             mod_gemini_mcp/mod_gemini_mcp_db.c mod_gemini_mcp/mod_gemini_mcp_config.c \
             mod_gemini_mcp/mod_gemini_mcp_respond.c \
             mod_gemini_mcp/mod_gemini_mcp_status.c mod_gemini_mcp/mod_gemini_mcp_access.c \
             mod_gemini_mcp/mod_gemini_mcp_upload.c mod_gemini_mcp/mod_gemini_mcp_inflight.c \
             mod_gemini_mcp/mod_gemini_mcp_tailsync.c mod_gemini_mcp/mod_gemini_mcp_child_thread.c \
             mod_gemini_mcp/mod_gemini_mcp_oauth.c mod_gemini_mcp/mod_gemini_mcp_tasks.c
GLUE_HDR  := $(wildcard mod_gemini_mcp/mod_gemini_mcp*.h)
CORE_OBJ  := $(patsubst mod_gemini_mcp/%.c,$(BUILD)/core/%.o,$(CORE_SRC))
UNIT_SRC  := $(wildcard test/unit/test_*.c)
UNIT_BIN  := $(patsubst test/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))

APXS_FLAGS := -Wc,-Wall -Wc,-Wextra -Wc,-Werror -Wc,-std=gnu11 \
              $(foreach f,$(SAN_FLAGS),-Wc,$(f) -Wl,$(f))

MODULE    := $(BUILD)/mod_gemini_mcp.so
FIXTURES  := $(BUILD)/mod_gemini_mcp_fixtures.so
GMCPCTL   := $(BUILD)/gmcpctl

.PHONY: all install test test-unit test-integration test-asan test-valgrind test-deps deps run \
        clean bench fuzz fuzz-build fuzz-replay fuzz-clean

all: $(MODULE) $(FIXTURES) $(GMCPCTL) $(UNIT_BIN)

# apxs builds in the source directory; each build variant gets its own copy of the
# sources so plain and sanitizer builds never share objects.
$(BUILD)/src/.stamp: $(CORE_SRC) $(CORE_HDR) $(GLUE_SRC) $(GLUE_HDR) \
                     mod_gemini_mcp/mod_gemini_mcp_fixtures.c
	@mkdir -p $(BUILD)/src
	cp $^ $(BUILD)/src/
	@touch $@

$(MODULE): $(BUILD)/src/.stamp
	cd $(BUILD)/src && $(APXS) -c -o mod_gemini_mcp.la $(APXS_FLAGS) \
	    $(notdir $(GLUE_SRC) $(CORE_SRC)) $(DEP_LIBS) >/dev/null
	cp $(BUILD)/src/.libs/mod_gemini_mcp.so $@

$(FIXTURES): $(BUILD)/src/.stamp
	cd $(BUILD)/src && $(APXS) -c -o mod_gemini_mcp_fixtures.la $(APXS_FLAGS) \
	    mod_gemini_mcp_fixtures.c -ljansson >/dev/null
	cp $(BUILD)/src/.libs/mod_gemini_mcp_fixtures.so $@

$(BUILD)/core/%.o: mod_gemini_mcp/%.c $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/gmcpctl.o: gmcpctl/gmcpctl.c $(CORE_HDR) gmcpctl/httpd_conf.h gmcpctl/gmcpctl.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Igmcpctl -DGMCP_VERSION='"0.1.0"' -c -o $@ $<

$(BUILD)/gmcpctl_access.o: gmcpctl/access.c $(CORE_HDR) gmcpctl/gmcpctl.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Igmcpctl -c -o $@ $<

$(BUILD)/httpd_conf.o: gmcpctl/httpd_conf.c gmcpctl/httpd_conf.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Igmcpctl -c -o $@ $<

$(BUILD)/gmcpctl_uploads.o: gmcpctl/uploads.c $(CORE_HDR) gmcpctl/gmcpctl.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Igmcpctl -c -o $@ $<

$(BUILD)/gmcpctl_joblock.o: gmcpctl/joblock.c gmcpctl/gmcpctl.h $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Igmcpctl -c -o $@ $<

$(BUILD)/gmcpctl_backup.o: gmcpctl/backup.c $(CORE_HDR) gmcpctl/gmcpctl.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql) \
	    -Igmcpctl -DGMCP_VERSION='"0.1.0"' -c -o $@ $<

# backup.c uses the DBD drivers' native handles: the same libsqlite3/libpq they link.
$(GMCPCTL): $(BUILD)/gmcpctl.o $(BUILD)/gmcpctl_access.o $(BUILD)/gmcpctl_uploads.o \
            $(BUILD)/gmcpctl_backup.o $(BUILD)/gmcpctl_joblock.o $(BUILD)/httpd_conf.o \
            $(CORE_OBJ)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(APR_LIBS) $(DEP_LIBS) -lpq

$(BUILD)/unit/%: test/unit/%.c test/unit/unit.h test/unit/unit_db.h $(CORE_OBJ) $(BUILD)/httpd_conf.o
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Igmcpctl -Itest/unit -o $@ $< $(CORE_OBJ) $(BUILD)/httpd_conf.o \
	    $(APR_LIBS) $(DEP_LIBS)

install: $(MODULE) $(GMCPCTL)
	cd $(BUILD)/src && $(APXS) -i -n gemini_mcp mod_gemini_mcp.la
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SQLDIR)/sqlite $(DESTDIR)$(SQLDIR)/pgsql
	install -m 755 $(GMCPCTL) $(DESTDIR)$(BINDIR)/gmcpctl
	install -m 644 sql/sqlite/*.sql $(DESTDIR)$(SQLDIR)/sqlite/
	install -m 644 sql/pgsql/*.sql $(DESTDIR)$(SQLDIR)/pgsql/

# Man pages into $(BUILD)/man: gmcpctl(8) from `gmcpctl --help`, mod_gemini_mcp(7)
# with the directives of docs/directives.md (docs/man/gen-man.py; the Debian package).
.PHONY: man
man: $(GMCPCTL)
	/usr/bin/python3 docs/man/gen-man.py --gmcpctl $(GMCPCTL) \
	    --directives docs/directives.md --out $(BUILD)/man

# ---- tests -------------------------------------------------------------------------
PYTEST    ?= /usr/bin/python3 -m pytest
PYTEST_ARGS ?=

test-unit: $(UNIT_BIN) fuzz-replay
	@set -e; for t in $(UNIT_BIN); do $$t; done

include test/fuzz/fuzz.mk

test-deps:
	cd test && npm ci --no-audit --no-fund --loglevel=error

test-integration: all test-deps
	GMCP_BUILD=$(BUILD) $(PYTEST) -q test $(PYTEST_ARGS)

test: test-unit test-integration

test-asan:
	$(MAKE) -f apxs.mk SANITIZE=1 test

# The core and gmcpctl under valgrind (the module itself runs under ASan/UBSan in
# test-asan: httpd's multi-process suite is not practical under valgrind).
VALGRIND := valgrind -q --error-exitcode=9 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect
test-valgrind: $(UNIT_BIN) $(GMCPCTL)
	@set -e; for t in $(UNIT_BIN); do $(VALGRIND) $$t; done; \
	d=$$(mktemp -d); trap 'rm -rf $$d' EXIT; \
	for cmd in "migrate" "migrate status" "sessions list" "--json sessions list"; do \
	    $(VALGRIND) $(GMCPCTL) -d sqlite3 -p $$d/v.db -s sql $$cmd >/dev/null; done; \
	echo "valgrind: unit tests and gmcpctl clean"

deps:
	bash .ci/deps

# Serves real Gemini when GEMINI_API_KEY is set in the environment.
run: all
	@if [ -n "$$GEMINI_API_KEY" ]; then echo "run: Gemini API key from GEMINI_API_KEY"; \
	else echo "run: GEMINI_API_KEY is not set: the gemini_* tools will answer that Gemini" \
	     "is not configured"; fi
	test/start-server --port $${PORT:-8080} --data-dir $${DATA_DIR:-$(CURDIR)/run} \
	    --auth $${AUTH:-none} $${GEMINI_API_KEY:+--gemini-key-env GEMINI_API_KEY}

bench: all test-deps
	bench/run

clean:
	rm -rf build build-asan

# ---- gates ----------------------------------------------------------------------------
# make lint:   gcc's static analyzer and a wider warning set over every product source
# make format: clang-format the tree in place (.clang-format)
# make check:  what CI gates on: the tree is formatted, lint is clean, no function in the
#              upload handler, gmcpctl or the tools is longer than FNLEN_MAX lines
LINT_WARN := $(WARN) -Wshadow -Wpointer-arith -Wcast-align -Wwrite-strings \
             -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition \
             -Wnested-externs -Wformat=2 -Wno-format-nonliteral -Wundef -fanalyzer
LINT_SRC  := $(CORE_SRC) $(GLUE_SRC) mod_gemini_mcp/mod_gemini_mcp_fixtures.c $(wildcard gmcpctl/*.c)
FORMAT_SRC := $(wildcard mod_gemini_mcp/*.[ch] gmcpctl/*.[ch] test/unit/*.[ch] test/fuzz/*.c)
FNLEN_SRC := mod_gemini_mcp/mod_gemini_mcp_upload.c $(wildcard gmcpctl/*.c) \
             $(wildcard mod_gemini_mcp/gmcp_tools_*.c)
FNLEN_MAX ?= 60
CLANG_FORMAT ?= clang-format
HTTPD_INC := $(shell $(APXS) -q INCLUDEDIR 2>/dev/null)
PG_INC    := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)

.PHONY: lint format format-check fnlen-check check

lint:
	@set -e; for f in $(LINT_SRC); do \
	    case $$f in gmcpctl/*) v='-DGMCP_VERSION="lint"';; *) v=;; esac; \
	    $(CC) $(CFLAGS) $(LINT_WARN) -std=gnu11 $(APR_CFLAGS) -I$(HTTPD_INC) -I$(PG_INC) \
	        -Imod_gemini_mcp -Igmcpctl -DGMCP_SQL_DIR='"$(SQLDIR)"' $$v -c -o /dev/null $$f; \
	done; echo "lint: $(words $(LINT_SRC)) files clean"

format:
	$(CLANG_FORMAT) -i $(FORMAT_SRC)

format-check:
	@$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_SRC) && echo "format: $(words $(FORMAT_SRC)) files formatted"

fnlen-check:
	@/usr/bin/python3 .ci/fnlen --max $(FNLEN_MAX) $(FNLEN_SRC)

check: format-check lint fnlen-check
