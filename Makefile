# barge — the two commands on a fresh machine: `make demo` and `make test`. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export CARGO_TARGET_DIR ?= $(HOME)/.cache/barge/target
CARGO ?= cargo

.PHONY: help setup build build-lambda demo test check bench clean-clusters

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: ## Install what demo and test need (PostgreSQL 18 and 15, nextest)
	@scripts/setup

build: ## Build barge (debug)
	$(CARGO) build --workspace

demo: setup build ## Copy a sample database between two local clusters with live progress, then verify
	@scripts/demo

test: setup ## Run every test against real PostgreSQL 18 and 15, DynamoDB Local and moto (started and stopped here)
	@scripts/test

check: ## Formatting and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build-lambda: ## Build the coordinator and reaper Lambdas for arm64 with cargo-lambda ($CARGO_TARGET_DIR/lambda/*/bootstrap)
	@scripts/setup lambda
	PATH="$(HOME)/.cache/barge/venv/bin:$$PATH" $(CARGO) lambda build --release --arm64 --bin coordinator --bin reaper

bench: ## Copy: barge vs pg_dump/pg_restore and pgcopydb (BENCH_SCALE=1 is ~1 GiB per dataset); API: latency, Lambda size
	@scripts/setup bench
	$(CARGO) build --release -p barge -p barge-worker
	@bench/run
	@bench/api

clean-clusters: ## Stop the local test clusters
	@scripts/pg stop
