# Two commands on a fresh machine (each installs what it needs into .venv):
#   make demo   - walk the guide end to end on the embedded server (or MONGODB_URI)
#   make test   - the whole test suite (embedded server unless MONGODB_URI is set)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-embedded
	$(PY) -m loom_frames demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	$(PY) bench/bench_expr_compile.py
	$(PY) bench/bench_query.py
	$(PY) bench/bench_scan.py
	$(PY) bench/bench_read.py
	$(PY) bench/bench_upsert.py
	$(PY) bench/bench_dask.py
	$(PY) bench/bench_tpch.py

clean:
	rm -rf $(VENV) .loom .pytest_cache .hypothesis
