# The two commands of the README: `make bench` (the main job) and `make test`.
THREADS ?= 2
VENV := .venv/bin

.PHONY: setup bench test
setup:
	@scripts/setup.sh

bench: setup
	$(VENV)/gconvgen bench --suite public --target host --threads $(THREADS) --json bench.json

test: setup
	$(VENV)/python -m pytest -q tests
