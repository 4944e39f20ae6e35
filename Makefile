# cohortsync-worker — common tasks. `make test` is the whole test suite (the
# README's test command and what .ci/run calls); `make demo` is the demo.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test test-unit test-integration vet fmt demo bench clean

all: vet build test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# Unit and component tests (no Java): fast, hermetic.
test-unit:
	$(GO) test -race -count=1 -short ./...

# Everything, with the race detector: unit, component, and the integration
# suite against a real Apache Kafka broker that the tests fetch from Maven
# Central and start themselves (or the cluster named by KAFKA_BROKERS).
test: vet
	scripts/ensure-deps
	$(GO) test -race -count=1 -timeout 30m ./...

test-integration:
	scripts/ensure-deps
	$(GO) test -race -count=1 -timeout 30m -v ./integration/

demo:
	$(GO) run ./cmd/cohortsync-demo

bench:
	$(GO) run ./cmd/cohortsync-bench

clean:
	rm -rf bin/
