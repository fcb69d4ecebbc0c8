# Quick start: `make demo` and `make test` on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
# torch is installed first and pinned, so no other request pulls a multi-GB CUDA build.
# Override for your machine, e.g. `make test TORCH="torch==2.5.1"`.
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DEPS   := $(VENV)/.deps-installed

.PHONY: venv install demo test test-fast lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Dependencies are reinstalled only when pyproject.toml changes.
$(DEPS): pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet ".[dev,sindy,minari,tensorboard,ray,mujoco]"
	touch $(DEPS)

venv: $(DEPS)

# A regular (non-editable) install of the working tree: a subpackage missing from
# pyproject.toml then fails the tests instead of hiding behind an editable install.
install: $(DEPS)
	$(PIP) install --quiet --no-deps --force-reinstall .
	rm -rf build *.egg-info

demo: install
	$(VENV)/bin/hybridgym demo --out runs/demo

# pytest through its script, not `python -m`, so the source tree is not on sys.path.
test: install
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

lint: $(DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEPS)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
