# thinkpipe's command vocabulary. `make help` lists the targets; CI runs `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist processes of `make test`; each takes whole test files, so a file's shared fixtures run once
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
PORT ?= 8000
PROFILE ?= small
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help venv data run test test-slow golden compile image bench bench-curation bench-rewards bench-packing bench-rlcs bench-transfer bench-probes bench-trl bench-rollouts bench-reading lint clean lock serve-venv serve gpu-check

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the pinned dependencies (requirements.lock)

# vLLM (CPU build) lives in its own venv: it pins another torch and transformers than .venv.
# build_cpu_wheels.py makes the three `+noops` wheels the lock names (see its docstring).
$(SERVE_STAMP): serving/requirements.lock serving/build_cpu_wheels.py
	rm -rf $(SERVE_VENV) && $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python serving/build_cpu_wheels.py --out $(SERVE_VENV)/wheels
	$(SERVE_VENV)/bin/pip install --quiet --no-deps --find-links $(SERVE_VENV)/wheels -r serving/requirements.lock
	$(SERVE_VENV)/bin/pip check
	$(SERVE_VENV)/bin/python -c "import torchvision.transforms.v2, vllm.entrypoints.openai.api_server"
	touch $(SERVE_STAMP)

serve-venv: $(SERVE_STAMP) ## create .venv-serve for vLLM on CPU (serving/requirements.lock; minutes)

serve: $(STAMP) $(SERVE_STAMP) ## vLLM OpenAI server on 127.0.0.1:PORT (8000) for the last export (MODEL=folder|NAME/VER|NAME@alias)
	$(BIN)/thinkpipe serve --venv $(SERVE_VENV) --port $(PORT) $(if $(MODEL),--model $(MODEL))

data: $(STAMP) ## get the DVC-pinned corpus: pull it, or regenerate it and check the pinned hash
	@if $(BIN)/dvc pull --quiet data.dvc 2>/dev/null; then \
	  echo "data: data/raw pulled from the DVC remote"; \
	else \
	  echo "data: the DVC remote does not have it; regenerating from the seed"; \
	  rm -rf data/raw && $(BIN)/thinkpipe data --out data/raw --check-pin data.dvc && \
	  $(BIN)/dvc commit --force --quiet data.dvc && $(BIN)/dvc push --quiet data.dvc && \
	  echo "data: regenerated, verified against data.dvc and pushed to the remote"; \
	fi

run: data ## run the whole DAG locally (PROFILE=small by default; PROFILE=tiny for seconds)
	$(BIN)/thinkpipe run --profile $(PROFILE)

# The clock starts before the venv and the data, so the suite's last lines give the whole wall time.
test: ## the fast test suite (what CI runs); prints the slowest tests and the wall time, venv included
	@export THINKPIPE_TEST_STARTED=$$(date +%s.%N); \
	$(MAKE) --no-print-directory $(STAMP) data && \
	$(BIN)/pytest -m "not slow and not gpu" -n $(TEST_WORKERS) --dist loadfile --durations=15

test-slow: $(STAMP) data ## the slow tests only
	$(BIN)/pytest -m "slow"

compile: $(STAMP) ## compile the training and retraining DAGs (glm4v-9b cluster settings) to pipelines/compiled/
	$(BIN)/thinkpipe compile

IMAGE_ARGS ?= --pin
image: ## build the component image (buildah, debootstrap base; root; slow), pin its digest and source hash
	PYTHON=$(PYTHON) image/build.sh $(IMAGE_ARGS)
	$(if $(findstring --pin,$(IMAGE_ARGS)),$(MAKE) compile)

bench: $(STAMP) data ## stage-cache benchmark: first vs unchanged re-run, tiny and small DAGs (about 10 min)
	$(BIN)/python bench/bench_cache.py --profile tiny --profile small

# On a bare GPU machine (no .venv: its own python3, torch and transformers; see model_src/gpu_check.py)
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= gpu_check.json
gpu-check: ## GPU readiness: training, GRPO and evaluation on CUDA in bf16, MFU at 4K tokens, memory vs plan (bare GPU machine, < 5 min)
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m model_src.gpu_check --out $(GPU_CHECK_OUT)

golden: $(STAMP) data ## run PROFILE (small) afresh and compare every stage's metrics with tests/golden/ (small pins the portable CPU code path; minutes)
	$(BIN)/thinkpipe golden --profile $(PROFILE)

CURATION_SIZES ?= 10000 100000
bench-curation: $(STAMP) ## curation rows/s and peak memory, controlled duplication (CURATION_SIZES="10000 100000 500000"; minutes)
	$(BIN)/python bench/bench_curation.py --sizes $(CURATION_SIZES)

bench-rewards: $(STAMP) ## reward verifiers: agreement with the regression sets, time per call, slowest call (seconds)
	$(BIN)/python bench/bench_rewards.py

bench-packing: $(STAMP) data ## useful tokens/s: packed rows vs random and length-grouped padded batches, same samples prepared alike (minutes)
	$(BIN)/python bench/bench_packing.py

bench-rlcs: $(STAMP) ## RLCS vs uniform sampling from the last `make run`'s SFT model and RL split (5 seeds, bands; minutes)
	$(BIN)/python bench/bench_rlcs.py

bench-transfer: $(STAMP) ## RL on one domain at a time from the last `make run`'s SFT model: accuracy change on every domain, table + heatmap
	$(BIN)/python bench/bench_transfer.py

bench-probes: $(STAMP) ## what the last `make run`'s pretrained model learns to read: colour, counting, digits probes; PROBES=ocr,chart for corpus domains (minutes)
	$(BIN)/python bench/bench_probes.py $(if $(PROBES),--probes $(PROBES))

bench-trl: $(STAMP) ## RL step time vs TRL's GRPOTrainer, same model and batch (needs `make run` first)
	$(BIN)/python bench/bench_trl.py

bench-reading: $(STAMP) ## does the last `make run`'s SFT model read its images? per task: accuracy vs blank images, answer variety (STAGE=sft)
	$(BIN)/python bench/bench_reading.py --stage $(or $(STAGE),sft)

bench-rollouts: $(STAMP) $(SERVE_STAMP) ## rollout tokens/s: vLLM rollout server (.venv-serve) vs transformers generate, one RL step (minutes)
	$(BIN)/python bench/bench_rollouts.py

lint: $(STAMP) ## compile every module (no extra linters pinned)
	$(BIN)/python -m compileall -q model_src components pipelines tests bench

lock: ## re-resolve requirements.in into requirements.lock (slow: minutes, needs the registry)
	rm -rf /tmp/thinkpipe-lock && $(PYTHON) -m venv /tmp/thinkpipe-lock
	/tmp/thinkpipe-lock/bin/pip install -r requirements.in
	{ head -2 requirements.lock; /tmp/thinkpipe-lock/bin/pip freeze --all | grep -v '^pip=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean: ## remove local run state (MLflow store, kfp outputs); keeps .venv and data
	rm -rf .thinkpipe .pytest_cache
