# go-outbox developer tasks. Run "make" (or "make help") to list them.
#
# Local servers keep their state in $(OUTBOX_STATE_DIR) (default
# /var/tmp/go-outbox), outside the checkout; see scripts/servers.sh.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Pinned: the newest release on the module proxy when this was written.
STATICCHECK_VERSION := v0.8.2

# Services for up/down, e.g. make up SERVICES="postgres broker"
SERVICES ?=

# Where make faults writes its results (markdown), e.g. REPORT=docs/reliability.md
REPORT ?=

# GORM checkout (tag v1.31.2 of github.com/go-gorm/gorm, beside this one by
# default) whose own test suite gorm-suite runs, and its
# dialects (default: postgres mysql mysql-noreturning).
GORM_SRC ?= ../gorm
GORM_DIALECTS ?=

.PHONY: help up down status env test faults demo demo-mysql bench bench-floor lint gorm-suite

help: ## List the targets (default)
	@echo "Usage: make <target>"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

up: ## Start local PostgreSQL + MariaDB + PgBouncer, or SERVICES="postgres mysql pgbouncer broker" (scripts/servers.sh up)
	scripts/servers.sh up $(SERVICES)

down: ## Stop the local servers, or just SERVICES="..." (scripts/servers.sh down)
	scripts/servers.sh down $(SERVICES)

status: ## Show which local servers are running, their ports and the env file
	@scripts/servers.sh status

env: ## Print the env file (OUTBOX_TEST_POSTGRES_URL, OUTBOX_TEST_MYSQL_DSN, OUTBOX_TEST_PGBOUNCER_URL, ...)
	@scripts/servers.sh env

test: ## Start servers (PgBouncer too), go vet, go test -race ./... (scripts/test.sh)
	scripts/test.sh

faults: ## Long fault suite (~10 min): relay kills, 60 s broker outage, cuts, DB crashes; REPORT=docs/reliability.md writes the tables (scripts/faults.sh)
	scripts/faults.sh $(if $(REPORT),-report $(REPORT))

demo: ## Start PostgreSQL + kfake broker and run examples/postgres (scripts/demo.sh)
	scripts/demo.sh

demo-mysql: ## Start MariaDB + kfake broker and run examples/mysql (scripts/demo.sh mysql)
	scripts/demo.sh mysql

bench: ## Start servers and run the benchmarks (scripts/bench.sh)
	scripts/bench.sh

bench-floor: ## The "5 of 5" ratios on a quiet machine: relay and capture vs hand-written, writes by condition, backlog, delayed, latency ×5 (scripts/bench-floor.sh)
	scripts/bench-floor.sh

gorm-suite: ## Run GORM's own tests/ without and with the plugin and diff (scripts/gorm-suite.sh $(GORM_SRC); not in make test)
	scripts/gorm-suite.sh $(GORM_SRC) $(GORM_DIALECTS)

lint: ## gofmt -l check, go vet and staticcheck (pinned version)
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt needed on:"; echo "$$unformatted"; exit 1; \
	fi
	go vet ./... ./integration/... ./examples/...
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./... ./integration/... ./examples/...
