# maillab: the one entry point. `make` builds everything under build/ (binaries in build/bin/),
# incrementally and in parallel; `make help` lists the targets a student uses.

SHELL := /bin/bash
.DEFAULT_GOAL := all
# What users type as file names and paths is never exported: exporting a variable expands it, and
# GNU make 4.4 exports to every $(shell ...) too (the nproc below), so a '$(shell ...)' in a file name
# would run before any rule. The rules read these with $(value ...) and quote them.
unexport FILE NAME PORTS HOST DIR ROSTER CAPTURES CERT DB RUBRIC SECRET SCENARIO
MAKEFLAGS += --no-print-directory
ifeq ($(MAKELEVEL),0)
ifeq ($(filter -j%,$(MAKEFLAGS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif
endif

# SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer into build/asan.
ifeq ($(SANITIZE),1)
BUILD ?= build/asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1 -g
else
BUILD ?= build
SANFLAGS :=
OPT := -O2 -g
endif
BIN := $(BUILD)/bin
OBJ := $(BUILD)/obj

CXX ?= g++
# libpq's header (Debian's libpq-dev) lives in its own directory.
CXXFLAGS += -std=c++17 $(OPT) -Wall -Wextra -MMD -MP $(SANFLAGS) -I/usr/include/postgresql
LDFLAGS += $(SANFLAGS)
LDLIBS := -lPocoNetSSL -lPocoCrypto -lPocoUtil -lPocoNet -lPocoXML -lPocoJSON -lPocoEncodings -lPocoFoundation \
          -lssl -lcrypto -lsqlite3 -lpq -lhttp_parser -lpthread

COMMON_SRC := $(wildcard common/net/*.cpp common/lab/*.cpp)
SENDER_LIB_SRC := sender/event_server.cpp sender/session.cpp sender/smtp_guard.cpp sender/session_bytes.cpp sender/session_message.cpp sender/smtp_syntax.cpp sender/smtp_client.cpp sender/compose.cpp
RETRIEVER_LIB_SRC := retriever/mail_api.cpp retriever/http_guard.cpp retriever/story_view.cpp retriever/mime_view.cpp retriever/pop3_session.cpp \
                     retriever/autoconfig.cpp retriever/pop3_server.cpp retriever/pop3_event_server.cpp retriever/event_server.cpp
UNIT_SRC := $(wildcard tests/unit/*.cpp)

obj = $(patsubst %.cpp,$(OBJ)/%.o,$(1))

PROGRAMS := $(BIN)/senderserver $(BIN)/senderclient $(BIN)/retrieverserver $(BIN)/retrieverclient $(BIN)/maillab-certs \
            $(BIN)/maillab-admin \
            $(BIN)/maillab-load
TESTS := $(BIN)/unit-tests

.PHONY: all programs
all: $(PROGRAMS) $(TESTS)
programs: $(PROGRAMS)

# Every compile waits for the Debian packages (order-only: checked once per build directory).
$(OBJ)/%.o: %.cpp | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

# A program's .properties file is compiled in as its defaults (see common/lab/app_support.h).
define embed_properties
$(OBJ)/gen/$(1)_properties.cpp: $(2)/$(1).properties
	@mkdir -p $$(dir $$@)
	@{ echo '// Generated from $$< by the Makefile.'; \
	   echo 'extern const char* const k$(3)Properties;'; \
	   echo 'const char* const k$(3)Properties = R"MAILLAB_PROPS('; \
	   cat $$<; echo ')MAILLAB_PROPS";'; } > $$@
endef
$(eval $(call embed_properties,senderserver,sender,SenderServer))
$(eval $(call embed_properties,retrieverserver,retriever,RetrieverServer))
$(eval $(call embed_properties,shared,common,Shared))

$(OBJ)/gen/%_properties.o: $(OBJ)/gen/%_properties.cpp
	$(CXX) $(CXXFLAGS) -c $< -o $@

# Every program links the same way: its objects and libraries ($^) into $@, then $(1), the
# system libraries it needs.
define link
@mkdir -p $(dir $@)
$(CXX) $(LDFLAGS) $^ -o $@ $(1)
endef

$(BUILD)/libmaillab.a: $(call obj,$(COMMON_SRC) $(SENDER_LIB_SRC) $(RETRIEVER_LIB_SRC))
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(BIN)/senderserver: $(call obj,sender/server.cpp) $(OBJ)/gen/senderserver_properties.o $(OBJ)/gen/shared_properties.o $(BUILD)/libmaillab.a
	$(call link,$(LDLIBS))

$(BIN)/senderclient: $(call obj,sender/client.cpp) $(BUILD)/libmaillab.a
	$(call link,$(LDLIBS) -ledit)

$(BIN)/retrieverserver: $(call obj,retriever/server.cpp) $(OBJ)/gen/retrieverserver_properties.o $(OBJ)/gen/shared_properties.o $(BUILD)/libmaillab.a
	$(call link,$(LDLIBS))

$(BIN)/retrieverclient: $(call obj,retriever/client.cpp) $(BUILD)/libmaillab.a
	$(call link,$(LDLIBS) -ledit)

$(BIN)/maillab-load: $(call obj,tests/bench/maillab_load.cpp common/lab/password.cpp)
	$(call link,-lssl -lcrypto -lpthread)

$(BIN)/maillab-admin: $(call obj,common/tools/admin_main.cpp) $(BUILD)/libmaillab.a
	$(call link,$(LDLIBS))

$(BIN)/maillab-certs: $(call obj,common/tools/certs_main.cpp) $(BUILD)/libmaillab.a
	$(call link,$(LDLIBS))

$(call obj,$(UNIT_SRC)): CXXFLAGS += -DMAILLAB_GOLDEN_DIR='"$(CURDIR)/tests/golden"'

# Catch2's own main, built at -O1 with the sanitizers, trips GCC 12's -Wmaybe-uninitialized inside
# <functional>: a false positive in third-party code, silenced for that one file only.
$(OBJ)/tests/unit/main.o: CXXFLAGS += -Wno-maybe-uninitialized

# Catch2 2 is header-only; Catch2 3 (no catch.hpp) is a library with its own main.
CATCH_LIBS := $(if $(wildcard /usr/include/catch2/catch.hpp),,-lCatch2Main -lCatch2)

$(BIN)/unit-tests: $(call obj,$(UNIT_SRC)) $(BUILD)/libmaillab.a
	$(call link,$(LDLIBS) $(CATCH_LIBS))

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- set-up ---------------------------------------------------------------------------------
# Debian/Ubuntu packages. `make deps` installs what building and running need; the tests, captures
# and reports add theirs. Chromium is optional: Debian packages it, Ubuntu only as a snap (the
# Chromium test then says it was skipped).
BUILD_PACKAGES := g++ make libpoco-dev libssl-dev libsqlite3-dev libpq-dev catch2 libedit-dev openssl libhttp-parser-dev
TEST_PACKAGES := curl python3 ca-certificates tshark mscgen pandoc postgresql libio-socket-ssl-perl haproxy
OPTIONAL_TEST_PACKAGES := chromium fetchmail neomutt
BENCH_PACKAGES := curl python3 python3-aiosmtpd nginx-light wrk gnuplot-nox postgresql linux-perf
# MailDev, the bench's npm peer, needs node and npm: Debian's when none is installed (a node from
# elsewhere, with its own npm, is kept). MailDev 3 needs node 20: Debian 12's 18 makes the bench skip it.
# QUICK=1 installs neither: it runs MailDev only when an earlier full run installed it.
BENCH_NODE_PACKAGES := nodejs npm
HAVE_NODE_AND_NPM = $(shell command -v node >/dev/null && command -v npm >/dev/null && echo yes)

# $(1): packages to install when missing (with sudo when not root); $(2) non-empty: optional, one
# at a time, going on when apt cannot install one.
define install_packages
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing packages:" $$missing; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq || true; \
	  if [ -z "$(2)" ]; then \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else for p in $$missing; do \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$p || echo "note: $$p is not available here; the tests that need it are skipped"; \
	  done; fi; \
	fi
endef

$(BUILD)/.deps-ok:
	@$(MAKE) deps
	@mkdir -p $(dir $@) && touch $@

.PHONY: deps test-deps
deps:
	$(call install_packages,$(BUILD_PACKAGES))

test-deps: deps
	$(call install_packages,$(TEST_PACKAGES))
	$(call install_packages,$(OPTIONAL_TEST_PACKAGES),optional)

.PHONY: certs password token tokens grade class-senderserver class-retrieverserver
# HOSTNAME= on the command line: a class server's certificate for that name (docs/instructors.md).
CLASS_HOST = $(if $(filter command line,$(origin HOSTNAME)),$(HOSTNAME))
certs: $(BIN)/maillab-certs
	@$(BIN)/maillab-certs $(if $(CLASS_HOST),--host $(CLASS_HOST)) certs

# The instructor's reset: a new password for USER (printed once; the old one stops at once).
# USER= on the command line only (the environment's USER is your login name, not a lab account).
ACCOUNT = $(if $(filter command line,$(origin USER)),$(USER))
password: $(BIN)/maillab-admin
	@test -n "$(ACCOUNT)" || { echo "usage: make password USER=ana [DB=users/maillab.db]"; exit 2; }
	@$(BIN)/maillab-admin --db $(or $(DB),users/maillab.db) set-password $(ACCOUNT)

# ---- the instructor's kit (docs/instructors.md) -------------------------------------------------
# One server of each kind for a class: every address, the class settings (provenance on), the
# certificate for HOSTNAME. Each in its own terminal, like the students' servers.
class-senderserver: $(BIN)/senderserver $(BIN)/maillab-certs
	@test -n "$(CLASS_HOST)" || { echo "usage: make class-senderserver HOSTNAME=lab.example.edu [PORT=465]"; exit 2; }
	@mkdir -p users && $(BIN)/maillab-certs --host $(CLASS_HOST) certs
	$(BIN)/senderserver --config=common/class.properties --hostname=$(CLASS_HOST) --port=$(call given,PORT,465) $(ARGS)
class-retrieverserver: $(BIN)/retrieverserver $(BIN)/maillab-certs
	@test -n "$(CLASS_HOST)" || { echo "usage: make class-retrieverserver HOSTNAME=lab.example.edu [RPORT=443]"; exit 2; }
	@mkdir -p users && $(BIN)/maillab-certs --host $(CLASS_HOST) certs
	$(BIN)/retrieverserver --config=common/class.properties --hostname=$(CLASS_HOST) --port=$(call given,RPORT,443) $(ARGS)
# A student's token for the lab message's Subject; SECRET= or users/instructor.secret (made once).
token:
	@test -n "$(STUDENT)" || { echo "usage: make token STUDENT=id [SECRET=...]"; exit 2; }
	@/usr/bin/python3 -m captures.labtoken token --student "$(STUDENT)" $(if $(SECRET),--secret "$(SECRET)")
tokens:
	@test -n "$(ROSTER)" || { echo "usage: make tokens ROSTER=roster.csv [SECRET=...]"; exit 2; }
	@/usr/bin/python3 -m captures.labtoken tokens --roster "$(ROSTER)" $(if $(SECRET),--secret "$(SECRET)")
# $(call quoted,VAR): VAR's value as typed (never expanded by make, never by the shell), one word.
quoted = '$(subst ','\'',$(value $(1)))'
# Grades every file in DIR: DIR/grades.csv, grades-files.csv and grades.html, a report per capture.
grade: test-deps
	@test -n $(call quoted,DIR) || { echo "usage: make grade DIR=submissions/ [ROSTER=roster.csv] [SECRET=...] [DB=users/maillab.db] [CERT=certs/server.pem] [RUBRIC=captures/rubric.csv]"; exit 2; }
	@/usr/bin/python3 -m report.grade --admin $(BIN)/maillab-admin --db $(if $(value DB),$(call quoted,DB),users/maillab.db) \
	    $(if $(value ROSTER),--roster $(call quoted,ROSTER)) $(if $(value SECRET),--secret $(call quoted,SECRET)) \
	    $(if $(value RUBRIC),--rubric $(call quoted,RUBRIC)) $(if $(value CERT),--cert $(call quoted,CERT)) -- $(call quoted,DIR)

# The live class board from the servers' record (refreshes every EVERY seconds; Ctrl-C ends it),
# and the instructor role that lets an account read it at https://HOST/class and /metrics.
.PHONY: class-status instructor
class-status: $(BIN)/maillab-admin
	@$(BIN)/maillab-admin --db "$(or $(DB),users/maillab.db)" class-status --watch "$(or $(EVERY),5)" $(if $(ROSTER),--roster "$(ROSTER)")
instructor: $(BIN)/maillab-admin
	@test -n "$(ACCOUNT)" || { echo "usage: make instructor USER=teacher [DB=users/maillab.db]"; exit 2; }
	@$(BIN)/maillab-admin --db "$(or $(DB),users/maillab.db)" set-role "$(ACCOUNT)" instructor

# ---- the lab -------------------------------------------------------------------------------
# (not `?=`: GNU make 4.3's `unexport` above defines the variable, empty, and `?=` then keeps it empty)
ifeq ($(value HOST),)
HOST := localhost
endif
# Ports, the same way for every server target: PORT= (the sender's) and RPORT= (the retriever's),
# each from the command line or the environment. The lab's defaults are 9000 and 9100, and PORT
# alone moves the retriever too (as in the first labs); the class servers' are 465 and 443, each
# moved by its own variable only.
ifeq ($(origin PORT),undefined)
PORT := 9000
LAB_RPORT := 9100
else
LAB_RPORT := $(PORT)
endif
ifeq ($(origin RPORT),undefined)
RPORT := $(LAB_RPORT)
endif
# $(call given,VAR,DEFAULT): VAR when the user gave it (command line or environment), else DEFAULT.
given = $(if $(filter command line environment,$(origin $(1))),$($(1)),$(2))

.PHONY: senderserver senderclient retrieverserver retrieverclient receiverserver receiverclient
senderserver: $(BIN)/senderserver
	@mkdir -p users
	$(BIN)/senderserver --port=$(PORT) $(ARGS)

senderclient: $(BIN)/senderclient
	$(BIN)/senderclient --host $(HOST) --port $(PORT) $(ARGS)

# The retriever's port: RPORT=, else PORT=, else 9100 (see "Ports" above). It serves POP3 over
# TLS too, on POP3PORT (default 9995; off to serve none; its ready line names it), and POP3 with
# STLS on POP3PLAINPORT when given (docs/mail-clients.md).
retrieverserver: $(BIN)/retrieverserver
	@mkdir -p users
	$(BIN)/retrieverserver --port=$(RPORT) $(if $(POP3PORT),--pop3-port=$(POP3PORT)) $(if $(POP3PLAINPORT),--pop3-plain-port=$(POP3PLAINPORT)) $(ARGS)

retrieverclient: $(BIN)/retrieverclient
	$(BIN)/retrieverclient --host $(HOST) --port $(RPORT) $(ARGS)

# The older spellings from earlier versions of the lab.
receiverserver: retrieverserver
receiverclient: retrieverclient

.PHONY: demo
demo: deps
	$(call install_packages,curl python3)
	@$(MAKE) programs
	@bash tests/demo.sh $(BUILD)

# ---- captures and reports -------------------------------------------------------------------
MODES ?= implicit,starttls,off
ifeq ($(value NAME),)
NAME := lab
endif
comma := ,
# $(call shq,TEXT): text already expanded as one shell word (`quoted` above: a variable as given).
# The values below read FILE, NAME, PORTS, HOST as given ($(value ...)), and they are not exported
# (see the top): a '$(...)' in a file name is a file name, never run by make.
shq = '$(subst ','\'',$(1))'
# capture-start captures the ports your servers use: PORT= and RPORT= (the sender's and the
# retriever's, as for the lab targets), or PORTS=a,b; SERVERS=1 also starts the servers there with
# the key log; NAME= names the file (default live); MODE= the servers' --tls.
LIVE_PORTS = $(if $(filter command line environment,$(origin PORTS)),$(value PORTS),$(if $(filter $(value PORT),$(value RPORT)),$(value PORT),$(value PORT)$(comma)$(value RPORT)))
LIVE_NAME = $(if $(filter command line environment,$(origin NAME)),$(value NAME),live)
.PHONY: capture capture-start capture-stop check-capture report wireshark-profile
# SCENARIO=wrong-host|unknown-ca|expired|tls12-client|wrong-service|plaintext-on-tls|all: a TLS
# failure instead of the lab session (captures/scenarios.py), into captures/scenario-<name>.pcapng.
capture: test-deps
	@$(MAKE) programs
	@$(if $(value SCENARIO),/usr/bin/python3 -m captures.scenarios --scenario $(call shq,$(value SCENARIO)) --build $(BUILD),/usr/bin/python3 -m captures.capture session --modes $(MODES) --name $(NAME) --build $(BUILD))

# HOST=lab.example.edu (a class server; docs/student.md): captures on the interface that routes to
# HOST, only HOST's traffic on those ports (e.g. PORT=465 RPORT=443); the default, localhost, loopback.
capture-start: test-deps
	@$(if $(SERVERS),$(MAKE) programs,true)
	@/usr/bin/python3 -m captures.capture start --ports $(call shq,$(LIVE_PORTS)) --name $(call shq,$(LIVE_NAME)) \
	    --mode $(if $(value MODE),$(call quoted,MODE),implicit) --host $(call quoted,HOST) --build $(call quoted,BUILD) \
	    $(if $(value SERVERS),--servers)

capture-stop:
	@/usr/bin/python3 -m captures.capture stop --name $(call shq,$(LIVE_NAME))

check-capture:
	@test -n $(call quoted,FILE) || { echo "usage: make check-capture FILE=captures/lab-implicit.pcapng [RUBRIC=captures/rubric.csv]"; exit 2; }
	@/usr/bin/python3 -m captures.check $(if $(value RUBRIC),--rubric $(call quoted,RUBRIC)) -- $(call quoted,FILE)

# FILE=captures/live.pcapng: that file alone, into report/<its name>/ (report/live/; NAME= another
# folder), nothing captured; NAME=live alone does the same for captures/live.pcapng. Otherwise
# CAPTURES, or this NAME's scripted captures (made first if there are none), into report/<NAME>/.
REPORT_FILE = $(or $(value FILE),$(if $(filter command line,$(origin NAME)),$(if $(wildcard captures/$(value NAME)-*.pcapng),,$(wildcard captures/$(value NAME).pcapng))))
report: test-deps
ifneq ($(REPORT_FILE),)
	@file=$(call shq,$(REPORT_FILE)); test -f "$$file" || { echo "make report: no such file: $$file"; exit 2; }; \
	name=$(if $(filter command line,$(origin NAME)),$(call quoted,NAME),"$$(basename -- "$$file")"); \
	name=$${name%.pcapng}; name=$${name%.pcap}; name=$$(printf '%s' "$$name" | tr -c 'A-Za-z0-9._-' '_'); \
	case "$$name" in ""|.*) name="file-$$name";; esac; \
	/usr/bin/python3 -m report.report --name="$$name" -- "$$file" && echo "report: open report/$$name/report.html"
else
	@if [ -z "$(CAPTURES)" ] && ! ls captures/$(NAME)-*.pcapng >/dev/null 2>&1; then $(MAKE) capture; fi
	@/usr/bin/python3 -m report.report --name $(NAME) $(or $(CAPTURES),$(wildcard captures/$(NAME)-*.pcapng) $(if $(wildcard captures/$(NAME)-*.pcapng),,captures/$(NAME)-implicit.pcapng captures/$(NAME)-starttls.pcapng captures/$(NAME)-off.pcapng))
endif

wireshark-profile:
	@mkdir -p $(HOME)/.config/wireshark/profiles
	@cp -r captures/wireshark-profile/maillab $(HOME)/.config/wireshark/profiles/
	@echo "installed the maillab profile in $(HOME)/.config/wireshark/profiles/maillab"

# ---- a class on one machine ---------------------------------------------------------------------
# Try the instructor's kit before the term (docs/instructors.md): network namespaces make a class
# server lab.maillab.test and eight students on a bridge (198.18.0.0/24, nothing outside them),
# each student captures her own session, the board mid-class, `make grade`, then all torn down.
# Needs root; under a minute. The files stay in $(BUILD)/classroom/ (submissions/grades.html).
.PHONY: classroom
classroom: test-deps
	@$(MAKE) programs
	@/usr/bin/python3 -m tests.classroom --build $(call quoted,BUILD)

# ---- benchmark -------------------------------------------------------------------------------
# QUICK=1: about a minute, writes to build/ so a CI run leaves docs/benchmarks.md alone.
.PHONY: bench
bench: deps
	$(call install_packages,$(BENCH_PACKAGES))
	$(call install_packages,$(if $(QUICK)$(HAVE_NODE_AND_NPM),,$(BENCH_NODE_PACKAGES)),optional)
	@$(MAKE) programs
	@/usr/bin/python3 -m tests.bench.bench --build $(BUILD) $(if $(QUICK),--quick --out $(BUILD)/benchmarks-quick.md)

# The password guesser against the guess budget (about a minute): docs/benchmarks.md's section.
.PHONY: bench-attack
bench-attack: deps
	@$(MAKE) programs
	@/usr/bin/python3 -m tests.bench.attack --build $(BUILD) $(if $(QUICK),--seconds 10,--seconds 40 --doc docs/benchmarks.md)
	@/usr/bin/python3 -m tests.bench.hoard --build $(BUILD) $(if $(QUICK),--seconds 5,--seconds 15 --doc docs/benchmarks.md)

# make grade on a class of 60 submissions from the virtual classroom (needs root for the classroom).
.PHONY: bench-grade
bench-grade: test-deps
	@$(MAKE) programs
	@/usr/bin/python3 -m tests.bench.grade_bench --build $(BUILD) $(if $(QUICK),--students 16,--doc docs/benchmarks.md)

# The per-release figures (run in each chroot by `make bench-platforms`; OUT= the JSON file).
.PHONY: bench-platform
bench-platform: deps
	$(call install_packages,python3)
	@$(MAKE) programs
	@/usr/bin/python3 -m tests.bench.platform_bench --build $(BUILD) --out $(or $(OUT),$(BUILD)/platform-bench.json)

# ---- tests ---------------------------------------------------------------------------------
.PHONY: test test-asan
test: test-deps
	@$(MAKE) all
	@/usr/bin/python3 -m tests.run_tests --build $(BUILD) --store $(or $(STORE),sqlite)

test-asan: test-deps
	@$(MAKE) SANITIZE=1 all
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 /usr/bin/python3 -m tests.run_tests --build build/asan --store $(or $(STORE),sqlite)

# ---- fuzzing ---------------------------------------------------------------------------------
# libFuzzer targets (clang), with AddressSanitizer and UndefinedBehaviorSanitizer: the SMTP session
# fed by the line reader, the SMTP syntax helpers, the retriever's MailApi, and the POP3 session. Each runs
# FUZZ_SECONDS (60); the corpus grows in build/fuzz/corpus/<target> and a crash is kept there.
FUZZ_SECONDS ?= 60
FUZZ_DIR := build/fuzz
FUZZ_CXX := clang++
FUZZ_FLAGS := -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -I/usr/include/postgresql
FUZZ_LIB_SRC := $(filter-out common/tools/% common/lab/client_support.cpp,$(COMMON_SRC)) sender/session.cpp sender/session_bytes.cpp sender/session_message.cpp sender/smtp_syntax.cpp \
                retriever/mail_api.cpp retriever/story_view.cpp retriever/mime_view.cpp retriever/autoconfig.cpp retriever/pop3_session.cpp
FUZZ_TARGETS := fuzz_session fuzz_syntax fuzz_mail_api fuzz_mime_view fuzz_pop3 fuzz_proxy
FUZZ_PACKAGES := clang
.SECONDARY: $(patsubst %.cpp,$(FUZZ_DIR)/obj/%.o,$(FUZZ_LIB_SRC)) $(patsubst %,$(FUZZ_DIR)/obj/tests/fuzz/%.o,$(FUZZ_TARGETS))

$(FUZZ_DIR)/obj/%.o: %.cpp | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/%: $(FUZZ_DIR)/obj/tests/fuzz/%.o $(patsubst %.cpp,$(FUZZ_DIR)/obj/%.o,$(FUZZ_LIB_SRC))
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

.PHONY: fuzz fuzz-build
fuzz-build:
	$(call install_packages,$(FUZZ_PACKAGES))
	@$(MAKE) $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t tests/fuzz/seeds/$$t; \
	  echo "== $$t: $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(FUZZ_DIR)/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/corpus/$$t- \
	    $(FUZZ_DIR)/corpus/$$t tests/fuzz/seeds/$$t 2>&1 | grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|INFO: a crash)' || true; \
	  test "$${PIPESTATUS[0]}" -eq 0 || { echo "$$t FAILED: see $(FUZZ_DIR)/corpus/$$t-*"; exit 1; }; \
	done

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)

# ---- platforms ------------------------------------------------------------------------------
# The README's two commands on fresh minimal installs of each Debian and Ubuntu release (debootstrap chroots,
# cached in .platforms/, which `make clean` leaves alone). Needs root. RELEASES= picks some.
RELEASES ?= bookworm trixie testing noble resolute
.PHONY: test-platforms bench-platforms clean-platforms
test-platforms:
	@bash tests/platforms.sh --readme $(RELEASES)

# The same, then the per-release benchmark (make bench-platform in each) and its table.
bench-platforms:
	@bash tests/platforms.sh --bench $(RELEASES)
	@/usr/bin/python3 -m tests.bench.platform_table .platforms/results $(RELEASES)

clean-platforms:
	@bash tests/platforms.sh --clean

.PHONY: clean
clean:
	rm -rf build

.PHONY: help
# Every target a user types, by who types it (tests/e2e/test_docs.py checks that none is missing).
# PORT= and RPORT= are the sender's and the retriever's ports, from the command line or the
# environment, for every server target alike.
help:
	@echo "Students:"
	@echo "  make deps | test-deps | all | programs | certs | demo | clean"
	@echo "  make senderserver [PORT=9000]       make senderclient [PORT=9000] [HOST=localhost]"
	@echo "  make retrieverserver [RPORT=9100] [POP3PORT=9995 POP3PLAINPORT=9110]"
	@echo "  make retrieverclient [RPORT=9100] (PORT= alone moves both;"
	@echo "                                      the older receiverserver, receiverclient work too)"
	@echo "  make password USER=ana [DB=users/maillab.db]"
	@echo "Captures and reports:"
	@echo "  make capture [SCENARIO=name|all] | capture-start [PORT=... RPORT=... HOST=...] | capture-stop"
	@echo "  make check-capture FILE=... | report [FILE=...|NAME=...] | wireshark-profile"
	@echo "Instructors (docs/instructors.md):"
	@echo "  make class-senderserver HOSTNAME=lab.example.edu [PORT=465] | class-retrieverserver HOSTNAME=... [RPORT=443]"
	@echo "  make token STUDENT=id | tokens ROSTER=roster.csv | grade DIR=submissions/ | class-status | instructor USER=..."
	@echo "  sudo make classroom   (a class of eight on this machine)"
	@echo "Tests and benchmarks:"
	@echo "  make test | test-asan | fuzz [FUZZ_SECONDS=60] | fuzz-build"
	@echo "  make bench [QUICK=1] | bench-attack | bench-grade"
	@echo "Platforms (root):"
	@echo "  make test-platforms [RELEASES='bookworm trixie testing noble resolute'] | bench-platforms | clean-platforms"
