# Idempotent set-up and the two things a person wants: run the service, run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
APT_TEST_PACKAGES := openssl postgresql swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc nginx-light iproute2 procps

.PHONY: run test lint unit integration bench apt postgres clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Tests also need the agent's TPM bindings, which build against the TSS headers from apt.
$(TEST_STAMP): $(STAMP) | apt
	$(BIN)/python -m pip install --quiet -e '.[dev,agent]'
	touch $(TEST_STAMP)

# The embedded default: SQLite + file keys under ./data, no other server.
run: $(STAMP)
	$(BIN)/weighstation serve

apt:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

postgres: apt
	bash .ci/postgres.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(TEST_STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(TEST_STAMP) postgres
	$(BIN)/pytest -q tests/integration

# The whole suite: set-up, static checks (ruff, mypy --strict, import contract), then every test.
test: $(TEST_STAMP) postgres lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.issuance

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
