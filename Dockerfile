# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a minimal, non-root runtime image.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t cohortsync-worker .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/cohortsync-worker ./cmd/cohortsync-worker && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
      -o /out/cohortsync-emulator ./cmd/cohortsync-emulator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cohortsync-worker /out/cohortsync-emulator /usr/local/bin/
USER nonroot:nonroot
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/cohortsync-worker"]
