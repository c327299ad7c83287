# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# --no-compile: byte-code is written on first import instead, which halves set-up time.
PIP := $(PY) -m pip --disable-pip-version-check -q install --no-compile -c constraints.txt
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint clean

# The demo needs the runtime dependencies only; the test tools come on top of them.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP) -e ".[dev]"
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(PY) -m datadistill.demo

test: $(DEV_STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
