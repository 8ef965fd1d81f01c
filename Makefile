# mendfs — the one, non-recursive Makefile.
#
#   make                 build libmendfs and every program into $(O)/bin
#   make check           install missing build packages, build, run every test
#   make asan            the same tests under AddressSanitizer + UBSan (in build-asan/)
#   make bench           benchmarks (printed figures, never pass/fail)
#   make run             deps, build, format a default image and show it
#   make install PREFIX=/usr/local DESTDIR=
#
# DEVELOPER=1 (or CI=true) turns warnings into errors; packagers get plain -Wall -Wextra.
# V=1 shows the commands.  O=dir puts every output under dir (default: build).

PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
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
PROGS := mkfs.mendfs mendfs_db mendfs
mkfs.mendfs_SRCS := fs/mkfs.c
mendfs_db_SRCS   := fs/db.c
mendfs_SRCS      := fs/mendfs.c fs/node.c fs/attr.c fs/namei.c fs/fileio.c

define prog_rule
$(BIN)/$(1): $$($(1)_SRCS:%.c=$(O)/%.o) $(LIBA)
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

$(O)/tests/%: $(O)/tests/unit/%.o $(TU_OBJS) $(LIBA)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(ALL_LIBS)

$(O)/tests/unit/%.o: ALL_CFLAGS += $(CHECK_CFLAGS)

# --- benchmarks: every tests/bench/bench_*.c -----------------------------------------------
BENCH_SRCS := $(wildcard tests/bench/bench_*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(O)/bench/%)

$(O)/bench/%: $(O)/tests/bench/%.o $(LIBA)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

# --- generic rules ---------------------------------------------------------------------------
$(O)/%.o: %.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBA): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $^

.PHONY: all deps check check-run asan bench run install clean
all: $(PROG_BINS)

deps:
	@sh .ci/deps.sh

# The package check runs first, in its own make, so that pkg-config sees what it installed.
check: deps
	@$(MAKE) --no-print-directory check-run

check-run: $(PROG_BINS) $(UNIT_BINS)
	@BIN=$(abspath $(BIN)) O=$(abspath $(O)) sh tests/run-tests.sh $(UNIT_BINS:%=$(abspath %)) \
		$(abspath $(wildcard tests/integration/t_*.sh))

asan: deps
	@$(MAKE) --no-print-directory O=build-asan SANITIZE=1 check-run

bench: deps
	@$(MAKE) --no-print-directory $(BENCH_BINS) $(PROG_BINS)
	@for b in $(BENCH_BINS); do echo "== $$b"; $$b || exit 1; done

RUN_IMAGE ?= $(O)/mendfs.img
RUN_SIZE  ?= 1G
run: deps
	@$(MAKE) --no-print-directory all
	@bash tests/demo.sh $(BIN) $(RUN_IMAGE) $(RUN_SIZE)

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 755 $(PROG_BINS) $(DESTDIR)$(SBINDIR)/
	install -m 644 $(wildcard man/*.8) $(DESTDIR)$(MANDIR)/man8/
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(MANDIR)/man5/

clean:
	rm -rf build build-asan

-include $(shell find $(O) -name '*.d' 2>/dev/null)
