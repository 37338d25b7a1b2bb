# Hookline: one Makefile for every module of the go.work workspace.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

MODULES  := proto pkg services/ingest services/fanout services/dispatcher services/deadletter cmd/hookctl cmd/hookline-dev e2e deploy bench
PKGS     := $(addsuffix /...,$(addprefix ./,$(MODULES)))
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/hookline/hookline/pkg/version.Version=$(VERSION)
TOOLS    := $(CURDIR)/bin/tools
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export TEST_DATABASE_URL

# Test timeouts: the whole suite must stay well under 15 minutes on 2 cores.
TEST_FLAGS ?= -count=1 -timeout=12m

# Container images (make images): one per service, from deploy/docker/<service>.Dockerfile.
IMAGE_REGISTRY   ?= ghcr.io/hookline
IMAGE_TAG        ?= $(VERSION)
IMAGE_SERVICES   := ingest fanout dispatcher deadletter
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

.PHONY: all build run test images test/short test/ordering-long test/race test/chaos lint vet staticcheck proto tidy bench bench/micro clean help

all: build

help: ## list targets
	@grep -E '^[a-z/]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build every binary into ./bin
	@mkdir -p bin
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/hookline-ingest     ./services/ingest/cmd/hookline-ingest
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/hookline-fanout     ./services/fanout/cmd/hookline-fanout
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/hookline-dispatcher ./services/dispatcher/cmd/hookline-dispatcher
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/hookline-deadletter ./services/deadletter/cmd/hookline-deadletter
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/hookctl             ./cmd/hookctl
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/hookline-dev        ./cmd/hookline-dev

images: ## build a container image per service with docker or podman (IMAGE_REGISTRY, IMAGE_TAG); see deploy/README.md
	@if [ -z "$(CONTAINER_ENGINE)" ]; then echo "images: no container engine found (install docker or podman, or set CONTAINER_ENGINE)" >&2; exit 1; fi
	@if ! $(CONTAINER_ENGINE) info >/dev/null 2>&1; then echo "images: $(CONTAINER_ENGINE) cannot reach its engine (is the daemon running?)" >&2; exit 1; fi
	@for svc in $(IMAGE_SERVICES); do \
	  echo "image $(IMAGE_REGISTRY)/hookline-$$svc:$(IMAGE_TAG)"; \
	  DOCKER_BUILDKIT=1 $(CONTAINER_ENGINE) build -f deploy/docker/$$svc.Dockerfile --build-arg VERSION=$(VERSION) \
	    -t $(IMAGE_REGISTRY)/hookline-$$svc:$(IMAGE_TAG) . ; \
	done

run: build ## start the whole pipeline locally (embedded NATS, local PostgreSQL) on http://127.0.0.1:8080
	./bin/hookline-dev

test: ## the whole suite against real NATS (embedded) and real PostgreSQL
	go test $(TEST_FLAGS) $(PKGS)

test/ordering-long: ## issue 5's long per-key ordering tests: property, scaling figure, 60 s isolation (separate processes; ~10 minutes)
	cd e2e && go test -tags long -count=1 -timeout=40m -run 'TestOrderingProperty|TestOrderingScaling|TestOrderingIsolation' -v .

test/short: ## unit tests only
	go test -short -count=1 $(PKGS)

test/race: ## the suite with the race detector
	go test -race $(TEST_FLAGS) $(PKGS)

test/chaos: ## the fault tests (kill -9, NATS and PostgreSQL restarts, failing and slow receivers) at full size
	go test -tags chaos -count=1 -timeout=30m -v -run 'TestFault|TestRetryFiresOnTime' ./e2e/...

lint: vet staticcheck ## go vet + pinned staticcheck + gofmt
	@out=$$(gofmt -l $(MODULES) | grep -v '\.pb\.go$$' || true); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	go vet $(PKGS)

$(TOOLS)/staticcheck: tools/go.mod
	GOWORK=off go -C tools build -o $(TOOLS)/staticcheck honnef.co/go/tools/cmd/staticcheck

$(TOOLS)/protoc-gen-go: tools/go.mod
	GOWORK=off go -C tools build -o $(TOOLS)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go

staticcheck: $(TOOLS)/staticcheck
	$(TOOLS)/staticcheck $(PKGS)

proto: $(TOOLS)/protoc-gen-go ## regenerate proto/hooklinev1 (needs protoc: apt-get install protobuf-compiler)
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	PATH=$(TOOLS):$$PATH protoc -I proto --go_out=proto --go_opt=module=github.com/hookline/hookline/proto proto/hookline/v1/*.proto

tidy: ## go mod tidy in every module
	@for m in $(MODULES) tools; do echo "tidy $$m"; (cd $$m && GOWORK=off go mod tidy); done

# HOOKLINE_BENCH_SCALE=3 sends three times as long; HOOKLINE_BENCH_ROUNDS=3 runs
# every scenario three times, interleaved, and reports medians;
# HOOKLINE_BENCH_DATABASE_URL (else TEST_DATABASE_URL) names the PostgreSQL server.
bench: build ## end-to-end benchmark: the pipeline on real NATS and PostgreSQL; table also in bench/results/
	go build -trimpath -o bin/hookline-bench ./bench/cmd/hookline-bench
	./bin/hookline-bench -bin ./bin -out bench/results -commit '$(VERSION)'

bench/micro: ## Go micro-benchmarks of the hot path
	go test -run='^$$' -bench=. -benchmem -count=1 $(PKGS)

clean:
	rm -rf bin
