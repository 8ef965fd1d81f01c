# mendfs — the one, non-recursive Makefile.
#
#   make                 build libmendfs and every program into $(O)/bin
#   make check           install missing build packages, build, run every test
#                        (TESTS="check_journal t_scrub%": only the tests named, make patterns)
#   make asan            the same tests under AddressSanitizer + UBSan (in build-asan/)
#   make bench           benchmarks (printed figures, never pass/fail)
#   make run             deps, build, format a default image and show it
#   make torture DURATION=600 PROCS=4   long stress beside scrub and forced-rebuild loops,
#                               then the offline checks and every file verified
#   make fuzz FUZZ_TIME=1800    each libFuzzer target (tests/fuzz) for that many seconds
#                               (clang, ASan+UBSan, in build-fuzz/)
#   make install PREFIX=/usr/local DESTDIR=
#
# DEVELOPER=1 (or CI=true) turns warnings into errors; packagers get plain -Wall -Wextra.
# V=1 shows the commands.  O=dir puts every output under dir (default: build), a relative
# or an absolute path; the tests get absolute ones (BIN, O, TOOLS).

# `make` alone builds everything (the first rule below is a program's, not `all`).
.DEFAULT_GOAL := all

PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
CRONDIR ?= /etc/cron.d
DESTDIR ?=
O       ?= build
PKG_CONFIG ?= pkg-config
CC      ?= cc

ifeq ($(V),1)
Q :=
else
Q := @
endif

CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wformat=2 \
            -Wno-unused-parameter -Wvla -fno-common
ifneq ($(filter 1,$(DEVELOPER))$(filter true,$(CI)),)
WARN     += -Werror
endif
# FUZZ=1 (make fuzz): clang with libFuzzer's coverage and ASan+UBSan on every object; not
# -Werror: clang's warnings differ from gcc's, and the fuzzers must build anyway.
ifeq ($(FUZZ),1)
CFLAGS   += -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
WARN     := $(filter-out -Werror,$(WARN))
endif
ifeq ($(SANITIZE),1)
CFLAGS   += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

PC_CFLAGS := $(shell $(PKG_CONFIG) --cflags fuse3 blkid 2>/dev/null)
PC_LIBS   := $(shell $(PKG_CONFIG) --libs fuse3 blkid 2>/dev/null)
CHECK_CFLAGS := $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

ALL_CFLAGS := -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Ilib $(WARN) \
              $(PC_CFLAGS) $(CFLAGS) -MMD -MP
ALL_LIBS   := $(PC_LIBS) -lpthread -lm

BIN := $(O)/bin

# --- libmendfs: every lib/*.c ------------------------------------------------------------
LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(O)/%.o)
LIBA     := $(O)/libmendfs.a

# --- programs: name and sources ------------------------------------------------------------
# --- librepair: the checkers and rebuilders (repair/*.c but the offline tool's main) ------
REPAIR_SRCS := $(filter-out repair/mendfs_repair.c,$(wildcard repair/*.c))
REPAIR_OBJS := $(REPAIR_SRCS:%.c=$(O)/%.o)
REPAIRA     := $(O)/librepair.a
$(REPAIR_OBJS): ALL_CFLAGS += -Irepair

# Programs.  The daemon is every fs/*.c but the two tools'; mendfs_scrub every scrub/*.c
# but scrub_all's; each program links librepair (when it exists) and libmendfs.
PROGS := mkfs.mendfs mendfs_db mendfs
mkfs.mendfs_SRCS := fs/mkfs.c
mendfs_db_SRCS   := fs/db.c
mendfs_SRCS      := $(filter-out fs/mkfs.c fs/db.c,$(wildcard fs/*.c))
ifneq ($(wildcard scrub/*.c),)
PROGS += mendfs_scrub
mendfs_scrub_SRCS := $(filter-out scrub/scrub_all.c,$(wildcard scrub/*.c))
endif
ifneq ($(wildcard scrub/scrub_all.c),)
PROGS += mendfs_scrub_all
mendfs_scrub_all_SRCS := scrub/scrub_all.c
endif
ifneq ($(wildcard repair/mendfs_repair.c),)
PROGS += mendfs_repair
mendfs_repair_SRCS := repair/mendfs_repair.c
endif
$(O)/fs/%.o $(O)/repair/%.o: ALL_CFLAGS += -Irepair

define prog_rule
$(BIN)/$(1): $$($(1)_SRCS:%.c=$(O)/%.o) $(REPAIRA) $(LIBA)
	@mkdir -p $$(@D)
	$$(if $(Q),@echo "  LD      $$@")
	$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(ALL_LIBS)
endef
$(foreach p,$(PROGS),$(eval $(call prog_rule,$(p))))
PROG_BINS := $(PROGS:%=$(BIN)/%)

# --- unit tests: every tests/unit/check_*.c, each linked with tests/unit/tu_*.c ------------
UNIT_SRCS  := $(wildcard tests/unit/check_*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(O)/tests/%)
TU_OBJS    := $(patsubst %.c,$(O)/%.o,$(wildcard tests/unit/tu_*.c))

$(O)/tests/%: $(O)/tests/unit/%.o $(TU_OBJS) $(REPAIRA) $(LIBA)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(ALL_LIBS)

$(O)/tests/unit/%.o: ALL_CFLAGS += $(CHECK_CFLAGS) -Irepair

# --- test tools: every tests/tools/*.c is one program; tests/stress/*.c is mendfs_stress --
TOOL_SRCS   := $(wildcard tests/tools/*.c)
TOOL_BINS   := $(TOOL_SRCS:tests/tools/%.c=$(O)/tools/%)
STRESS_SRCS := $(wildcard tests/stress/*.c)
ifneq ($(STRESS_SRCS),)
TOOL_BINS   += $(O)/tools/mendfs_stress
endif

$(O)/tools/%: $(O)/tests/tools/%.o $(LIBA)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

$(O)/tools/mendfs_stress: $(STRESS_SRCS:%.c=$(O)/%.o) $(LIBA)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

# --- benchmarks: every tests/bench/bench_*.c -----------------------------------------------
BENCH_SRCS := $(wildcard tests/bench/bench_*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(O)/bench/%)
$(O)/tests/bench/%.o: ALL_CFLAGS += -Irepair

$(O)/bench/%: $(O)/tests/bench/%.o $(REPAIRA) $(LIBA)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

# The filesystem benchmark's helpers (tests/bench/bench_fs.sh): the FUSE ceiling (a
# passthrough of our own) and the metadata workload tool.  Not linked with libmendfs.
BENCH_TOOLS := $(O)/bench/passthrough_ll $(O)/bench/metaops
$(BENCH_TOOLS): $(O)/bench/%: $(O)/tests/bench/%.o
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

# --- fuzz targets: every tests/fuzz/fuzz_*.c, linked with tests/fuzz/fz_*.c (make fuzz) --
# fuzz_ctl also takes the control socket's objects of the daemon (fs/ctl*.c).
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(O)/fuzz/%)
FZ_OBJS   := $(patsubst %.c,$(O)/%.o,$(wildcard tests/fuzz/fz_*.c))
$(O)/tests/fuzz/%.o: ALL_CFLAGS += -Irepair -Ifs
.PRECIOUS: $(O)/tests/fuzz/%.o
$(O)/fuzz/fuzz_ctl: $(patsubst %.c,$(O)/%.o,$(wildcard fs/ctl*.c))

$(O)/fuzz/%: $(O)/tests/fuzz/%.o $(FZ_OBJS) $(REPAIRA) $(LIBA)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $(filter %.o,$^) $(REPAIRA) $(LIBA) $(ALL_LIBS)

# --- generic rules ---------------------------------------------------------------------------
$(O)/%.o: %.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# An empty librepair is still a valid archive, so every link line can name it.
$(REPAIRA): $(REPAIR_OBJS)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(LIBA): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $^

.PHONY: all deps check check-run asan bench run torture fieldfuzz fuzz fuzz-build fuzz-run install clean
all: $(PROG_BINS) $(TOOL_BINS)

deps:
	@sh .ci/deps.sh

# The package check runs first, in its own make, so that pkg-config sees what it installed.
check: deps
	@$(MAKE) --no-print-directory check-run

# TESTS: the unit tests (check_x) and integration scripts (t_x) to run, by name or make
# pattern; unset, all.  (abspath of a list, never `$(X:%=$(abspath %))`: that takes the
# absolute path of a literal "%" first, and prefixes the current directory to an
# absolute O's paths.)
RUN_UNIT  := $(UNIT_BINS)
RUN_INTEG := $(wildcard tests/integration/t_*.sh)
ifneq ($(strip $(TESTS)),)
RUN_UNIT  := $(foreach t,$(RUN_UNIT),$(if $(filter $(TESTS),$(notdir $(t))),$(t)))
RUN_INTEG := $(foreach t,$(RUN_INTEG),$(if $(filter $(TESTS),$(basename $(notdir $(t)))),$(t)))
endif

check-run: $(PROG_BINS) $(RUN_UNIT) $(TOOL_BINS)
	$(if $(strip $(RUN_UNIT) $(RUN_INTEG)),,$(error TESTS="$(TESTS)" names no test))
	@BIN=$(abspath $(BIN)) O=$(abspath $(O)) TOOLS=$(abspath $(O)/tools) sh tests/run-tests.sh \
		$(abspath $(RUN_UNIT) $(RUN_INTEG))

# Under the sanitizers t_scale's directory has 200,000 entries, not a million (3x slower:
# the million would pass the per-test bound; ASan is there for memory errors, not scale).
asan: deps
	@SCALE_ENTRIES=$${SCALE_ENTRIES:-200000} $(MAKE) --no-print-directory O=build-asan SANITIZE=1 check-run

# Each target from its seeds (tests/fuzz/corpus/<name>) plus what earlier runs found
# (build-fuzz/corpus/<name>), FUZZ_TIME seconds; a crash stops with the input's path.
FUZZ_TIME ?= 1800
fuzz: deps
	@$(MAKE) --no-print-directory O=build-fuzz CC=clang FUZZ=1 fuzz-run

fuzz-build: $(FUZZ_BINS)

fuzz-run: fuzz-build
	@FUZZ_TIME=$(FUZZ_TIME) bash tests/fuzz/run.sh $(abspath $(O)) $(abspath $(FUZZ_BINS))

# BENCH_QUICK=1: smaller sizes; BENCH_RUNS=n: runs per figure; BENCH_TMPFS=1: images on
# tmpfs instead of the disk; BENCH_ONLY="mendfs fuse2fs ...": some columns.
bench: deps
	@sh tests/bench/bench_deps.sh
	@$(MAKE) --no-print-directory $(BENCH_BINS) $(BENCH_TOOLS) $(PROG_BINS)
	@for b in $(BENCH_BINS); do echo "== $$b"; $$b || exit 1; done
	@echo "== tests/bench/bench_fs.sh"
	@BIN=$(abspath $(BIN)) BENCH_BIN=$(abspath $(O)/bench) bash tests/bench/bench_fs.sh

RUN_IMAGE ?= $(O)/mendfs.img
RUN_SIZE  ?= 1G
run: deps
	@$(MAKE) --no-print-directory all
	@bash tests/demo.sh $(abspath $(BIN)) $(abspath $(RUN_IMAGE)) $(RUN_SIZE)

# tests/torture.sh: PROCS stress processes for DURATION s beside a checking-scrub loop and a
# forced-rebuild loop, offline checks, every surviving file verified after a remount
DURATION ?= 600
PROCS    ?= 4
torture: deps
	@$(MAKE) --no-print-directory all
	@O=$(abspath $(O)) bash tests/torture.sh $(abspath $(BIN)) $(abspath $(O)/tools) $(DURATION) $(PROCS)

# The whole metadata field fuzzing walk (every field of every structure × every fuzz verb;
# t_fieldfuzz in make check runs a sample): tables per field and per structure, $(O)/fieldfuzz.tsv,
# MISS/CRASH and unrepaired details in $(O)/fieldfuzz.fail/.  FIELDFUZZ_ARGS="-s 5": every 5th case.
fieldfuzz: deps
	@$(MAKE) --no-print-directory $(PROG_BINS)
	@BIN=$(abspath $(BIN)) O=$(abspath $(O)) bash tests/tools/fieldfuzz.sh $(FIELDFUZZ_ARGS)

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 755 $(PROG_BINS) $(DESTDIR)$(SBINDIR)/
	install -m 644 $(wildcard man/*.8) $(DESTDIR)$(MANDIR)/man8/
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(MANDIR)/man5/
	if [ -e $(BIN)/mendfs_repair ]; then \
		ln -sf mendfs_repair $(DESTDIR)$(SBINDIR)/fsck.mendfs && \
		ln -sf mendfs_repair.8 $(DESTDIR)$(MANDIR)/man8/fsck.mendfs.8 || exit 1; fi
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(CRONDIR)
	for u in mendfs_scrub_all.service mendfs_scrub_all.timer; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' scrub/$$u >$(DESTDIR)$(SYSTEMDUNITDIR)/$$u && \
		chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; done
	sed 's|@SBINDIR@|$(SBINDIR)|g' scrub/mendfs_scrub_all.cron >$(DESTDIR)$(CRONDIR)/mendfs_scrub_all
	chmod 644 $(DESTDIR)$(CRONDIR)/mendfs_scrub_all

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(O) -name '*.d' 2>/dev/null)
