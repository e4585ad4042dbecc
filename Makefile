# The two commands of the README: `make bench` (the main job) and `make test`.
THREADS ?=
TRIALS ?= 0
# pytest-xdist processes for `make test` (0: one process): most of a test's time is single-threaded compiling
WORKERS ?= 2
VENV := .venv/bin

.PHONY: setup bench test
setup:
	@scripts/setup.sh

bench: setup
	@if [ "$(TRIALS)" != "0" ]; then $(VENV)/gconvgen tune --suite public --target host --trials $(TRIALS); fi
	$(VENV)/gconvgen bench --suite public --target host $(if $(THREADS),--threads $(THREADS)) --compile --json bench.json --plot bench.png
	$(VENV)/gconvgen bench --model mobilenet_v2,shufflenet_v1,shufflenet_v2,efficientnet_b0,convnext_tiny $(if $(THREADS),--threads $(THREADS)) --compile

test: setup
	$(VENV)/python -m pytest -q -n $(WORKERS) --dist worksteal tests
