# pushmfa: the two commands a fresh clone needs are `make run` and `make test`.

SHELL := /bin/bash
GO    ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help build run test vet fuzz bench deps clean db/reset

help: ## List the targets
	@grep -E '^[a-zA-Z/_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

deps: ## Check (and, as root on Debian, install) the PostgreSQL binaries
	@scripts/ensure-postgres.sh

build: ## Build bin/server and bin/mfactl
	$(GO) build -o bin/server ./cmd/server
	$(GO) build -o bin/mfactl ./cmd/mfactl

run: deps build ## Run the server on its embedded cluster, with demo credentials
	@scripts/run.sh

vet: ## go vet
	$(GO) vet ./...

test: deps vet ## Vet and run the whole suite with -race against a real PostgreSQL
	$(GO) test -race -count=1 -timeout 20m ./...

FUZZTIME ?= 30s
fuzz: deps ## Run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

BENCHRUNS ?= 3
BENCHPUSHFLAGS ?=
bench: deps build ## Run the benchmarks (the sign-in path, push delivery in a burst and at a sustained load: BENCHRUNS runs each, medians), then the Go micro-benchmarks
	$(GO) build -o bin/mfabench ./cmd/mfabench
	./bin/mfabench -runs $(BENCHRUNS)
	./bin/mfabench -push -runs $(BENCHRUNS) $(BENCHPUSHFLAGS)
	@echo "push delivery at a load the machine sustains (100 challenges a second from 32 clients, at random times):"
	./bin/mfabench -push -runs $(BENCHRUNS) -push-concurrency 32 -push-rate 100 -challenges 3000 $(BENCHPUSHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./...

db/reset: ## Delete the local data directory (cluster, master key, demo credentials)
	rm -rf $${DATA_DIR:-.data}

clean: ## Remove built binaries
	rm -rf bin
