# One command per intent. `make help` lists them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export CARGO_TERM_COLOR = never

.PHONY: help install lint lint-rust lint-python test test-rust test-python bench bench-quick demo torture fuzz

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## build the Rust core and install the package with its test and bench tools
	$(PIP) install --quiet --disable-pip-version-check maturin
	$(PIP) install --quiet --disable-pip-version-check -e ".[test,bench]"

lint-rust:  ## rustfmt and clippy (warnings are errors)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings

lint-python:  ## ruff, mypy --strict and stubtest of the native module
	ruff check python tests benches
	ruff format --check python tests benches
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest tieredindex._native

lint: lint-rust lint-python  ## every linter

test-rust:  ## the Rust core's tests (no interpreter needed)
	cargo test

test-python:  ## the Python tests (starts its own S3 server on 127.0.0.1)
	$(PYTHON) -m pytest -q

test: install lint test-rust test-python bench-quick  ## install, lint, run every test, and check the benches still run

demo: install  ## the main job
	tieredindex demo

bench:  ## the whole benchmark suite (~22 min; the first builds s3s-fs, ~2 more): writes benches/REPORT.md and benches/plots/
	$(PYTHON) benches/run_suite.py

bench-quick:  ## a reduced run of every bench (< 3 min, for CI): writes benches/REPORT-quick.md
	$(PYTHON) benches/run_suite.py --quick

torture:  ## the long crash torture (both back ends); prints trials, kills per point, lost/corrupt/crashes
	$(PYTHON) tests/torture.py --trials $${TRIALS:-200}

FUZZ_SECONDS ?= 300
fuzz:  ## libFuzzer on the sealed and unsealed readers (needs nightly Rust; installs cargo-fuzz)
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for target in open_sealed open_unsealed; do \
		cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 || exit 1; \
	done
