# Two commands on a fresh machine: `make run` (service on embedded defaults), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the dashboard's chart library, copied from npm at build time (api/dashboard/static/vendor is not committed)
UPLOT_VERSION := 1.6.32
VENDOR := api/dashboard/static/vendor
# /docs's Swagger UI, served from our own origin (never a CDN): copied from npm the same way
SWAGGER_UI_VERSION := 5.35.0
SWAGGER_UI := $(VENDOR)/swagger-ui

.PHONY: install vendor run test test-fast bench bench-quality clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build from local disk first; a bare `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	scripts/system-packages.sh
	touch $(STAMP)

install: $(STAMP) vendor

vendor:
	@if [ "$$(cat $(VENDOR)/VERSION 2>/dev/null)" != "uplot@$(UPLOT_VERSION)" ] || [ ! -f $(VENDOR)/uPlot.iife.min.js ] \
	    || [ ! -f $(VENDOR)/uPlot.min.css ]; then \
	  npm install --prefix build/npm --no-audit --no-fund --silent uplot@$(UPLOT_VERSION) \
	  && mkdir -p $(VENDOR) \
	  && cp build/npm/node_modules/uplot/dist/uPlot.iife.min.js build/npm/node_modules/uplot/dist/uPlot.min.css $(VENDOR)/ \
	  && echo "uplot@$(UPLOT_VERSION)" > $(VENDOR)/VERSION; \
	fi
	@if [ "$$(cat $(SWAGGER_UI)/VERSION 2>/dev/null)" != "swagger-ui-dist@$(SWAGGER_UI_VERSION)" ] \
	    || [ ! -f $(SWAGGER_UI)/swagger-ui-bundle.js ] || [ ! -f $(SWAGGER_UI)/swagger-ui.css ]; then \
	  npm install --prefix build/npm --no-audit --no-fund --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) \
	  && mkdir -p $(SWAGGER_UI) \
	  && cp build/npm/node_modules/swagger-ui-dist/swagger-ui-bundle.js build/npm/node_modules/swagger-ui-dist/swagger-ui.css $(SWAGGER_UI)/ \
	  && echo "swagger-ui-dist@$(SWAGGER_UI_VERSION)" > $(SWAGGER_UI)/VERSION; \
	fi

run: install
	$(BIN)/xmodal up

# a service, browser or data package that a test needs and cannot reach fails the run (tests/services.py)
test: install
	scripts/services.sh
	XMODAL_TEST_REQUIRE_SERVICES=1 $(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

bench: install
	scripts/services.sh
	$(BIN)/python bench/otdd.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/mona_cost.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/request_cpu.py
	$(BIN)/python bench/get_paths.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/upload.py
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/upload.py --store s3
	$(BIN)/python bench/load.py

# hours on a CPU: every method on five datasets with minilm-l6 (meant for a GPU machine)
bench-quality: install
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) var .pytest_cache build/npm $(VENDOR)
