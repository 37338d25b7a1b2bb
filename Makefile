# Hookline: one Makefile for every module of the go.work workspace.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

MODULES  := proto pkg services/ingest services/fanout services/dispatcher services/deadletter cmd/hookctl cmd/hookline-dev e2e
PKGS     := $(addsuffix /...,$(addprefix ./,$(MODULES)))
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/hookline/hookline/pkg/version.Version=$(VERSION)
TOOLS    := $(CURDIR)/bin/tools
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export TEST_DATABASE_URL

# Test timeouts: the whole suite must stay well under 15 minutes on 2 cores.
TEST_FLAGS ?= -count=1 -timeout=12m

.PHONY: all build run test test/short test/race lint vet staticcheck proto tidy bench clean help

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

run: build ## start the whole pipeline locally (embedded NATS, local PostgreSQL) on http://127.0.0.1:8080
	./bin/hookline-dev

test: ## the whole suite against real NATS (embedded) and real PostgreSQL
	go test $(TEST_FLAGS) $(PKGS)

test/short: ## unit tests only
	go test -short -count=1 $(PKGS)

test/race: ## the suite with the race detector
	go test -race $(TEST_FLAGS) $(PKGS)

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

bench: ## Go benchmarks of the hot path
	go test -run='^$$' -bench=. -benchmem -count=1 $(PKGS)

clean:
	rm -rf bin
