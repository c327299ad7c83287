# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# --no-compile: byte-code is written on first import instead, which halves set-up time.
PIP := $(PY) -m pip --disable-pip-version-check -q install --no-compile -c constraints.txt
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-lowest lint clean

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

# The suite against the lowest dependency versions pyproject.toml allows, in a venv of its
# own (the package installed editable, as for `make test`).
test-lowest:
	test -x .venv-lowest/bin/python || $(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip --disable-pip-version-check -q install --no-compile \
		-c constraints-lowest.txt -e . pytest
	.venv-lowest/bin/python -m pytest -p no:cacheprovider

lint: $(DEV_STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src

clean:
	rm -rf $(VENV) .venv-lowest runs .pytest_cache .mypy_cache .ruff_cache
