# Two commands do all the set-up: `make run` and `make test`.
# Both create .venv when missing and install the locked dependency set into it;
# torch goes in first and alone so that nothing else can pull another build of it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: install run pretrain test test-all push pull lock clean image

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## the whole DVC pipeline on the embedded default (TAVR-Synth, tiny preset, CPU)
	@git rev-parse --git-dir >/dev/null 2>&1 || { git init --quiet && git add -A && \
		git -c user.name=tavr -c user.email=tavr@localhost commit --quiet -m "initial commit (make run)"; }
	@test -d .dvc || $(BIN)/dvc init --quiet
	@mkdir -p data/raw
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The pretrain stage is frozen in dvc.yaml (hours of CPU: `dvc repro` must never start it by accident);
# this target runs it on purpose: the codec stage takes the base's codec, the run resumes from
# runs/pretrain, and the new models/base is recorded in dvc.lock. `tavr pretrain --export` writes
# models/base from a run that has not finished yet.
pretrain: $(STAMP)  ## the tiny base (hours on 2 CPU cores): run again after a stop and it resumes
	@mkdir -p data/raw
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro codec
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/tavr pretrain --params params.yaml
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc commit --force pretrain

test: $(STAMP)  ## the default test suite (under 15 minutes on 2 CPU cores)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

push: $(STAMP)  ## upload DVC-tracked data and outputs to the default remote
	$(BIN)/dvc push

pull: $(STAMP)  ## fetch them in another clone (data/raw must exist, even empty, as the ingest stage's input)
	@mkdir -p data/raw
	$(BIN)/dvc pull

lock: $(STAMP)  ## re-pin requirements.lock from the current .venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' | sed '1i torch==2.13.0' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache

# The package images the kfp components and the predictor run (docker/); the manifests name these tags.
IMAGE_CPU ?= ghcr.io/tavr-platform/tavr:cpu
IMAGE_CUDA ?= ghcr.io/tavr-platform/tavr:cuda

image:  ## build both images, with the same torch pin as .venv
	docker build -f docker/Dockerfile.cpu --build-arg TORCH=$(TORCH) -t $(IMAGE_CPU) .
	docker build -f docker/Dockerfile.cuda --build-arg TORCH=$(TORCH) -t $(IMAGE_CUDA) .
