# The interface to the project: `make run`, `make test`, `make lint`.
# Everything is installed into .venv from requirements.txt on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format clean bench dist soak

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Set up and serve the demo on http://127.0.0.1:8000 (SQLite; in-memory layer unless REDIS_URL is set).
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

## Lint, then the whole suite (starts its own Redis and server processes).
test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Every benchmark scenario against realtime and its baselines (needs Node 18+); writes docs/performance.md.
bench: install
	$(BIN)/python bench/run.py

## The sdist and the wheel of django-realtime-channels, into dist/ (built with the pinned setuptools).
dist: install
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

## Ten minutes of connection churn and publishing with one Redis restart: nothing lost, RSS flat (SOAK_MINUTES=10).
soak: install
	$(BIN)/python bench/soak.py --minutes $(or $(SOAK_MINUTES),10)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .coverage htmlcov test-artifacts dist build *.egg-info
