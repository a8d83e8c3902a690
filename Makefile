# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
DATA_DIR ?= var
PROTOS := $(wildcard proto/vault/v1/*.proto)

.PHONY: run test deps lint typecheck buf-lint pytest clients proto bench bench-smoke clean venv dev fuzz

# Runtime venv (no dev tools): enough for `make run`.
$(BIN)/vaultctl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Dev extras on top.
$(VENV)/.dev: pyproject.toml $(BIN)/vaultctl
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/vaultctl
dev: $(VENV)/.dev

# Every npm tool in one install (a later `npm install --no-save` would prune the others):
# buf, and for the TypeScript client (buf.gen.yaml) ts-proto, @grpc/grpc-js and tsx.
NPM_TOOLS := @bufbuild/buf@$(BUF_VERSION) ts-proto@2.18.0 @grpc/grpc-js@1.14.7 tsx@4.23.15
NPM_STAMP := $(TOOLS)/.npm-$(shell echo '$(NPM_TOOLS)' | md5sum | cut -c1-12)

$(NPM_STAMP):
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-save --no-audit --no-fund --loglevel=error $(NPM_TOOLS)
	rm -f $(TOOLS)/.npm-*
	touch $@

$(BUF): $(NPM_STAMP)

# TypeScript (examples/node-checkout/gen) and Go (gen/go) clients from proto/: generated,
# never committed; tests/examples runs the Node checkout against a real server.
clients: $(NPM_STAMP)
	$(BUF) generate

run: venv
	@echo "Starting the vault in dev mode: gRPC on 127.0.0.1:50051, HTTP/JSON on 127.0.0.1:8080, metrics on 127.0.0.1:9464, data in ./$(DATA_DIR)"
	@echo "Call it with the key in ./$(DATA_DIR)/dev-api-key, e.g.:"
	@echo "  buf curl --protocol grpc --http2-prior-knowledge -H \"authorization: Bearer \$$(cat $(DATA_DIR)/dev-api-key)\" \\"
	@echo "    -d '{\"kind\":\"DATA_KIND_PAN\",\"text\":\"4242424242424242\"}' http://127.0.0.1:50051/vault.v1.TokenService/Tokenize"
	$(BIN)/vaultctl serve --dev --data-dir $(DATA_DIR) --listen 127.0.0.1:50051 --metrics-listen 127.0.0.1:9464 --http-listen 127.0.0.1:8080

lint: dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: dev
	$(BIN)/mypy

buf-lint: $(BUF)
	cd proto && ../$(BUF) lint

pytest: dev $(NPM_STAMP)
	PATH="$(CURDIR)/$(TOOLS)/node_modules/.bin:$$PATH" $(BIN)/python -m pytest -q

# The Debian packages the tests need (SoftHSM2, promtool, PostgreSQL's server binaries):
# installed when missing and root, else one line naming them and a failure (.ci/deps.sh).
deps:
	@bash .ci/deps.sh

# With CI=true a missing SoftHSM2, promtool, PostgreSQL or buf fails its tests instead of
# skipping them: `make test` runs every test or says why not.
test: export CI := true
test: deps lint typecheck buf-lint pytest

# Regenerate the committed code in src/vault/v1 (the tests check it matches).
proto: dev
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src $(PROTOS)

# The fuzzing campaign at length (tests/fuzz: hypothesis with many examples and a fresh
# seed, atheris with 2M runs); `make test` runs the same tests on a fixed, short budget.
fuzz: dev
	VAULT_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

bench: dev
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/run.py --full

bench-smoke: dev
	$(BIN)/python bench/run.py --smoke

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
