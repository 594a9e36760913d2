# The two quick-start commands: `make demo` and `make test`. Both create or reuse .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.arcmatch-installed
# torch is installed first and pinned: a plain `torch` requirement could pull any build. Override for
# another platform, e.g. `make TORCH="torch==2.9.1 torchvision==0.24.1" demo` on aarch64.
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# test processes (pytest-xdist): the suite mostly waits on Ray, servers and subprocesses, so three share 2 cores
# well; every test of the one Milvus server runs in one of them, every module's tests together (tests/conftest.py)
TEST_WORKERS ?= 3

CONTRACT_RUNS ?= 20
CONTRACT_EXAMPLES ?= 50

# the inner loop: the compute core, the store on Milvus Lite and the API's own tests, without the slow end-to-end
# runs and the Milvus server (under 3 minutes on 2 cores); `make test` runs everything. Two processes: these tests
# compute more than they wait, and each process collects them too (16 s of imports)
FAST_WORKERS ?= 2
FAST_TESTS ?= tests/common tests/embedder tests/indexer tests/k8s tests/trainer tests/jobs/test_settings.py \
	tests/jobs/test_audit.py tests/jobs/api/test_app.py tests/jobs/api/test_edge.py tests/deploy/test_prometheus_rules.py \
	tests/jobs/api/test_scopes.py tests/jobs/api/test_metrics.py tests/jobs/api/test_galleries.py \
	tests/arcmatch_client/test_client.py tests/arcmatch_client/test_models.py

.PHONY: setup demo test test-fast contract lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "arcmatch needs Python 3.10 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/arcmatch demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(FAST_WORKERS) -m "not slow and not disruptive" -k "not server" $(PYTEST_ARGS) $(FAST_TESTS)

# the API's contract test, long: CONTRACT_RUNS runs in a row, each a fresh draw of CONTRACT_EXAMPLES per operation
contract: $(STAMP)
	for run in $$(seq $(CONTRACT_RUNS)); do echo "contract run $$run of $(CONTRACT_RUNS)"; \
	    ARCMATCH_CONTRACT_SEED=random ARCMATCH_CONTRACT_EXAMPLES=$(CONTRACT_EXAMPLES) \
	    $(BIN)/python -m pytest -q -p no:cacheprovider tests/jobs/api/test_contract.py || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf demo-work runs .pytest_cache
