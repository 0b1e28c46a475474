# quickpay-engine: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.deps-stamp

.PHONY: help venv build demo test test-rust lint test-py clean

help:
	@echo "make demo   build, seed SQLite, serve, drive a few thousand Pay calls, summarize"
	@echo "make test   build, cargo test, clippy, ruff, pytest"

$(STAMP): requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	touch $@

venv: $(STAMP)

build: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

demo: build
	scripts/demo.sh

test-rust:
	cargo test --workspace

lint: venv
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --features python -- -D warnings
	$(VENV)/bin/ruff check python tests benches scripts
	$(VENV)/bin/ruff format --check python tests benches scripts
	scripts/gen_protos.sh --check

test-py: build
	$(PY) -m pytest

test: build test-rust lint test-py

clean:
	rm -rf target $(VENV) var
