# The two commands (see README): `make up` and `make test`. Everything else is a step of them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
MODELS_DIR ?= .data/models
UV_VERSION := 0.13.9
PY := $(VENV)/bin/python
RUN := PYTHONPATH=plugins $(PY)

.PHONY: up run smoke down status serve test lint venv vllm-env models system-deps test-deps bench lock clean

## up: set everything up, start the platform and run the main job on it
up: venv models system-deps
	$(RUN) -m llmops.embedded up
	$(RUN) -m llmops.embedded run
	$(RUN) -m llmops.embedded refresh-demo

## run: the refresh pipeline demo again on the running platform (smoke: the one-pod smoke test)
run:
	$(RUN) -m llmops.embedded refresh-demo

smoke:
	$(RUN) -m llmops.embedded run

## down: save the S3 data and stop every service
down:
	$(RUN) -m llmops.embedded down

status:
	$(RUN) -m llmops.embedded status

## serve: platform in the foreground until Ctrl-C
serve: venv models system-deps
	$(RUN) -m llmops.embedded serve

## test: set everything up and run the whole test suite
test: venv models test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff check --preview --select AIR dags plugins
	$(RUN) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff check --preview --select AIR dags plugins

# The Airflow environment: one tested set of pins (requirements + constraints lock).
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --python $(PY) -r requirements-dev.txt -c constraints.txt
	touch $@

# nginx splits canary traffic on the embedded default (Debian's nginx-light).
system-deps:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light)

# Headless Chromium renders the weekly drift report's HTML in the tests (a screenshot); only
# `make test` needs it, so a first `make up` does not wait for a browser install.
test-deps: system-deps
	@command -v chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# vLLM lives in its own environment (a separate image in production).
vllm-env: venv
	bash scripts/setup-vllm-env.sh $(VLLM_VENV)

# The project's own small models: the model maker's checkpoints are shipped in the repository
# (SHIPPED_MODELS, with SHA256SUMS); `models` copies and verifies them (no training, no torch,
# seconds; a second run is a no-op) and `make test` rebuilds them bit for bit (tests/modelmaker).
# vllm-env stays a prerequisite: `up`, `serve` and `test` get the vLLM runtime through it.
SHIPPED_MODELS := include/models/tiny-chat
models: venv vllm-env
	$(RUN) -m llmops.modelmaker install --from $(SHIPPED_MODELS) --out $(MODELS_DIR)/tiny-chat

# Retrain the checkpoints from scratch (about 5 min on 2 cores) and refresh the shipped copy and
# its SHA256SUMS: after changing the maker (its code or config is hashed into maker.json), then commit.
.PHONY: models-rebuild
models-rebuild: vllm-env
	PYTHONPATH=plugins $(VLLM_VENV)/bin/python -m llmops.modelmaker train --force --out $(MODELS_DIR)/tiny-chat
	PYTHONPATH=plugins $(VLLM_VENV)/bin/python -m llmops.modelmaker ship --from $(MODELS_DIR)/tiny-chat --to $(SHIPPED_MODELS)

bench: venv
	$(RUN) bench/dag_parse.py

# Corpus validation: GX vs pandas (chunks/s) and peak memory at 100k and 1M chunks (about 2 min).
.PHONY: bench-corpus
bench-corpus: venv
	$(RUN) bench/corpus.py

# Regenerate the full lock after changing requirements*.txt.
lock: venv
	$(VENV)/bin/uv pip compile --python-version 3.11 requirements-dev.txt -o constraints.txt --no-header --no-annotate

clean:
	-$(RUN) -m llmops.embedded down
	rm -rf .data
