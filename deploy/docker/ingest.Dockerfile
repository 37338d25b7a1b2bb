# syntax=docker/dockerfile:1
# Image of hookline-ingest. Build from the repository root (the build context is
# the whole go.work workspace):
#   docker build -f deploy/docker/ingest.Dockerfile --build-arg VERSION=$(git describe --tags --always) -t ghcr.io/hookline/hookline-ingest:dev .
# or "make images". deploy/deploy_test.go checks that the binary built here is
# the one the Kubernetes manifests run.

FROM golang:1.26 AS build
WORKDIR /src
# The workspace: go.work needs the go.mod of every module it uses; only the
# modules this binary imports are copied whole.
COPY go.work go.work.sum ./
COPY proto/ proto/
COPY pkg/ pkg/
COPY services/ services/
COPY bench/go.* bench/
COPY cmd/hookctl/go.* cmd/hookctl/
COPY cmd/hookline-dev/go.* cmd/hookline-dev/
COPY deploy/go.* deploy/
COPY e2e/go.* e2e/
ARG VERSION=dev
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X github.com/hookline/hookline/pkg/version.Version=${VERSION}" \
      -o /out/hookline-ingest ./services/ingest/cmd/hookline-ingest

# distroless static: no shell, no package manager, CA certificates and
# tzdata included; runs as uid 65532 and needs no writable path.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hookline-ingest /usr/local/bin/hookline-ingest
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/hookline-ingest"]
