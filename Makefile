# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install tapewatch on first use (and again when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean browser

$(STAMP): pyproject.toml setup.py embedded_wheels.py tapewatch/_sides.c tapewatch/_native_lines.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tapewatch needs Python 3.11 or newer; set PYTHON=/path/to/python3.11")'
	@echo ">> creating $(VENV) and installing tapewatch (first run takes one to three minutes)"
	@# a venv whose creation failed half-way (no ensurepip: Debian's python3-venv missing) has a python and no pip
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } || { \
		rm -rf $(VENV); \
		echo ">> cannot create $(VENV) with $(PYTHON) -m venv (see above). On Debian/Ubuntu: apt-get install python3-venv"; \
		echo ">> (or python3.X-venv for your version), then run make again"; exit 1; }
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@rm -f tapewatch/_sides.*.so  # a C file that no longer compiles must not leave its old build in use
	@$(BIN)/python embedded_wheels.py pyproject.toml
	@$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]' | \
		grep --line-buffered -E '^(Collecting|Downloading|Installing|Successfully|ERROR)' ; \
		test $${PIPESTATUS[0]} -eq 0
	@$(BIN)/python -c 'from tapewatch import book_sides as s; print(">> native order-book sides: " + ("built" if s.NATIVE else "NOT built (no C compiler or Python headers: apt-get install gcc python3-dev); the pure-Python sides give the same results, slower"))'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tapewatch demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	@$(MAKE) --no-print-directory browser
	$(BIN)/pytest -n 3 --dist loadfile

# The dashboard's browser test drives headless Chromium through chromedriver (Debian's packages). Installed
# when missing and possible (root with apt); otherwise a clear message, and the test skips (it fails under CI).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo ">> installing chromium and chromium-driver for the dashboard's browser test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	else \
		echo ">> chromium/chromedriver are missing and cannot be installed here (needs root and apt-get):"; \
		echo ">> the dashboard's browser test will be skipped. Install them: apt-get install -y chromium chromium-driver"; \
	fi

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache build tapewatch/_sides.*.so
