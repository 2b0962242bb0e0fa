# make search SPACE=lr_wd   |   make test   |   make ui   |   make bench
# The first target run creates .venv and installs the project; nothing else is needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU wheel on this machine; a GPU host keeps the torch it has (any 2.x satisfies the project).
TORCH ?= torch==2.13.0

SPACE ?= lr_wd
HOST ?= 127.0.0.1
PORT ?= 5000
DASHBOARD_PORT ?= 8080

# RAY_ADDRESS reaches hpo as the variable it reads (make exports those given on its command line):
# as a flag, one exported for another tool (`ray job submit`) was refused by the optuna driver.
SEARCH_ARGS := $(if $(STRATEGY),--strategy $(STRATEGY)) $(if $(TRIALS),--trials $(TRIALS)) \
	$(if $(OBJECTIVE),--objective $(OBJECTIVE)) $(if $(PRUNER),--pruner $(PRUNER)) \
	$(if $(DRIVER),--driver $(DRIVER)) $(if $(SEED),--seed $(SEED)) \
	$(if $(STORAGE),--storage $(STORAGE)) $(if $(TRACKING_URI),--tracking-uri $(TRACKING_URI)) \
	$(if $(GPUS_PER_TRIAL),--gpus-per-trial $(GPUS_PER_TRIAL)) \
	$(if $(CPUS_PER_TRIAL),--cpus-per-trial $(CPUS_PER_TRIAL)) $(if $(WORKERS),--workers $(WORKERS)) \
	$(if $(GPUS),--gpus $(GPUS)) $(if $(TRIALS_PER_GPU),--trials-per-gpu $(TRIALS_PER_GPU)) \
	$(if $(POPULATION),--population $(POPULATION)) $(if $(TIMEOUT),--timeout $(TIMEOUT))

# A variable given on the command line close to one this Makefile reads is a misspelling, refused in
# one line (`make search TRIAL=10` ran the default 40 trials, without a word); any other is left to
# the tools, as the environment variable make exports.
READ_VARS := PYTHON VENV BIN STAMP TORCH SPACE HOST PORT DASHBOARD_PORT STRATEGY TRIALS OBJECTIVE PRUNER DRIVER \
	SEED STORAGE TRACKING_URI GPUS_PER_TRIAL CPUS_PER_TRIAL WORKERS GPUS TRIALS_PER_GPU POPULATION TIMEOUT \
	RAY_ADDRESS STUDY TEST_WORKERS PYTEST_ARGS SEARCH_ARGS
UNREAD_VARS := $(filter-out $(READ_VARS),$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
ifneq ($(UNREAD_VARS),)
MISSPELT := $(shell $(PYTHON) -c "import difflib, sys; read = sys.argv[1].split(); \
	print(next((f'{v} is not a variable of this Makefile (did you mean {m[0]}?)' for v in sys.argv[2:] \
	if (m := difflib.get_close_matches(v, read, n=1, cutoff=0.75))), ''))" "$(READ_VARS)" $(UNREAD_VARS))
ifneq ($(MISSPELT),)
$(error $(MISSPELT))
endif
endif

.PHONY: install postgresql chromium search report dashboard test lint ui bench bench-gpu bench-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[test]'
	touch $@

search: $(STAMP)
	HPO_UI_URL=http://$(HOST):$(PORT) $(BIN)/hpo search $(SPACE) $(SEARCH_ARGS)

# hpo report STUDY: the search report (plots, leaderboard, one HTML page) from the study alone.
report: $(STAMP)
	$(BIN)/hpo report $(or $(STUDY),$(SPACE)) $(if $(STORAGE),--storage $(STORAGE))

# optuna-dashboard on the study storage: live plots of every study, on http://$(HOST):$(DASHBOARD_PORT)
dashboard: $(STAMP)
	@$(call port_free,$(HOST),$(DASHBOARD_PORT),dashboard,DASHBOARD_PORT)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[dashboard]'
	$(BIN)/optuna-dashboard $(or $(STORAGE),sqlite:///$(CURDIR)/.hpo/optuna.db) --host $(HOST) --port $(DASHBOARD_PORT)

# Three test processes on two cores, the Ray tests on one of them (tests/conftest.py): the suite is
# CPU-bound, and three beat two (670 s) and four (809 s) on the AMD host (docs/benchmarks.md).
TEST_WORKERS ?= 3

test: $(STAMP) postgresql chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hpo objectives bench tests
	$(BIN)/lint-imports

# The tests start their own PostgreSQL server on loopback (tests/conftest.py); this only
# makes sure its programs are installed.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The browser tests drive Debian's Chromium with Playwright (its own browser download needs the internet).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# A UI whose port is taken says so in one line (mlflow ui logs the error among its INFO lines, and exits 0).
port_free = $(BIN)/python -c "import socket, sys; taken = socket.socket().connect_ex(('$(1)', $(2))) == 0; \
	sys.exit('make $(3): $(1):$(2) is taken (is the UI already running there?); name another port: $(4)=...') if taken else None"

# One web worker and no MLflow job runner (hpo runs no MLflow jobs): the UI answers in 6 s
# instead of 13, in 2 processes and 0.5 GiB instead of 15 and 2.8 GiB (docs/benchmarks.md).
ui: $(STAMP)
	@$(call port_free,$(HOST),$(PORT),ui,PORT)
	mkdir -p .hpo
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.hpo/mlflow.db \
		--default-artifact-root $(CURDIR)/.hpo/mlartifacts --host $(HOST) --port $(PORT) --workers 1

bench: $(STAMP)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/planning.py
	$(BIN)/python bench/claiming.py
	$(BIN)/python bench/ray_overhead.py
	$(BIN)/python bench/population.py --objective mnist1d_mlp
	$(BIN)/python bench/population.py --objective mnist1d_cnn
	$(BIN)/python bench/shared_cores.py
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then $(MAKE) bench-gpu; \
		else echo "no CUDA GPU here: GPU throughput (make bench-gpu) not measured"; fi

# Strategies on the public HPOLib tables (minutes), then strategies and pruners training MNIST-1D at
# equal budget (hours on two CPU cores; resumes where it stopped).
bench-quality: $(STAMP)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/quality_tabular.py
	$(BIN)/python bench/quality.py

bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu_throughput.py --objective mnist1d_cnn
	$(BIN)/python bench/gpu_throughput.py --objective mnist1d_mlp

clean:
	rm -rf .hpo
