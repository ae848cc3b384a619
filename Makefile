# Developer entry points for paytrack. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help up down test smoke lint logs clean bench bench-quick chaos chaos-short chaos-build

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN { FS = ":.*## " } { printf "  %-8s %s\n", $$1, $$2 }'

up: ## Start the local stack (NATS, PostgreSQL, paytrack with the simulator); writes .dev/stack.env
	bash scripts/stack-up.sh

down: ## Stop everything the local stack started (data stays in .dev)
	bash scripts/stack-down.sh

test: export PAYTRACK_NATS_SERVER := $(CURDIR)/.dev/bin/nats-server
test: ## Install the pinned test servers and tools, run the whole test suite, the short chaos run, then the smoke test
	bash scripts/install-nats-server.sh
	bash scripts/ensure-postgres.sh
	bash scripts/install-k8s-tools.sh
	bash scripts/install-python-readers.sh >/dev/null
	bash scripts/install-schemathesis.sh
	bash scripts/install-promtool.sh
	bash scripts/install-console-tools.sh
	bash scripts/install-browser.sh
	cargo test --workspace --locked
	$(MAKE) --no-print-directory chaos-short
	$(MAKE) --no-print-directory smoke

smoke: ## Run the stack on its own ports, follow the README, check the dashboard in Chromium
	bash scripts/install-browser.sh
	bash scripts/stack-smoke.sh

bench: export PAYTRACK_NATS_SERVER := $(CURDIR)/.dev/bin/nats-server
bench: BENCH_ARGS ?= --multi-edge
bench: BENCH_OUT ?= bench/results
bench: ## Build release, measure capacity against same-run ceilings, durable PostgreSQL, 60 s loads (about 20 min idle, plus the build); writes bench/results/
	bash scripts/install-nats-server.sh
	bash scripts/ensure-postgres.sh
	# The production-shape section runs the service binaries built next to the bench.
	cargo build --profile profiling --locked --bins -p paytrack-bench -p paytrack-ingest -p paytrack-reconciler \
		-p paytrack-ledger-projector -p paytrack-ws-edge -p paytrack-simulator
	ulimit -n $$(ulimit -Hn) && "$${CARGO_TARGET_DIR:-target}/profiling/paytrack-bench" --out $(BENCH_OUT) $(BENCH_ARGS)

bench-quick: ## The lighter variant of `make bench`: 5 s loads, labelled as such in its results; writes .dev/bench-quick/
	$(MAKE) bench BENCH_OUT=.dev/bench-quick BENCH_ARGS="--multi-edge --load-secs 5"

# The service binaries run as separate processes next to the chaos harness.
CHAOS_BIN := $${CARGO_TARGET_DIR:-target}/debug/paytrack-chaos
chaos-build:
	cargo build --locked --bins -p paytrack-chaos -p paytrack-ingest -p paytrack-reconciler \
		-p paytrack-ledger-projector -p paytrack-ws-edge -p paytrack-simulator

chaos: export PAYTRACK_NATS_SERVER := $(CURDIR)/.dev/bin/nats-server
chaos: SEED ?= 1
chaos: DURATION ?= 30m
chaos: ## Production shape under faults (3 nats nodes, R3, 2 replicas each): every fault alone, power losses, a SEED'ed random schedule of DURATION; writes bench/results/faults.md and durability.md
	bash scripts/install-nats-server.sh
	bash scripts/ensure-postgres.sh
	$(MAKE) --no-print-directory chaos-build
	ulimit -n $$(ulimit -Hn) && $(CHAOS_BIN) throughput --out bench/results/durability.md
	ulimit -n $$(ulimit -Hn) && $(CHAOS_BIN) faults --seed $(SEED) --duration $(DURATION) --out bench/results/faults.md

chaos-short: export PAYTRACK_NATS_SERVER := $(CURDIR)/.dev/bin/nats-server
chaos-short: ## The short form of `make chaos` that `make test` runs (about 6 min): fails on any lost, duplicated, forked, silent gap or unbalanced count
	bash scripts/install-nats-server.sh
	bash scripts/ensure-postgres.sh
	$(MAKE) --no-print-directory chaos-build
	ulimit -n $$(ulimit -Hn) && $(CHAOS_BIN) faults --short --seed 7

lint: ## Check formatting and run clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

logs: ## Follow the paytrack log of the local stack
	tail -f .dev/logs/paytrack.log

clean: ## Stop the stack, delete its data (keeps .dev/bin) and cargo's build output
	bash scripts/stack-down.sh --purge
	cargo clean
