# make test: create or refresh .venv, install mixsweep with its test extras, run the tests.
# make demo: the same install, then the main job: the smoke sweep on synthetic data and its report.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# These two install from local disk on the project's machines; other versions download gigabytes.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.mixsweep-installed
PYTEST_ARGS ?=

.PHONY: install test demo bench-data clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/mixsweep demo --spec sweeps/smoke.yaml

bench-data: $(STAMP)
	$(BIN)/python benchmarks/data_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
