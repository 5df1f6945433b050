# syntax=docker/dockerfile:1
# trackerd in a container: a static binary on a minimal base.
#
#   docker build -t trackerd .
#   docker run --rm -e TRACKER_DATABASE_URI=postgresql://user:pass@db/app \
#     -e TRACKER_NATS_URL=nats://nats:4222 -e TRACKER_TRACK_MODIFICATIONS=true trackerd
#
# Without TRACKER_NATS_URL trackerd runs its embedded NATS server, which
# cannot be published (EMBEDDED_NATS_ADDR=0.0.0.0:4223 is refused: it has no
# TLS, so it only listens on loopback) — use a real NATS server in
# containers. HTTP_ADDR below serves /healthz, /readyz and /metrics on every
# interface; the debug endpoints stay on loopback (DEBUG_ADDR). The base images are build arguments, for registries of your
# own (scripts/test-images.sh builds local equivalents for offline machines).
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/trackerd ./cmd/trackerd \
 && mkdir -p /out/data

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/trackerd /usr/local/bin/trackerd
# The distroless "nonroot" user (65532) owns the state directory.
COPY --from=build --chown=65532:65532 /out/data /var/lib/trackerd
# State (spill files, checkpoint file, embedded NATS data) and the HTTP port.
ENV TRACKER_DATA_DIR=/var/lib/trackerd \
    TRACKER_HTTP_ADDR=0.0.0.0:9187
VOLUME ["/var/lib/trackerd"]
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/trackerd"]
CMD ["run"]
