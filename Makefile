# socks5d — GNU Make build.  Objects under build/: build/release (make),
# build/test (sanitizer build used by make test).

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
VERSION := 0.1.0

WARN    := -Wall -Wextra -Wshadow -Wformat=2 -Wundef -Werror
CSTD    := -std=c11 -D_GNU_SOURCE $(shell pkg-config --cflags krb5-gssapi) -DSOCKS5D_VERSION='"$(VERSION)"' \
           -Ibuild/bpf
DEPFLAGS = -MMD -MP
# Release hardening, as Debian's dpkg-buildflags: fortified libc calls, a
# stack protector, and relocations read-only after start (full RELRO).
REL_CFLAGS  := -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong
REL_LDFLAGS := -Wl,-z,relro -Wl,-z,now
TEST_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LIBS    := -lcares -lcurl -lcrypt -lcrypto $(shell pkg-config --libs krb5-gssapi krb5) -lbpf -pthread

CORE_SRC   := $(wildcard shared/*.c worker/*.c admin/*.c)
MASTER_SRC := $(wildcard master/*.c)
CLIENT_SRC := $(wildcard client/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)

REL_CORE   := $(CORE_SRC:%.c=build/release/%.o)
REL_MASTER := $(MASTER_SRC:%.c=build/release/%.o)
TEST_CORE  := $(CORE_SRC:%.c=build/test/%.o)
TEST_MASTER:= $(MASTER_SRC:%.c=build/test/%.o)
REL_CLIENT := $(CLIENT_SRC:%.c=build/release/%.o) build/release/admin/pipo.o \
              build/release/shared/settings.o build/release/shared/names.o \
              build/release/shared/rfc1929.o
TEST_CLIENT:= $(CLIENT_SRC:%.c=build/test/%.o) build/test/admin/pipo.o \
              build/test/shared/settings.o build/test/shared/names.o build/test/shared/rfc1929.o
CLIENT_LIBS:= -ledit
UNIT_BIN   := $(UNIT_SRC:%.c=build/test/%)
FUZZ_BIN   := $(FUZZ_SRC:%.c=build/fuzz/%)

PYTHON  := /usr/bin/python3
RUN_ARGS ?= -l 127.0.0.1

.PHONY: all run test unit integration fuzz clang-check check-vm install clean deps bench bench-rules deb

all: build/socks5d build/pipoClient

deps:
	@./scripts/deps.sh

build/socks5d: $(REL_CORE) $(REL_MASTER)
	$(CC) $(REL_CFLAGS) $(REL_LDFLAGS) -o $@ $^ $(LIBS)

build/test/socks5d: $(TEST_CORE) $(TEST_MASTER)
	$(CC) $(TEST_CFLAGS) -o $@ $^ $(LIBS)

# The benchmark load generator (bench/loadgen.c): a standalone program.
build/loadgen: bench/loadgen.c
	@mkdir -p build
	$(CC) $(CSTD) $(WARN) -O2 -o $@ $<

# Side-by-side benchmark against direct, Dante and microsocks, then UDP
# (bench/udp.sh) and access rules (bench/rules.sh), about ten minutes;
# writes its tables and plot into docs/performance.md.
bench: build/socks5d build/loadgen
	bench/run.sh

# One request decision with 1,000 rules: p50/p99 in ns (docs/performance.md).
build/bench_rules: bench/rules.c build/release/shared/rules.o build/release/shared/shm.o \
    build/release/shared/settings.o build/release/admin/pipo.o build/release/shared/rfc1929.o \
    build/release/shared/names.o build/release/shared/limits.o
	$(CC) $(CSTD) $(WARN) -O2 -o $@ $^ -pthread

bench-rules: build/bench_rules
	build/bench_rules

build/pipoClient: $(REL_CLIENT)
	$(CC) $(REL_CFLAGS) $(REL_LDFLAGS) -o $@ $^ $(CLIENT_LIBS)

build/test/pipoClient: $(TEST_CLIENT)
	$(CC) $(TEST_CFLAGS) -o $@ $^ $(CLIENT_LIBS)

# The kernel relay's BPF program (bpf/relay.bpf.c), built with clang's BPF
# target and embedded in socks5d as a libbpf skeleton (worker/sockmap.c).
BPF_CFLAGS := -O2 -g -Wall -Werror -I/usr/include/$(shell $(CC) -dumpmachine)
build/bpf/relay.bpf.o: bpf/relay.bpf.c
	@mkdir -p build/bpf
	clang -target bpf $(BPF_CFLAGS) -c $< -o $@

build/bpf/relay.skel.h: build/bpf/relay.bpf.o
	bpftool gen skeleton $< name relay_bpf > $@.tmp && mv $@.tmp $@

build/release/worker/sockmap.o build/test/worker/sockmap.o build/fuzz/obj/worker/sockmap.o: \
    build/bpf/relay.skel.h

build/release/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(REL_CFLAGS) $(DEPFLAGS) -c $< -o $@

build/test/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(TEST_CFLAGS) $(DEPFLAGS) -c $< -o $@

build/test/tests/unit/%: build/test/tests/unit/%.o $(TEST_CORE)
	$(CC) $(TEST_CFLAGS) -o $@ $^ $(LIBS) -lcmocka

# The configuration file code lives in master/ (not in the core).
build/test/tests/unit/test_conffile: build/test/tests/unit/test_conffile.o $(TEST_CORE) \
    build/test/master/conffile.o build/test/master/options.o
	$(CC) $(TEST_CFLAGS) -o $@ $^ $(LIBS) -lcmocka

# The notification protocol lives in master/.
build/test/tests/unit/test_sdnotify: build/test/tests/unit/test_sdnotify.o $(TEST_CORE) \
    build/test/master/sdnotify.o
	$(CC) $(TEST_CFLAGS) -o $@ $^ $(LIBS) -lcmocka

# The admin request handlers live in master/; the test stands in for the master.
build/test/tests/unit/test_admin_cmds: build/test/tests/unit/test_admin_cmds.o $(TEST_CORE) \
    build/test/master/admin_cmds.o
	$(CC) $(TEST_CFLAGS) -o $@ $^ $(LIBS) -lcmocka

# Fuzz targets: clang's libFuzzer with ASan/UBSan.  The core is compiled
# once (instrumented, without libFuzzer's main) and linked into each target.
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer-no-link,address,undefined
FUZZ_CORE  := $(CORE_SRC:%.c=build/fuzz/obj/%.o)

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(CSTD) $(WARN) $(FUZZ_CFLAGS) $(DEPFLAGS) -c $< -o $@

build/fuzz/tests/fuzz/%: tests/fuzz/%.c $(FUZZ_CORE)
	@mkdir -p $(dir $@)
	clang $(CSTD) $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined $(DEPFLAGS) -o $@ $< $(FUZZ_CORE) $(LIBS)

run: deps build/socks5d build/pipoClient
	./build/socks5d $(RUN_ARGS)

unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || fail=1; done; exit $$fail

# Dante's socksify and sockd with GSS-API (Debian builds them without it),
# from Debian's source package into build/dante-gss: about a minute on two
# cores the first time, nothing once built.
.PHONY: dante-gssapi
dante-gssapi:
	@./scripts/build-dante-gssapi.sh build/dante-gss

integration: build/test/socks5d build/test/pipoClient build/loadgen dante-gssapi
	SOCKS5D=build/test/socks5d PIPOCLIENT=build/test/pipoClient LOADGEN=build/loadgen \
	  $(PYTHON) -m pytest -q tests/integration

# Each fuzz target runs briefly from its seed corpus (tests/fuzz/corpus/NAME;
# what it finds is kept in build/fuzz/corpus/NAME): proof that it builds and
# holds.  Longer campaigns: make fuzz FUZZ_SECONDS=600.
FUZZ_SECONDS ?= 10
fuzz: $(FUZZ_BIN)
	@fail=0; for f in $(FUZZ_BIN); do n=$$(basename $$f); echo "== $$n"; \
	  mkdir -p build/fuzz/corpus/$$n; \
	  if $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus/$$n \
	       tests/fuzz/corpus/$$n >build/fuzz/$$n.log 2>&1; then \
	    grep -E '^stat::number_of_executed_units' build/fuzz/$$n.log; \
	  else tail -n 40 build/fuzz/$$n.log; fail=1; fi; done; exit $$fail

# SCTP administration tested for real: one qemu VM (TCG) with a Debian kernel
# that has SCTP runs socks5d and pipoClient (tests/vm/run.sh; the kernel and
# qemu come from scripts/vm-deps.sh).  Prints why and skips when the VM
# cannot run; under CI=true that is a failure.
check-vm:
	@./tests/vm/run.sh

# The code must stay warning-free under clang too.
clang-check: build/bpf/relay.skel.h
	@for f in $(CORE_SRC) $(MASTER_SRC) $(CLIENT_SRC) bench/loadgen.c; do \
	  clang $(CSTD) $(WARN) -fsyntax-only $$f || exit 1; done
	@clang $(CSTD) $(WARN) -fsyntax-only bench/rules.c

test: deps clang-check unit fuzz integration check-vm

install: build/socks5d build/pipoClient
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0755 build/socks5d $(DESTDIR)$(PREFIX)/sbin/socks5d
	install -m 0755 build/pipoClient $(DESTDIR)$(PREFIX)/bin/pipoClient
	install -m 0644 man/socks5d.8 $(DESTDIR)$(PREFIX)/share/man/man8/socks5d.8
	install -m 0644 man/pipoClient.1 $(DESTDIR)$(PREFIX)/share/man/man1/pipoClient.1
	install -m 0644 man/socks5d.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/socks5d.conf.5

# The binary Debian package build/deb/socks5d_VERSION-REV_ARCH.deb (dpkg-deb;
# packaging files in dist/debian/, script scripts/mkdeb.sh).
deb: build/socks5d build/pipoClient
	@VERSION=$(VERSION) ./scripts/mkdeb.sh

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
