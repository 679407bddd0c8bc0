# Everyday tasks. `make test` is the README's test command and what .ci/run calls.
PYTHON ?= python3

.PHONY: install test unit instrumentation lint bench demo

install:
	$(PYTHON) -m pip install -q -e '.[test]'

test: install unit instrumentation

unit:
	$(PYTHON) -m pytest -q --ignore=tests/instrumentation

instrumentation:
	bash .ci/instrumentation.sh

lint: install
	$(PYTHON) -m ruff check .

bench: install
	$(PYTHON) benchmarks/processor_overhead.py

demo: install
	llm-token-exporter demo
