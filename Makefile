# Everyday tasks. `make test` is the README's test command and what .ci/run calls.
PYTHON ?= python3

.PHONY: install test unit instrumentation lint rules-test dashboards bench demo

install:
	$(PYTHON) -m pip install -q -e '.[test]'

test: install unit instrumentation

unit:
	$(PYTHON) -m pytest -q --ignore=tests/instrumentation

instrumentation:
	bash .ci/instrumentation.sh

lint: install
	$(PYTHON) -m ruff check .

rules-test:
	$(PYTHON) prometheus/build_rules.py --check
	promtool check rules prometheus/rules/*.yml
	promtool test rules prometheus/tests/*.yml

dashboards:
	$(PYTHON) grafana/build_dashboards.py

bench: install
	$(PYTHON) benchmarks/processor_overhead.py
	$(PYTHON) benchmarks/ingest.py throughput
	$(PYTHON) benchmarks/ingest.py metrics

demo: install
	llm-token-exporter demo
