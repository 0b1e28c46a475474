# quickpay-engine: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.deps-stamp

.PHONY: help venv build demo test test-rust lint test-py test-py-only test-py-run test-rust-lint test-full fuzz clean bench bench-smoke chaos

help:
	@echo "make demo   build, seed SQLite, serve, drive a few thousand Pay calls, summarize"
	@echo "make test   build, cargo test, clippy, ruff, pytest"
	@echo "make test-full  the crash, fuzz and differential suites at full size (slow)"
	@echo "make chaos  PostgreSQL, NATS, the disk, the gateways and the engine broken under"
	@echo "            load, every invariant checked after each fault (QUICKPAY_FULL=1: full size)"
	@echo "make bench  every benches/bench_*.py and the end-to-end comparisons with their"
	@echo "            baselines (echo server, pgbench, raw fsync); writes benches/RESULTS.md"

$(STAMP): requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	touch $@

venv: $(STAMP)

# The dependency auditor, in a venv of its own (see requirements-audit.lock).
AUDIT_VENV  := .venv-audit
AUDIT_STAMP := $(AUDIT_VENV)/.deps-stamp
$(AUDIT_STAMP): requirements-audit.lock
	test -x $(AUDIT_VENV)/bin/python || python3 -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install -q -r requirements-audit.lock
	touch $@

build: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

demo: build
	scripts/demo.sh

# The core's tests and those of its Python-facing half (the simulators, the proto and
# store encoders), in one run with the python feature (the feature only adds the
# bindings' module, so every test of the core runs too; `make lint`'s second clippy pass
# checks that the core builds alone). In release, so that they link against the
# dependencies `make build` compiled for the extension instead of compiling all of them
# again in the dev profile (see docs/operations.md, "How long make test takes"); with
# the engine's own debug assertions on, which the tests rely on. The engine crate itself
# (only it: no dependency's build changes) is compiled at opt-level 0 for its tests: its
# four test targets each link the whole dependency graph with thin LTO, which at the
# release opt-level 3 cost about 2.5 times the CPU; what the tests check does not change
# (overflow checks and debug assertions stay on; the dependencies keep the extension's
# optimized code). `make test-full` keeps opt-level 3 for its long runs.
RUST_TEST_PROFILE := --release \
	--config 'profile.release.package.quickpay-engine.debug-assertions=true'
CARGO_TEST_OPT := cargo test --workspace --features python $(RUST_TEST_PROFILE)
CARGO_TEST := $(CARGO_TEST_OPT) --config 'profile.release.package.quickpay-engine.opt-level=0'
# clippy in the same release profile: the build scripts and proc macros (protox,
# prost-build, syn, serde_derive, pyo3-macros...) are then the very artifacts `make
# build` compiled (release builds them at opt-level 0), where the dev profile's
# `package."*" opt-level = 2` compiled them all again with optimized code. The lints
# are the same (the engine's debug assertions on, as in dev).
CLIPPY := cargo clippy --workspace --all-targets $(RUST_TEST_PROFILE)
# pytest's worker processes (pytest-xdist, --dist loadgroup). The suite mostly waits
# (servers, restarts, sweeps, the soak's half-rate load): three workers overlap those
# waits on two cores. The chaos scenarios run one after another in one worker
# (xdist_group "chaos"), the soak in another ("chaos-soak"), so neither is the long
# pole alone; 0 runs one process (benches/RESULTS.md, "make test's phases").
PYTEST_WORKERS ?= 3
STUBTEST := $(PY) -m mypy.stubtest quickpay_engine._engine --allowlist scripts/stubtest-allowlist.txt
PYTEST := $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

test-rust:
	$(CARGO_TEST)

lint: venv $(AUDIT_STAMP)
	cargo fmt --check
	$(CLIPPY) --features python -- -D warnings
	$(CLIPPY) -- -D warnings
	$(PY) scripts/gen_iban_formats.py --check
	$(VENV)/bin/ruff check python tests benches scripts
	$(VENV)/bin/ruff format --check python tests benches scripts
	scripts/gen_protos.sh --check
	$(PY) scripts/audit_deps.py
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

test-py: build
	$(STUBTEST)
	$(PYTEST)

# Once the extension is built, pytest runs beside the Rust tests and the lint: pytest
# mostly waits, and the compiles take the CPU it leaves. The compiles run at nice 19,
# so that the suite's servers and loads get the CPU first, as when they ran alone. The
# pytest output is live; the Rust tests' output comes in one piece when they end, then
# the lint's. Either side failing fails `make test` (after both have ended).
test: build
	$(MAKE) --no-print-directory -j2 --output-sync=target test-py-only test-rust-lint

test-py-only:
	@$(MAKE) --no-print-directory --output-sync=none test-py-run

test-py-run:
	$(STUBTEST)
	$(PYTEST)

test-rust-lint: venv $(AUDIT_STAMP)
	nice -n 19 $(MAKE) --no-print-directory test-rust lint

# The crash, soak and differential suites at full size (500 SIGKILLs, 1,000,000
# differential inputs, 100,000-record reconciliation) and a minute of fuzzing per target.
test-full: build
	QUICKPAY_FULL=1 $(CARGO_TEST_OPT)
	QUICKPAY_FULL=1 $(PY) -m pytest
	scripts/fuzz.sh $${FUZZ_SECONDS:-60}

# The chaos suite (tests/chaos): real faults of the real parts (a private PostgreSQL
# cluster stopped, a private NATS restarted, the engine killed mid two-phase commit, the
# data dir's disk filled, faulty gateways) under a load of Pay, PayStream and PayBatch,
# every invariant checked after each; one line per scenario and the total at the end.
# Small by default (it is also part of `make test`); QUICKPAY_FULL=1 for the full size.
chaos: build
	$(PY) -m pytest tests/chaos -q

# The write-ahead log's decoder and replay under cargo-fuzz (nightly), FUZZ_SECONDS each.
fuzz:
	scripts/fuzz.sh $${FUZZ_SECONDS:-60}

# Every benches/bench_*.py (pytest-benchmark), the engine against the bare gRPC echo
# server with the same client, and pgbench; figures into benches/RESULTS.md (< 10 min).
bench: build
	$(PY) benches/compare.py --out benches/RESULTS.md
	$(PY) benches/cpu_budget.py --out benches/RESULTS.md

# The same at tiny sizes, to check that it runs; writes var/bench/RESULTS-smoke.md.
bench-smoke: build
	$(PY) benches/compare.py --quick --out var/bench/RESULTS-smoke.md

clean:
	rm -rf target $(VENV) var
