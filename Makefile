# tradeloop: `make help` lists the targets.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
PYTEST_ARGS ?=
PYTHON ?= $(BIN)/python
# The release gate: what CI runs before it publishes (.github/workflows/train.yml).
RELEASE_TESTS := tests/infra/contracts tests/trader/delivery tests/training/test_training_workflow.py \
	tests/streams/test_changelog_security.py tests/infra/test_bus_security.py tests/infra/test_settings.py
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-release docs lint fmt typecheck bench bench-smoke soak stack-up stack-down schemas clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## Create .venv and install tradeloop with every extra (CPU torch)

demo: venv ## Run the whole loop end to end on the embedded stack
	$(BIN)/tradeloop demo

test: venv ## Run the whole suite against real services (Tansu, moto S3, Redis)
	@# the console's browser tests drive Debian's chromium (Playwright cannot download one here)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-release: ## The fast release gate CI runs before publishing (PYTHON=python in CI)
	$(PYTHON) -m pytest -q -m "not slow" $(RELEASE_TESTS)

docs: venv ## Build the documentation site strict into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

lint: venv ## ruff lint + format check and mypy on the packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## Run every benchmark; write bench/results.json and bench/RESULTS.md
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-smoke: venv ## Run the benchmarks on tiny workloads (harness check)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

soak: venv ## Soak the loop under random faults (SOAK_MINUTES, SOAK_SEED, SOAK_RUNS); records bench/RESULTS.md
	SOAK_RECORD=$${SOAK_RECORD:-1} $(BIN)/python -m bench.soak

schemas: venv ## Write JSON Schema of every event contract to docs/events/
	$(BIN)/tradeloop events schema

stack-up: venv ## Start the embedded broker and S3
	$(BIN)/tradeloop stack up --s3

stack-down: venv ## Stop what stack-up started
	$(BIN)/tradeloop stack down

clean: ## Remove caches and local state (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .tradeloop bench/out
