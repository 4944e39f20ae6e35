# syntax=docker/dockerfile:1
# Multi-stage build: static binaries on a minimal, non-root runtime image.
#   make image                      # docker/podman build, tagged with the version
#   make push REGISTRY=registry.example.com/team   # amd64 + arm64, pushed
# or by hand:
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t cohortsync-worker .
#   docker build --target emulator -t cohortsync-emulator .
#
# Cross-compiled: the build stages run on the builder's own platform
# ($BUILDPLATFORM) and Go compiles for the target's ($TARGETOS/$TARGETARCH),
# so `--platform linux/amd64,linux/arm64` needs no emulation.
#
# The bases are build arguments so they can be pinned by digest, e.g.
#   --build-arg GO_IMAGE=golang:1.26@sha256:<digest>
#   --build-arg RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:<digest>
# or replaced by local images where no registry is reachable
# (scripts/containers-up builds stand-ins and passes them with --pull=never).
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
# A module proxy of your own (a corporate one, or a file:// mirror mounted
# into the build) can stand in for the public one.
ARG GOPROXY=https://proxy.golang.org,direct
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .

FROM build AS build-worker
ARG VERSION=dev
# Set by the builder for the platform being built (BuildKit, Buildah).
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-$(go env GOARCH)} \
    go build -ldflags "-s -w -X main.version=${VERSION}" -o /out/cohortsync-worker ./cmd/cohortsync-worker

FROM build AS build-emulator
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-$(go env GOARCH)} \
    go build -ldflags "-s -w" -o /out/cohortsync-emulator ./cmd/cohortsync-emulator

# The MoEngage API emulator, for local stacks and tests; not in the worker's image.
FROM ${RUNTIME_IMAGE} AS emulator
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cohortsync-emulator" \
      org.opencontainers.image.description="An emulator of MoEngage's Cohort Sync API, for tests and staging" \
      org.opencontainers.image.source="https://github.com/cohortsync/cohortsync-worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build-emulator /out/cohortsync-emulator /usr/local/bin/
# Numeric, so that runAsNonRoot can verify it (distroless "nonroot" is 65532).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cohortsync-emulator"]

# The worker: the default (last) target.
FROM ${RUNTIME_IMAGE} AS worker
ARG VERSION=dev
ARG REVISION=unknown
# The version is also in the binary: `cohortsync-worker --version`.
LABEL org.opencontainers.image.title="cohortsync-worker" \
      org.opencontainers.image.description="Kafka consumer that syncs cohort membership changes to MoEngage's Cohort Sync API" \
      org.opencontainers.image.source="https://github.com/cohortsync/cohortsync-worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build-worker /out/cohortsync-worker /usr/local/bin/
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/cohortsync-worker"]
