# cohortsync-worker — common tasks. `make test` is the whole test suite (the
# README's test command and what .ci/run calls); `make demo` is the demo.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The image: `make image` builds it locally, `make push REGISTRY=...` builds
# it for amd64 and arm64 (cross-compiled, no emulation) and pushes it.
ENGINE    ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
REGISTRY  ?= ghcr.io/cohortsync
IMAGE     ?= $(REGISTRY)/cohortsync-worker
PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_ARGS = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION)

.PHONY: all build test test-unit test-integration test-containers test-kube containers-up containers-down images image push k8s-up k8s-down lint-deploy vet fmt demo bench clean

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
# Central and start themselves (or the cluster named by KAFKA_BROKERS, or an
# apache/kafka container when DOCKER_HOST names an engine); then the
# container suite (test-containers), which skips where no engine can be had;
# then the Kubernetes suite (test-kube), which skips where no cluster can be
# had (it needs root on Debian).
test: vet lint-deploy
	scripts/ensure-deps
	$(GO) test -race -count=1 -timeout 50m ./...
	scripts/test-containers
	scripts/test-kube

# The container suite: sets up Podman (as root on Debian) and the local
# images -- an apache/kafka stand-in, the Dockerfile's bases, the worker and
# emulator images built from the Dockerfile -- then runs integration's
# TestContainer* with the broker in a container (testcontainers-go), and
# cleans up. Prints how long each provisioning step took.
test-containers:
	scripts/ensure-deps
	scripts/test-containers

# The Kubernetes suite: a real single-node cluster on this machine
# (scripts/k8s-up: Kubernetes built from the Go module proxy once and cached:
# ~10 min on an idle 2-core machine, 27 min measured under load; then the
# cluster is up in ~30 s), the example overlay applied with the image built
# from the Dockerfile, then scripts/k8s-down. A warm run took 5 min.
test-kube:
	scripts/ensure-deps
	scripts/test-kube

k8s-up:
	scripts/k8s-up

k8s-down:
	scripts/k8s-down

# The worker's image, tagged $(IMAGE):$(VERSION), for this machine's platform.
image:
	$(ENGINE) build $(IMAGE_ARGS) -t $(IMAGE):$(VERSION) .

# Both platforms, pushed to $(REGISTRY) (log in first). Buildah before 1.29
# sets BUILDPLATFORM to the target, so podman is told the builder's.
push:
ifeq ($(ENGINE),docker)
	docker buildx build --platform $(PLATFORMS) $(IMAGE_ARGS) -t $(IMAGE):$(VERSION) --push .
else
	podman build --platform $(PLATFORMS) --build-arg BUILDPLATFORM=linux/$$($(GO) env GOARCH) $(IMAGE_ARGS) --manifest $(IMAGE):$(VERSION) .
	podman manifest push --all $(IMAGE):$(VERSION) docker://$(IMAGE):$(VERSION)
endif

# Provisioning alone (idempotent), and its undoing (containers-down IMAGES=1
# also removes the images).
containers-up images:
	scripts/ensure-deps
	scripts/containers-up

containers-down:
	scripts/containers-down $(if $(IMAGES),--images)

# Static checks of the deployment artifacts with pinned tools: hadolint,
# kustomize + the Kubernetes API types, compose-go, promtool check/test rules.
lint-deploy:
	scripts/lint-deploy

test-integration:
	scripts/ensure-deps
	$(GO) test -race -count=1 -timeout 50m -v ./integration/

demo:
	$(GO) run ./cmd/cohortsync-demo

bench:
	$(GO) run ./cmd/cohortsync-bench

clean:
	rm -rf bin/
