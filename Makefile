# The README's two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick mrtrix bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build on local disk, never a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/shdeconv demo -o demo_out --force

# MRtrix3 (the peer tool the frame tests read our files with): Debian's package where this
# machine can install it; elsewhere those tests are skipped, except in CI (CI=true) where they fail.
mrtrix:
	@if command -v dwi2fod >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing MRtrix3 (apt-get install mrtrix3)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mrtrix3 >/dev/null || \
		echo "MRtrix3 could not be installed: its tests will be skipped (failed in CI)"; \
	else echo "MRtrix3 not installed and not installable here: its tests will be skipped"; fi

# everything, as CI runs it
test: $(STAMP) mrtrix
	$(BIN)/python -m pytest -q

# the edit loop: everything but the tests marked slow (about a minute)
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/layer_speed.py

clean:
	rm -rf $(VENV) demo_out bench_out
