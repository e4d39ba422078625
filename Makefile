# Two commands on a fresh machine: `make run` (service on embedded defaults), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast bench bench-quality clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build from local disk first; a bare `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	scripts/system-packages.sh
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/xmodal up

test: install
	scripts/services.sh
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

bench: install
	scripts/services.sh
	$(BIN)/python bench/otdd.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/mona_cost.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/upload.py

# hours on a CPU: every method on five datasets with minilm-l6 (meant for a GPU machine)
bench-quality: install
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) var .pytest_cache
