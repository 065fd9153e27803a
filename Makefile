# Idempotent set-up and the two things a person wants: run the service, run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_TEST_PACKAGES := openssl postgresql swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc

.PHONY: run test lint unit integration bench apt postgres clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The embedded default: SQLite + file keys under ./data, no other server.
run: $(STAMP)
	$(BIN)/weighstation serve

apt:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

postgres: apt
	bash .ci/postgres.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) postgres
	$(BIN)/pytest -q tests/integration

# The whole suite: set-up, static checks (ruff, mypy --strict, import contract), then every test.
test: $(STAMP) postgres lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.issuance

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
