# Two entry points (see README): `make demo` and `make test`. Both build a virtual environment in
# .venv from the repo's own files. Override PYTHON, TORCH_SPEC or VENV on the command line.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The real nvcc (a wrapper may sit first on PATH); setup.py reads CUDA_HOME.
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)

.PHONY: install demo test clean

# csrc/ in the prerequisites: editing a kernel rebuilds the extensions on the next make.
$(VENV)/.installed: setup.py Makefile $(shell find csrc -type f 2>/dev/null)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel ninja
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q --no-build-isolation -e ".[test,train]"
	$(PY) -m tks_kernels._ext  # which compiled kernels were built and load, and why not
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m tks_kernels.demo

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info tks_kernels/*.so tks_kernels/_build_info.json
