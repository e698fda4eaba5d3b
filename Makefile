# The two set-up commands: `make demo` and `make test`. Both create .venv if absent and install the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mathft-installed

.PHONY: install demo test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is a CPU wheel on disk; letting pip resolve torch itself pulls gigabytes of CUDA.
$(STAMP): setup.py | $(PY)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m mathft_jax.demo

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs *.egg-info
