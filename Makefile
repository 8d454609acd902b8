# make test: create or refresh .venv, install mixsweep with its test extras (and sshd + rsync for the
# launcher test), run the tests.
# make demo: the same install, then the main job: the demo study (planted world) on synthetic data and its report.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# These two install from local disk on the project's machines; other versions download gigabytes.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.mixsweep-installed
PYTEST_ARGS ?=

.PHONY: install system-deps test demo bench-data clean

# The launcher test (tests/test_launcher.py) brings a cluster up with `ray up` over SSH on 127.0.0.1: it
# needs Debian's openssh-server and rsync. Installed here when missing and we may (root with apt-get).
system-deps:
	@if [ -x /usr/sbin/sshd ] && command -v rsync >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing openssh-server and rsync for the launcher test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			openssh-server rsync >/dev/null; \
	else echo "note: no openssh-server/rsync and no root: tests/test_launcher.py will be skipped"; fi

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(STAMP)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/mixsweep demo

bench-data: $(STAMP)
	$(BIN)/python benchmarks/data_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
