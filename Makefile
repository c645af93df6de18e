# barge — the two commands on a fresh machine: `make demo` and `make test`. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export CARGO_TARGET_DIR ?= $(HOME)/.cache/barge/target
CARGO ?= cargo

.PHONY: help setup build build-lambda demo test check bench clean-clusters synth deploy ami destroy

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: ## Install what the tests need (PostgreSQL 18 and 15, DynamoDB Local, moto, nextest)
	@scripts/setup

build: ## Build barge and barge-worker (debug; the Lambdas: make build-lambda)
	$(CARGO) build -p barge -p barge-worker

demo: ## Install PostgreSQL 18, build barge and barge-worker, copy a sample database between two local clusters through barge serve with live progress, verify
	@scripts/setup demo
	$(CARGO) build -p barge -p barge-worker
	@scripts/demo

test: ## Run every test: Rust against real PostgreSQL 18 and 15, DynamoDB Local and moto (started and stopped here); the CDK app, cdk-nag, cfn-lint, checkov, the AMI components and the worker built for the AMI
	@scripts/setup test
	@scripts/test

check: ## Formatting, one feature set for every build (scripts/check-features), clippy with warnings as errors
	$(CARGO) fmt --all --check
	@scripts/check-features
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build-lambda: ## Build the coordinator and reaper Lambdas for arm64 with cargo-lambda ($CARGO_TARGET_DIR/lambda/*/bootstrap)
	@scripts/setup lambda
	PATH="$(HOME)/.cache/barge/venv/bin:$$PATH" $(CARGO) lambda build --release --arm64 --bin coordinator --bin reaper

bench: ## Copy: barge vs pg_dump/pg_restore and pgcopydb (BENCH_SCALE=1 is ~1 GiB per dataset; tenants again on untuned servers on disk); sync: lag under 10,500 rows/s; API: latency, Lambda size
	@scripts/setup bench
	$(CARGO) build --release -p barge -p barge-worker
	@bench/run
	@BENCH_SERVER=defaults BENCH_PG_ROOT=disk BENCH_DATASETS=tenants BENCH_TOOLS="barge pgcopydb dump_dir" \
	  BENCH_OUT=bench/out/defaults bench/run
	@bench/sync
	@bench/api

# The AWS deployment (docs/deploy.md). STAGE picks infra/stages/$(STAGE).json when present;
# the account and region are those of your AWS credentials (AWS_PROFILE, AWS_REGION).
STAGE ?= dev
CDK = BARGE_STAGE=$(STAGE) PATH="$(HOME)/.cache/barge/venv/bin:$$PATH" node_modules/.bin/cdk

synth: ## Synthesize the CDK app of STAGE (builds the Lambdas) into cdk.out/
	@scripts/setup deploy
	$(CDK) synth --quiet

deploy: ## Build the Lambdas (cargo-lambda, arm64) and deploy STAGE's stacks (cdk deploy --all)
	@scripts/setup deploy
	$(CDK) deploy --all --require-approval broadening

ami: ## Build barge-worker for the image, upload it, run the image pipeline of STAGE, print the AMI id
	@scripts/setup deploy
	$(HOME)/.cache/barge/venv/bin/python scripts/ami.py --stage $(STAGE)

destroy: ## Delete STAGE's stacks (a prod stage keeps its table, key and bucket)
	@scripts/setup deploy
	$(CDK) destroy --all

clean-clusters: ## Stop the local test clusters
	@scripts/pg stop
