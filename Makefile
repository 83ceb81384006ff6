# The two commands on a fresh clone (POSIX make and python3 >= 3.10):
#
#   make demo    create .venv once, install fgssl with a torch for this machine, run the main job (fgssl-pretrain)
#   make test    the same set-up, then the test suite (python -m pytest -q tests)
#
# Which torch: TORCH_SPEC is the requirement (default: the tested torch==2.13.0), TORCH_INDEX an optional package
# index to take it from. Without TORCH_INDEX pip uses its configured index, where a plain `pip install torch` gives
# PyPI's default build: on Linux that is a multi-GB CUDA build (a local CPU wheel where the machine's pip config
# points at one, as on this project's development machines).
#
#   CPU-only machine:  make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu     (the small CPU-only wheel)
#   CUDA machine:      make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128   (pick your CUDA version)
#
# The set-up runs once (again when pyproject.toml changes); to switch torch builds: make clean-venv, then again.
# More arguments: make demo ARGS="configs/cub100_cpu.yaml --seed 1", make test ARGS="-k cli".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# Empty for a regular (non-editable) install, as .ci/run does.
EDITABLE ?= -e
ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.fgssl-installed

.PHONY: demo test venv clean-venv

demo: $(STAMP)
	$(BIN)/fgssl-pretrain $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests $(ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q $(EDITABLE) ".[dev]"
	touch $@

clean-venv:
	rm -rf $(VENV)
