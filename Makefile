# quickpay-engine: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.deps-stamp

.PHONY: help venv build demo test test-rust lint test-py test-full fuzz clean bench bench-smoke chaos

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
# the engine's own debug assertions on, which the tests rely on.
CARGO_TEST := cargo test --workspace --release --features python \
	--config 'profile.release.package.quickpay-engine.debug-assertions=true'
# pytest's worker processes (pytest-xdist): the chaos scenarios keep to one of them
# (xdist_group). 0 (the default) runs one process: on two cores -n 2 was slower than one
# process on the subsets measured (benches/RESULTS.md, "make test's phases"); whether it
# pays on the whole suite is still to be measured on a quiet machine.
PYTEST_WORKERS ?= 0

test-rust:
	$(CARGO_TEST)

lint: venv $(AUDIT_STAMP)
	cargo fmt --check
	cargo clippy --workspace --all-targets --features python -- -D warnings
	cargo clippy --workspace --all-targets -- -D warnings
	$(PY) scripts/gen_iban_formats.py --check
	$(VENV)/bin/ruff check python tests benches scripts
	$(VENV)/bin/ruff format --check python tests benches scripts
	scripts/gen_protos.sh --check
	$(PY) scripts/audit_deps.py
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

test-py: build
	$(PY) -m mypy.stubtest quickpay_engine._engine --allowlist scripts/stubtest-allowlist.txt
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

test: build test-rust lint test-py

# The crash, soak and differential suites at full size (500 SIGKILLs, 1,000,000
# differential inputs, 100,000-record reconciliation) and a minute of fuzzing per target.
test-full: build
	QUICKPAY_FULL=1 $(CARGO_TEST)
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
