#!/usr/bin/env bash
# install-tools.sh: install the command-line tools the tests use beside the
# servers, into $(go env GOPATH)/bin. Idempotent: a tool already there at
# the pinned version is left alone. .ci/run calls it before scripts/test.sh.
#
#   nats  github.com/nats-io/natscli v0.5.0 — e2e/interop_test.go reads
#         trackerd's events with `nats sub` and `nats stream view`
set -euo pipefail

NATSCLI_VERSION=${NATSCLI_VERSION:-v0.5.0}
bin="$(go env GOPATH | cut -d: -f1)/bin"

have_version() { # tool version
  [ -x "$bin/$1" ] && [ "$("$bin/$1" --version 2>&1 | tr -d '[:space:]')" = "$2" ]
}

if have_version nats "$NATSCLI_VERSION"; then
  echo "nats $NATSCLI_VERSION: already in $bin" >&2
else
  echo "installing nats $NATSCLI_VERSION into $bin" >&2
  GOBIN="$bin" go install "github.com/nats-io/natscli/nats@$NATSCLI_VERSION"
fi
