# mattepipe — every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: install browser run demo lint test gpu-test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c "import pymatting"  # compiles and caches pymatting's numba kernels once
	touch $(STAMP)

run: install
	$(VENV)/bin/mattepipe stack

demo: install
	$(VENV)/bin/mattepipe demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Headless Chromium for the page tests (Debian's package; Playwright never downloads one).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium)) || \
	  echo "warning: no chromium and no apt-get to install it: the browser tests will skip"

test: lint browser
	$(PY) -m pytest -q -rs -p no:cacheprovider

# The CUDA tests alone (they skip without a GPU; `make test` runs them too).
gpu-test: install
	$(PY) -m pytest -q -p no:cacheprovider -m gpu tests/matting_worker

# rembg in its own venv: the bench runs it side by side with mattepipe (BENCHMARKS.md).
REMBG_VENV := bench/.venv-rembg
REMBG_VERSION := 2.0.86

$(REMBG_VENV)/.installed:
	test -x $(REMBG_VENV)/bin/python || $(PYTHON) -m venv $(REMBG_VENV)
	$(REMBG_VENV)/bin/pip install -q "rembg[cpu]==$(REMBG_VERSION)"
	touch $@

bench: install $(REMBG_VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
