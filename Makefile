# Two commands for learners and instructors: `make lab` and `make test` (see README "Setup").
# Needs GNU make and python3 >= 3.11; everything else goes into .venv.

PYTHON ?= python3
VENV ?= .venv
# Extra pip arguments for the first install, e.g. on Linux, to get the CPU-only torch build:
#   make lab PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=
LAB_ARGS ?=
TRAIN_ARGS ?=
# BROWSER=0 leaves out the browser tests (every notebook run in JupyterLab in headless
# Chromium, tests/browser); everything else still runs. CHROMIUM=/path picks another
# Chromium or Chrome than Debian's /usr/bin/chromium.
BROWSER ?= 1
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM

VENV_PY := $(VENV)/bin/python
# Written after a successful install; older than requirements.txt or pyproject.toml means
# the environment is out of date.
STAMP := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

.DEFAULT_GOAL := help
.PHONY: help setup lab test unit nbval browser lint train execute times binder-url clean

help:
	@echo "make lab     set up .venv if needed, then open notebooks/00_start_here.ipynb in JupyterLab"
	@echo "make test    set up .venv if needed, then lint, unit tests and nbval over the notebooks"
	@echo "make setup   create .venv and install requirements.txt and lessonlib (editable)"
	@echo "make unit    unit tests only (tests/)"
	@echo "make nbval   re-run every notebook and compare with its saved outputs"
	@echo "make browser run every notebook in JupyterLab in headless Chromium (BROWSER=0 skips it)"
	@echo "make lint    ruff check and ruff format --check"
	@echo "make train   train the TinyTales model (python -m lessonlib.train \$$TRAIN_ARGS)"
	@echo "make execute re-run notebooks in place and save their outputs (NOTEBOOK=path for one)"
	@echo "make times   each notebook's measured study time (main path, going deeper)"
	@echo "make binder-url  the Binder launch link of this clone's GitHub remote 'origin'"
	@echo "make clean   remove .venv and caches"
	@echo "Variables: PYTHON=$(PYTHON) PIP_ARGS=$(PIP_ARGS) LAB_ARGS=$(LAB_ARGS) BROWSER=$(BROWSER) CHROMIUM=$(CHROMIUM)"

$(VENV_PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "error: this course needs Python 3.11 or newer to create $(VENV)."; \
		echo "  '$(PYTHON)' is: $$($(PYTHON) --version 2>/dev/null || echo 'not found')"; \
		echo "  Install Python >= 3.11, or name one: make PYTHON=python3.12 $(MAKECMDGOALS)"; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install $(PIP_ARGS) -r requirements.txt
	$(VENV_PY) -m pip install $(PIP_ARGS) --no-deps -e .
	@touch $@

setup: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_ARGS) notebooks/00_start_here.ipynb

test: lint unit nbval browser

unit: $(STAMP)
	$(VENV_PY) -m pytest -m "not browser" tests

# Every notebook in notebooks/ opened in a real JupyterLab in headless Chromium, run, checked
# for errors and broken widgets, its widgets driven; screenshots go to screenshots/.
# A missing Chromium fails (CI has one); BROWSER=0 leaves the step out on purpose.
browser: $(STAMP)
ifeq ($(BROWSER),0)
	@echo "browser: left out (BROWSER=0): the notebooks were NOT run in a real browser"
else
	@test -x "$(CHROMIUM)" || { \
		echo "error: the browser tests need Chromium, and $(CHROMIUM) does not exist."; \
		echo "  Install it:   sudo apt-get install chromium   (Debian and Ubuntu)"; \
		echo "  Or name one:  make test CHROMIUM=/path/to/chromium-or-chrome"; \
		echo "  Or skip them: make test BROWSER=0   (lint, unit tests and nbval still run)"; \
		exit 1; }
	$(VENV_PY) -m pytest -m browser -p no:cacheprovider tests/browser
endif

# Strict nbval: every saved output is compared, after tests/nbval_sanitize.cfg masks
# timings and memory addresses. Skipped while notebooks/ has no notebook, since pytest
# exits 5 ("no tests collected") on an empty folder.
nbval: $(STAMP)
ifneq ($(NOTEBOOKS),)
	$(VENV_PY) -m pytest --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider notebooks/
else
	@echo "nbval: no notebooks/*.ipynb yet, nothing to check"
endif

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

train: $(STAMP)
	$(VENV_PY) -m lessonlib.train $(TRAIN_ARGS)

# Authors: re-execute notebooks in place, as they are committed (outputs, widget state and the
# cell timings that `make times` reads). One notebook: make execute NOTEBOOK=notebooks/04_nucleus.ipynb
execute: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=600 $(or $(NOTEBOOK),$(NOTEBOOKS))

times: $(STAMP)
	$(VENV_PY) -m lessonlib.teaching.study_time

# The Binder link of a published copy, from the GitHub remote 'origin' (https or ssh form).
binder-url:
	@remote=$$(git remote get-url origin 2>/dev/null) || { \
		echo "error: this clone has no git remote 'origin'; publish it on GitHub first,"; \
		echo "  then: git remote add origin https://github.com/OWNER/REPO.git"; exit 1; }; \
	repo=$$(printf '%s\n' "$$remote" | sed -nE \
		-e 's#^(https://|ssh://git@|git@)github\.com[:/]([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)$$#\2#p' \
		| sed -e 's#\.git$$##'); \
	[ -n "$$repo" ] || { \
		echo "error: remote 'origin' is $$remote, not a GitHub repository;"; \
		echo "  Binder's link needs github.com/OWNER/REPO (https or ssh)"; exit 1; }; \
	echo "https://mybinder.org/v2/gh/$$repo/HEAD?labpath=notebooks/00_start_here.ipynb"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build dist *.egg-info screenshots
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
