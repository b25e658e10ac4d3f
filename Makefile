# Every target sets up what it needs on a fresh machine: `make run` and `make test` are enough.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
PROTOS := $(wildcard protos/seekwire/v1/*.proto)

.PHONY: install tools gen check-gen lint test run bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $(BUF)

install: $(STAMP)

tools: $(BUF)

gen: $(STAMP)
	rm -rf gen/seekwire
	mkdir -p gen
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=gen --grpc_python_out=gen \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=gen \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=gen \
	  $(PROTOS)
	touch gen/seekwire/v1/py.typed

# Fails when the committed gen/ differs from what the protos generate.
check-gen: $(STAMP)
	@tmp=$$(mktemp -d) && cp -r gen "$$tmp/committed" && \
	{ $(MAKE) --no-print-directory gen >"$$tmp/log" 2>&1 || { cat "$$tmp/log"; exit 1; }; } && \
	if ! diff -r "$$tmp/committed" gen >/dev/null; then \
	  diff -r "$$tmp/committed" gen | head -20; echo "gen/ is stale: run 'make gen' and commit"; exit 1; fi

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check server client tests bench
	$(BIN)/ruff format --check server client tests bench
	$(BIN)/mypy
	cd protos && ../$(BUF) lint
	@if git rev-parse --verify --quiet main >/dev/null; then \
	  cd protos && ../$(BUF) breaking --against '../.git#branch=main,subdir=protos'; fi

test: $(STAMP) check-gen lint
	$(BIN)/python -m pytest -q

run: $(STAMP)
	@echo "Auth is on. Mint a key for the demo in another terminal:"
	@echo "  export SEEKWIRE_API_KEY=\$$(.venv/bin/seekwire keys create --name demo)"
	@echo "then: .venv/bin/seekwire chat Hello   (or buf curl -H \"x-api-key: \$$SEEKWIRE_API_KEY\" ...)"
	@if [ -z "$$DEEPSEEK_API_KEY" ]; then echo "No DEEPSEEK_API_KEY: serving on the embedded fake DeepSeek."; \
	  exec $(BIN)/seekwire serve --fake-upstream; else exec $(BIN)/seekwire serve; fi

bench: $(STAMP)
	$(BIN)/pip install --quiet matplotlib
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
