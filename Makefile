# oxipost's two commands are `make run` and `make test`; `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Debian's own python3.11: built with PGO and LTO, it runs our services on ≈17 % less CPU
# than a plain source build (pyenv's default), and it lives where the unprivileged service
# users can read it.
SYSTEM_PYTHON := /usr/bin/python3.11
CONF ?= conf
# Builds of the extension share one lock: parallel sessions must not install into the venv at once.
LOCK := flock $(CURDIR)/.build.lock

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	bash scripts/install-debian-deps.sh python
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

.PHONY: venv
venv: $(PY) ## Create the virtual env and install the Python dependencies
	@grep -qx 'home = $(patsubst %/,%,$(dir $(SYSTEM_PYTHON)))' $(VENV)/pyvenv.cfg 2>/dev/null || echo \
	  "make: warning: $(VENV) is not on $(SYSTEM_PYTHON); remove it for a faster rebuild" >&2
	$(BIN)/pip install -q 'maturin>=1.5,<2' 'aiosmtpd>=1.4.6' 'dnspython>=2.4' 'msgpack>=1.0' 'lmdb>=1.4' 'uvloop>=0.19'

.PHONY: develop
develop: venv ## Build the Rust extension (release) into the venv, with the package editable
	$(LOCK) $(BIN)/maturin develop --release --quiet --extras speed,test
	@# postdrop's and postqueue's set-gid doors (rust/postdrop), with this venv's interpreter
	@# built in; `oxipost check` as root makes them root:$$setgid_group 2755 where installed.
	OXIPOST_PYTHON=$(abspath $(BIN))/python $(LOCK) cargo build --release --quiet -p oxipost-postdrop
	install -D -m 755 target/release/oxipost-postdrop $(VENV)/libexec/oxipost/postdrop
	install -D -m 755 target/release/oxipost-postqueue $(VENV)/libexec/oxipost/postqueue
	@# Byte-compile now: an editable install is otherwise compiled on every start-up where
	@# PYTHONDONTWRITEBYTECODE is set (pip does this step for a regular install).
	$(BIN)/python -m compileall -q python

.PHONY: run
run: develop ## Set everything up and start the MTA in the foreground on conf/
	$(BIN)/newaliases -c $(CONF)
	@# Mailboxes are written as the recipient (default_privs for the example users when run
	@# as root): their parents are shared like /var/mail.
	mkdir -p var/mail var/vmail && chmod 1777 var/mail var/vmail
	$(BIN)/oxipost -c $(CONF) start-fg

.PHONY: sysdeps
sysdeps: ## Install the Debian packages the tests talk to (Postfix, swaks, Dovecot, ...)
	bash scripts/install-debian-deps.sh

.PHONY: lint
lint: venv ## Format and lint checks, Rust and Python, the _core.pyi stub check and mypy
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench
	$(BIN)/python -m mypy.stubtest oxipost._core --allowlist .mypy-stubtest-allowlist
	$(BIN)/python -m mypy python/oxipost

.PHONY: test-rust
test-rust: ## Rust unit tests of oxipost-core and the set-gid doors (plain cargo, no Python)
	cargo test -p oxipost-core -p oxipost-postdrop --release --quiet

.PHONY: test-py
test-py: develop ## Python unit, integration and differential tests
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test
test: sysdeps develop lint test-rust test-py ## Install what tests need and pass every test

.PHONY: bench
bench: sysdeps develop ## Benchmarks beside real Postfix; figures go in bench/RESULTS.md
	$(BIN)/pytest bench --benchmark-only -p no:cacheprovider

.PHONY: fmt
fmt: venv ## Reformat Rust and Python in place
	cargo fmt --all
	$(BIN)/ruff format python tests bench
	$(BIN)/ruff check --fix python tests bench

.PHONY: clean
clean: ## Remove build output and the runtime state under var/
	rm -rf target $(VENV) var
