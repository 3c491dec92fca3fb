# Every target works from a fresh clone: `install` creates .venv when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

FUZZ_RUNS ?= 200000

BENCH_ARGS ?=

# make image: the container image, built by podman (no Docker engine here; `docker build .`
# elsewhere). The wheels are built on the host for its Python (3.11 here) and installed in the
# image without an index, since a build here cannot verify PyPI's TLS: BASE_IMAGE's python3
# must be the same minor version for them.
BASE_IMAGE ?= python:3.11-slim-bookworm
IMAGE ?= otlp-delta-collector:latest
IMAGE_BUILD ?= podman build --isolation chroot --format docker

.PHONY: install run test bench lint fuzz image clean

install: $(STAMP)

# The native core is compiled by the install (native/hatch_build.py) whenever cargo is there.
NATIVE_SOURCES := $(wildcard native/Cargo.toml native/Cargo.lock native/src/*.rs)

$(STAMP): pyproject.toml native/hatch_build.py $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(PY) -m collector serve $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Ingest throughput, a table that lives for days (maintenance on and off), ingest into object
# storage (moto's S3, Azurite) by 1 and 3 replicas, then the dashboard's page over a million
# rows a table: tables of figures, and JSON under benchmarks/results/. --quick: a few minutes.
bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)
	$(PY) -m benchmarks.longtable $(BENCH_ARGS)
	$(PY) -m benchmarks.objectstore $(BENCH_ARGS)
	$(PY) -m benchmarks.dashboard $(BENCH_ARGS)

# A long fuzzing run: hypothesis with a large budget, then atheris (coverage-guided).
fuzz: install
	$(PY) -m pip install --quiet -e '.[test,fuzz]'
	FUZZ_EXAMPLES=20000 $(PY) -m pytest tests/test_fuzz.py -q
	mkdir -p .fuzz-corpus
	$(PY) tests/fuzz_atheris.py -runs=$(FUZZ_RUNS) -max_len=262144 .fuzz-corpus

image: install
	rm -rf wheels
	$(PY) -m pip wheel --quiet . -w wheels
	$(IMAGE_BUILD) --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .
	rm -rf wheels

lint: install
	$(VENV)/bin/ruff check collector tests benchmarks native/hatch_build.py
	$(VENV)/bin/ruff format --check collector tests benchmarks native/hatch_build.py
	cd native && cargo fmt --check && cargo clippy --release --locked -- -D warnings

clean:
	rm -rf $(VENV) warehouse .pytest_cache .fuzz-corpus wheels
