# paysys developer entry points. `make dev` runs the system; `make test` runs every check.
# Everything installs from the repo and the package registries alone (no interpreter downloads).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PAYSYS := $(VENV)/bin/paysys
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

.PHONY: install browser dev test lint fmt typecheck bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) venv --allow-existing --python python3 $(VENV)
	$(UV) pip sync --python $(PY) requirements.lock
	$(UV) pip install --python $(PY) --no-deps -e .
	@touch $@

dev: install
	$(PAYSYS) infra start
	$(PAYSYS) setup
	$(PAYSYS) dev

# The studio's browser test drives Debian's chromium (playwright's own browser downloads are
# not used): installed here when missing, as root (CI), else the command to run is printed.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium is missing: run 'sudo apt-get install -y chromium'" >&2; exit 1; \
	  fi; }

test: install browser
	$(PAYSYS) infra start
	$(MAKE) --no-print-directory lint typecheck
	$(PY) -m pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=90

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

fmt: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

typecheck: install
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage* htmlcov dist build
