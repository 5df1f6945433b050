# trackerd in a container: a static binary on a minimal base, run as the
# unprivileged user 65532, with a health check.
#
#   docker build -t trackerd \
#     --build-arg VERSION=$(git describe --tags --always) --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run --rm -e TRACKER_DATABASE_URI=postgresql://user:pass@db/app \
#     -e TRACKER_NATS_URL=nats://nats:4222 -e TRACKER_TRACK_MODIFICATIONS=true trackerd
#
# deploy/compose.yaml runs it with PostgreSQL and NATS. Without
# TRACKER_NATS_URL trackerd runs its embedded NATS server, which cannot be
# published (EMBEDDED_NATS_ADDR=0.0.0.0:4223 is refused: it has no TLS, so it
# only listens on loopback) — use a real NATS server in containers.
# HTTP_ADDR below serves /healthz, /readyz and /metrics on every interface;
# the debug endpoints stay on loopback (DEBUG_ADDR). HEALTHCHECK runs
# `trackerd probe`, which asks /readyz on loopback: healthy while every bind
# streams and NATS is connected.
#
# It builds with the classic builder and with BuildKit, and pulls nothing but
# the two base images, which are build arguments for registries of your own
# (scripts/test-images.sh builds local equivalents for offline machines).
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
ENV CGO_ENABLED=0
WORKDIR /src
COPY go.mod go.sum ./
# The dependencies trackerd links, downloaded and compiled in a layer that
# only go.mod and go.sum change, so that a change to trackerd's own code
# (or to VERSION) recompiles trackerd's packages only: seconds instead of
# minutes. The list only warms Go's build cache; a package missing from it
# is compiled in the next step (cmd/trackerd's TestDockerfile checks that
# it still covers most of what trackerd links).
RUN go build -trimpath \
      github.com/nats-io/nats-server/v2/server \
      github.com/nats-io/nats.go/jetstream \
      github.com/jackc/pgx/v5/pgxpool \
      github.com/jackc/pglogrepl \
      github.com/go-mysql-org/go-mysql/replication \
      github.com/go-sql-driver/mysql \
      github.com/prometheus/client_golang/prometheus/promhttp \
      github.com/goccy/go-json \
      github.com/BurntSushi/toml \
      golang.org/x/text/encoding/charmap
COPY . .
ARG VERSION=""
ARG REVISION=""
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
      -o /out/trackerd ./cmd/trackerd \
 && mkdir -p /out/data

FROM ${RUNTIME_IMAGE}
ARG VERSION=""
ARG REVISION=""
LABEL org.opencontainers.image.title="trackerd" \
      org.opencontainers.image.description="Change data capture from PostgreSQL and MySQL/MariaDB to CloudEvents on NATS JetStream" \
      org.opencontainers.image.source="https://github.com/trackerd/trackerd" \
      org.opencontainers.image.url="https://github.com/trackerd/trackerd" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/trackerd /usr/local/bin/trackerd
# The unprivileged user owns the state directory. USER is set here, not
# left to the base image, so that any RUNTIME_IMAGE runs trackerd as 65532.
COPY --from=build --chown=65532:65532 /out/data /var/lib/trackerd
USER 65532:65532
# State (spill files, checkpoint file, embedded NATS data) and the HTTP port.
ENV TRACKER_DATA_DIR=/var/lib/trackerd \
    TRACKER_HTTP_ADDR=0.0.0.0:9187
VOLUME ["/var/lib/trackerd"]
EXPOSE 9187
# No shell or curl in the image: trackerd asks its own /readyz.
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/trackerd", "probe", "--timeout", "5s"]
ENTRYPOINT ["/usr/local/bin/trackerd"]
CMD ["run"]
