# syntax=docker/dockerfile:1
# Multi-stage build: static binaries on a minimal, non-root runtime image.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t cohortsync-worker .
#   docker build --target emulator -t cohortsync-emulator .
#
# The bases are build arguments so they can be pinned by digest, e.g.
#   --build-arg GO_IMAGE=golang:1.26@sha256:<digest>
#   --build-arg RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:<digest>
# or replaced by local images where no registry is reachable
# (scripts/containers-up builds stand-ins and passes them with --pull=never).
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
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
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags "-s -w -X main.version=${VERSION}" -o /out/cohortsync-worker ./cmd/cohortsync-worker

FROM build AS build-emulator
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags "-s -w" -o /out/cohortsync-emulator ./cmd/cohortsync-emulator

# The MoEngage API emulator, for local stacks and tests; not in the worker's image.
FROM ${RUNTIME_IMAGE} AS emulator
COPY --from=build-emulator /out/cohortsync-emulator /usr/local/bin/
# Numeric, so that runAsNonRoot can verify it (distroless "nonroot" is 65532).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cohortsync-emulator"]

# The worker: the default (last) target.
FROM ${RUNTIME_IMAGE} AS worker
COPY --from=build-worker /out/cohortsync-worker /usr/local/bin/
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/cohortsync-worker"]
