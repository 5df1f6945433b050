#!/usr/bin/env bash
# docker-engine.sh: make a Docker engine answer on this machine, for the
# container-based fault tests (e2e/containers_test.go). Idempotent: when
# `docker info` already answers it changes nothing.
#
#   1. installs Debian's docker.io when no dockerd is installed
#      (apt-get install -y docker.io; no image registry is needed later);
#   2. starts dockerd in the background when it is not running, logging to
#      $DOCKERD_LOG (default /var/log/dockerd.log);
#   3. waits until `docker info` answers (at most $DOCKER_WAIT seconds, 60).
#
# Needs root (or sudo) for the install and for dockerd. Then build the test
# images with scripts/test-images.sh.
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
DOCKER_WAIT=${DOCKER_WAIT:-60}

log() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

sudo_cmd=()
[ "$(id -u)" = 0 ] || sudo_cmd=(sudo)

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null && engine_up; then
  log "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

if ! command -v dockerd >/dev/null; then
  log "installing docker.io (Debian's Docker engine)"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo_cmd[@]}" apt-get install -y -q docker.io >/tmp/docker-engine-apt.log 2>&1; then
    # Package lists may be missing or stale on a fresh machine.
    "${sudo_cmd[@]}" apt-get update -q >>/tmp/docker-engine-apt.log 2>&1 || true
    "${sudo_cmd[@]}" apt-get install -y -q docker.io >>/tmp/docker-engine-apt.log 2>&1 ||
      { tail -20 /tmp/docker-engine-apt.log >&2; die "apt-get install docker.io failed (log: /tmp/docker-engine-apt.log)"; }
  fi
  command -v dockerd >/dev/null || die "docker.io is installed but dockerd is not on PATH"
fi
command -v docker >/dev/null || die "no docker CLI on PATH (the docker.io package provides one)"

if ! pgrep -x dockerd >/dev/null; then
  log "starting dockerd (log: $DOCKERD_LOG)"
  # setsid: the engine outlives this script and the shell or job that ran it.
  "${sudo_cmd[@]}" setsid sh -c "exec dockerd >>'$DOCKERD_LOG' 2>&1" </dev/null >/dev/null 2>&1 &
fi

for _ in $(seq 1 $((DOCKER_WAIT * 2))); do
  if engine_up; then
    log "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
  fi
  sleep 0.5
done
tail -20 "$DOCKERD_LOG" >&2 2>/dev/null || true
die "dockerd did not answer within ${DOCKER_WAIT}s (log: $DOCKERD_LOG)"
