# Experiment Desk. `make run` serves the dashboard; `make test` lints and tests.
# Both set themselves up from a fresh clone: find Python 3.12+, make .venv, install.
# Sign-in settings (OIDC_*, DJANGO_PASSWORD_LOGIN, ...) reach `make run` from the environment
# or the command line: make run OIDC_ISSUER_URL=https://id.example.com OIDC_CLIENT_ID=...
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 8000
STANDIN_PORT ?= 8765
VENV := .venv
PY := $(VENV)/bin/python

# First Python >= 3.12 found on PATH, then in ~/.pyenv/versions.
PYTHON ?= $(shell for p in python3.13 python3.12 python3 $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { command -v $$p; break; }; \
	done)

.PHONY: help run serve test lint format bench screenshots clean

help:
	@echo "make run    - the dashboard at http://127.0.0.1:$(PORT) (with a local Mixpanel stand-in unless credentials are set)"
	@echo "make serve  - production mode on PORT: checks, migrations, static files, gunicorn and the task worker"
	@echo "make test   - lint (ruff) and the whole test suite"
	@echo "make bench  - benchmarks (QUICK=1 for a short run, ONLY=B1,B4 for some)"
	@echo "make screenshots - the README's tour, into docs/screenshots/ (needs /usr/bin/chromium)"

$(VENV)/.stamp-base: requirements.txt
	@if [ -z "$(PYTHON)" ]; then echo "Experiment Desk needs Python 3.12 or newer (python3.13, python3.12, python3 on PATH, or ~/.pyenv/versions/3.12+). None was found." >&2; exit 1; fi
	@test -x $(PY) || { echo "Creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# The stand-in (without credentials) and the task worker run beside the server; the
# trap stops them when the server stops, however it stops. With the stand-in, shorter
# deadlines (5 s a read, 10 s the PUT) bound how long an attempt's PUT may be in flight,
# so the worker resolves a demo fault's unknown outcome within a minute (5 + 10 + the
# 30 s margin, then the worker's 1 s poll and the page's 3 s one); real Mixpanel keeps
# the defaults.
run: $(VENV)/.stamp-base
	@export DJANGO_DEBUG=$${DJANGO_DEBUG:-1} DESK_BASE_URL=$${DESK_BASE_URL:-http://127.0.0.1:$(PORT)}; \
	export PROMETHEUS_MULTIPROC_DIR=$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/.run/metrics}; \
	mkdir -p "$$PROMETHEUS_MULTIPROC_DIR" && rm -f "$$PROMETHEUS_MULTIPROC_DIR"/*.db; \
	$(PY) manage.py migrate --noinput -v 0 || exit 1; \
	pids=""; trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	if [ -z "$$MIXPANEL_SERVICE_ACCOUNT_USERNAME$$MIXPANEL_SERVICE_ACCOUNT_USERNAME_FILE" ]; then \
	  echo "No Mixpanel credentials set: starting the local Mixpanel stand-in on 127.0.0.1:$(STANDIN_PORT) with demo data."; \
	  export MIXPANEL_API_BASE_URL=http://127.0.0.1:$(STANDIN_PORT) MIXPANEL_SERVICE_ACCOUNT_USERNAME=demo.stand-in MIXPANEL_SERVICE_ACCOUNT_SECRET=demo-stand-in-not-a-secret; \
	  export MIXPANEL_DEADLINE=$${MIXPANEL_DEADLINE:-5} MIXPANEL_WRITE_DEADLINE=$${MIXPANEL_WRITE_DEADLINE:-10}; \
	  $(PY) manage.py mixpanel_standin --port $(STANDIN_PORT) & pids="$$pids $$!"; \
	  $(PY) manage.py seed_demo || exit 1; \
	else \
	  $(PY) manage.py bootstrap_dev || exit 1; \
	fi; \
	echo "Starting the task workers (manage.py db_worker): one reconciles open force-conclude attempts, one sends notifications."; \
	$(PY) manage.py db_worker --no-reload & pids="$$pids $$!"; \
	$(PY) manage.py db_worker --no-reload --queue-name notifications & pids="$$pids $$!"; \
	if [ -n "$$OIDC_ISSUER_URL" ]; then \
	  echo "Single sign-on through $$OIDC_ISSUER_URL (client $$OIDC_CLIENT_ID); the provider must allow the redirect URI http://127.0.0.1:$(PORT)/accounts/sso/callback/"; \
	fi; \
	echo "Serving http://127.0.0.1:$(PORT) (Ctrl-C stops)"; \
	$(PY) manage.py runserver 127.0.0.1:$(PORT)

# Production mode: see bin/serve and the README's "Deploying".
serve: $(VENV)/.stamp-base
	@PORT=$(PORT) PYTHON=$(PY) bin/serve

# A throwaway database, the stand-in and a server of their own; see tests/screenshots.py.
screenshots: $(VENV)/.stamp-dev
	$(PY) -m tests.screenshots

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.stamp-dev
	$(PY) -m tests.bench.run $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .bench staticfiles
