# The two set-up commands: `make demo` and `make test`. Both create .venv if absent and install what they need:
# `make demo` the package with its data layer (`.[data]`), `make test` with the test tools too (`.[test]`), after the
# lint gate. The base install (`pip install .`) is inference, grading and re-ranking without TensorFlow.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_STAMP := $(VENV)/.mathft-data-installed
TEST_STAMP := $(VENV)/.mathft-test-installed

.PHONY: install demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is a CPU wheel on disk; letting pip resolve torch itself pulls gigabytes of CUDA.
$(DATA_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[data]'
	touch $(DATA_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(TEST_STAMP) $(DATA_STAMP)

install: $(TEST_STAMP)

demo: $(DATA_STAMP)
	$(PY) -m mathft_jax.demo

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check --no-cache .

test: lint
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs *.egg-info
