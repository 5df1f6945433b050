#!/usr/bin/env bash
# test.sh: run every test of trackerd — unit, integration and end-to-end —
# against the servers named by TRACKERD_TEST_*_URL, defaulting to this
# machine's PostgreSQL, MariaDB and NATS (prepared by scripts/setup-servers.sh).
#
#   scripts/test.sh              everything
#   scripts/test.sh ./tracker/   one package (extra arguments go to go test)
#
# FUZZTIME (default 10s) is how long each fuzz target runs; 0 skips fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

export TRACKERD_TEST_POSTGRES_URL=${TRACKERD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export TRACKERD_TEST_MYSQL_URL=${TRACKERD_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
export TRACKERD_TEST_NATS_URL=${TRACKERD_TEST_NATS_URL:-nats://127.0.0.1:4222}
# The CA of the MySQL server's TLS certificate (setup-servers.sh makes it);
# set it empty to skip the binlog-over-TLS test against another server.
export TRACKERD_TEST_MYSQL_TLS_CA=${TRACKERD_TEST_MYSQL_TLS_CA-/etc/mysql/trackerd-tls/ca.pem}
FUZZTIME=${FUZZTIME:-10s}

step() { printf '\n== %s\n' "$*" >&2; }

if [ $# -gt 0 ]; then
  exec go test -count=1 "$@"
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi

step "go vet"
go vet ./...

step "go test (unit, integration, e2e)"
go test -count=1 -timeout 40m ./...

if [ "$FUZZTIME" != 0 ]; then
  step "fuzz (each target for $FUZZTIME)"
  # Every Fuzz function of every package, run on its own.
  for pkg in $(go list ./...); do
    dir=$(go list -f '{{.Dir}}' "$pkg")
    for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
      echo "   $pkg $f" >&2
      # Quiet when it passes; the whole output (the failing input and how to
      # re-run it) when it does not.
      # -fuzzminimizetime: minimizing each new interesting input may take
      # 60 s by default, which would eat a short run whole.
      if ! out=$(go test -run='^$' -fuzz="^$f\$" -fuzztime="$FUZZTIME" -fuzzminimizetime=2s "$pkg" 2>&1); then
        printf '%s\n' "$out" >&2
        exit 1
      fi
    done
  done
fi
step "all tests passed"
