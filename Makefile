# Two commands do all the set-up: `make run` and `make test`.
# Both create .venv when missing and install the locked dependency set into it;
# torch goes in first and alone so that nothing else can pull another build of it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: install run bench-shifted pretrain test test-all push pull lock clean image image-cpu image-cuda wheels wheels-cuda test-images

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

# A second set of bench pairs that no model trained on and no knob was chosen on: TAVR-Synth from another
# seed, every face measure and the voice drawn outside the training ranges (synth.shift), 10 people in 3
# scenes; every method of dvc.yaml's bench stage scores it against its own gallery, and the report writes
# reports/bench_shifted/claims.md. Needs the models of `make run`; about 11 minutes alone on 2 cores (README).
SHIFTED = --set synth.seed=7 --set synth.shift=0.3 --set synth.identities=11 --set synth.bench_identities=10 \
	--set synth.scenes=4 --set synth.bench_scenes=3 --set synth.scenes_per_identity=1 \
	--set bench.pairs=data/shifted/bench_pairs.json --set bench.gallery=reports/bench_shifted/gallery.npz \
	--set "bench.validation=[0, 0]"
BENCH_METHODS = $(BIN)/python -c 'import yaml; d = yaml.safe_load(open("dvc.yaml"))["stages"]["bench"]["foreach"]; \
	[print(k, v["model"], v["protocol"], v["args"]) for k, v in d.items()]'

bench-shifted: $(STAMP)  ## the benchmark and its claims on a second, shifted pair set (after make run)
	$(BIN)/tavr synth --out data/shifted/synth $(SHIFTED)
	$(BIN)/tavr ingest data/shifted/synth data/shifted/clips --pairs data/shifted/bench_pairs.json --force $(SHIFTED)
	$(BIN)/tavr bench gallery $(SHIFTED)
	$(BENCH_METHODS) | while read -r method model protocol args; do \
		$(BIN)/tavr bench --method $$method --model $$model --protocol $$protocol $$args \
			--out reports/bench_shifted/$$method $(SHIFTED) || exit 1; done
	$(BIN)/tavr bench score --targets --method upper_bound --out reports/bench_shifted/upper_bound $(SHIFTED)
	$(BIN)/tavr bench report --dir reports/bench_shifted $(SHIFTED)

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
# Air-gapped builds: BASE_IMAGE=tavr-base:bookworm (docker/base-image.sh) and `make wheels` first.
BASE_IMAGE ?= python:3.11-slim-bookworm
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
DOCKER ?= docker
BUILD_FLAGS ?=  # e.g. --network host where the daemon has no bridge and the build must reach an index
IMAGE_ARGS = $(BUILD_FLAGS) --build-arg TORCH=$(TORCH) --build-arg BASE_IMAGE=$(BASE_IMAGE)

image: image-cpu image-cuda  ## build both images, with the same torch pin as .venv

image-cpu:  ## the CPU image; from wheels/ alone when `make wheels` filled it
	@mkdir -p wheels
	$(DOCKER) build -f docker/Dockerfile.cpu $(IMAGE_ARGS) --build-arg TORCH_INDEX=$(TORCH_INDEX) -t $(IMAGE_CPU) .

image-cuda:  ## the CUDA image; from wheels-cuda/ alone when it holds PyPI's torch and its nvidia-* wheels
	@mkdir -p wheels-cuda
	$(DOCKER) build -f docker/Dockerfile.cuda $(IMAGE_ARGS) --build-arg WHEELS=wheels-cuda -t $(IMAGE_CUDA) .

wheels: $(STAMP)  ## a wheelhouse for image builds without the PyTorch index: CPU torch, the locked set, setuptools
	@mkdir -p wheels
	$(BIN)/python -m pip download --quiet --no-deps --dest wheels --index-url $(TORCH_INDEX) $(TORCH)
	grep -v '^torch==' requirements.lock | $(BIN)/python -m pip download --quiet --no-deps --dest wheels \
		-r /dev/stdin "setuptools>=68" wheel

# The same for the CUDA image: PyPI's torch with its nvidia-* wheels (a few GB). A pip config that adds
# a find-links folder holding a CPU torch would win over PyPI's: run it with PIP_CONFIG_FILE=/dev/null then.
CUDA_TORCH_INDEX ?= https://pypi.org/simple
wheels-cuda: $(STAMP)
	@mkdir -p wheels-cuda
	env -u PIP_FIND_LINKS $(BIN)/python -m pip download --quiet --dest wheels-cuda --only-binary=:all: \
		--index-url $(CUDA_TORCH_INDEX) $(TORCH)
	grep -v '^torch==' requirements.lock | $(BIN)/python -m pip download --quiet --no-deps --dest wheels-cuda \
		-r /dev/stdin "setuptools>=68" wheel

# The CPU image built (from the wheelhouse when there is one) and run for real: kfp steps in it, the
# predictor container over HTTP, its user. Not part of `make test`: it needs a Docker daemon (docker/README.md).
test-images: $(STAMP) image-cpu
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -m images tests/images
