#!/usr/bin/env bash
# try.sh: run trackerd against a database, with its embedded NATS — the
# README's quick start in one command.
#
#   scripts/try.sh [--yes] [DATABASE_URI] [trackerd run flags...]
#
# DATABASE_URI defaults to $TRACKER_DATABASE_URI, else $SQLALCHEMY_DATABASE_URI,
# else the local PostgreSQL database test
# (postgresql://postgres@127.0.0.1:5432/test).
#
#   1. builds trackerd (go build, into a temporary directory);
#   2. runs `trackerd check` on the database;
#   3. when the only thing missing is wal_level = logical, and the server is
#      a PostgreSQL cluster of this machine (pg_lsclusters lists one on its
#      port with its data directory) that the URI's role may reconfigure (a
#      superuser) and that we may restart (root, or sudo), it says what it
#      will change — ALTER SYSTEM SET wal_level = logical, then a restart of
#      that cluster with pg_ctlcluster, which disconnects its clients for a
#      moment — asks (a "y" on stdin; --yes answers for you), and does it,
#      using sudo for the restart only, and only when not root;
#   4. any other server it never changes: it prints the check's report and
#      what to ask the server's administrator for, and exits 1;
#   5. runs `trackerd run --database-uri URI --track-modifications` (plus
#      the flags given) until interrupted; its exit status is try.sh's.
#
# A server that is ready is not touched: a second run changes and restarts
# nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
DEFAULT_URI=postgresql://postgres@127.0.0.1:5432/test

say() { printf 'try: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
usage() { sed -n '2,25s/^# \{0,1\}//p' "$0" >&2; }

yes=0
while [ $# -gt 0 ]; do
  case $1 in
    -y | --yes) yes=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) break ;;
  esac
done
uri=${TRACKER_DATABASE_URI:-${SQLALCHEMY_DATABASE_URI:-$DEFAULT_URI}}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then uri=$1; shift; fi
flags=(--database-uri "$uri" --track-modifications "$@")
# The URI as it may be shown: without its password.
shown=$(printf '%s' "$uri" | sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#')

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trackerd-try.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "building trackerd"
go -C "$root" build -o "$tmp/trackerd" ./cmd/trackerd
trackerd=$tmp/trackerd

# check: run `trackerd check`, keeping its report in $report; failing lists
# the names of the failed checks that stop `trackerd run` (a table without
# a replica identity only gets a warning at start, so it is not one). A
# check that reports no FAIL line but fails (a bad flag or key: exit 2)
# stops here, with its message and status.
report='' failing=''
check() {
  local rc=0
  report=$("$trackerd" check "${flags[@]}" 2>&1) || rc=$?
  failing=$(printf '%s\n' "$report" | sed -nE 's/^FAIL +[^ ]+ +([^:]+):.*/\1/p' | grep -vx 'replica identity' || true)
  if [ $rc != 0 ] && ! printf '%s\n' "$report" | grep -q '^FAIL'; then
    printf '%s\n' "$report" >&2
    exit $rc
  fi
}

# ask_admin REASON: this script may not make the fixes trackerd needs; print
# the check's report, then what to ask the database's administrator for
# (and what to fix on this machine, for NATS), and stop.
ask_admin() {
  printf '%s\n' "$report" >&2
  say "trackerd cannot follow $shown yet, and this script changes nothing there: $1."
  printf '%s\n' "$report" | awk '
    /^FAIL/ { scope = $2; name = $0; sub(/^FAIL +[^ ]+ +/, "", name); sub(/:.*/, "", name); next }
    name != "" && $1 == "fix:" { sub(/^ *fix: /, ""); print (scope == "nats" ? "L" : "A"), name ": " $0; name = "" }
  ' >"$tmp/fixes"
  if grep -q '^A' "$tmp/fixes"; then
    say "Ask the database's administrator for (from \`trackerd check\` above):"
    sed -n 's/^A /try:   /p' "$tmp/fixes" >&2
  fi
  if grep -q '^L' "$tmp/fixes"; then
    say "On this machine:"
    sed -n 's/^L /try:   /p' "$tmp/fixes" >&2
  fi
  say "then run scripts/try.sh again."
  exit 1
}

# local_cluster: set ver, cluster, port and datadir when the URI's server is
# a PostgreSQL cluster of this machine (reached over loopback or a socket,
# and listed by pg_lsclusters with its port and data directory) and the
# role is a superuser; else set why to the reason.
ver='' cluster='' port='' datadir='' why=''
local_cluster() {
  command -v psql >/dev/null || { why="psql is not installed"; return 1; }
  command -v pg_lsclusters >/dev/null || { why="pg_lsclusters is missing (not a Debian PostgreSQL installation)"; return 1; }
  # psql takes postgresql:// and postgres://, not SQLAlchemy's +driver.
  local pguri info addr super
  pguri=$(printf '%s' "$uri" | sed -E 's#^(postgres(ql)?)\+[^:/]*://#\1://#')
  info=$(psql "$pguri" -XAtq -F ' ' -c "select coalesce(host(inet_server_addr()), 'socket'), current_setting('port'),
      (select rolsuper from pg_roles where rolname = current_user), current_setting('data_directory')" 2>&1) ||
    { why="its server settings cannot be read ($info)"; return 1; }
  read -r addr port super datadir <<<"$info"
  case $addr in
    socket | 127.* | ::1) ;;
    *) why="its server is not this machine's (it answers from $addr)"; return 1 ;;
  esac
  [ "$super" = t ] || { why="the URI's role is not a superuser, so it may not ALTER SYSTEM"; return 1; }
  read -r ver cluster < <(pg_lsclusters --no-header | awk -v p="$port" -v d="$datadir" '$3 == p && $6 == d { print $1, $2 }') || true
  [ -n "$cluster" ] || { why="it is not a PostgreSQL cluster of this machine (pg_lsclusters lists none on port $port with data directory $datadir)"; return 1; }
}

check
if [ -n "$failing" ]; then
  if [ "$failing" != wal_level ]; then
    if printf '%s\n' "$failing" | grep -qx wal_level; then ask_admin "this script sets only wal_level, and more is missing"; fi
    ask_admin "\`trackerd check\` failed"
  fi
  local_cluster || ask_admin "$why"
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || ask_admin "restarting PostgreSQL needs root, and you are not root and have no sudo"
    sudo=(sudo)
  fi
  level=$(printf '%s\n' "$report" | sed -nE 's/^FAIL .* wal_level: wal_level is ([a-z]+).*/\1/p')
  say "PostgreSQL $ver/$cluster on this machine (port $port, data directory $datadir) has wal_level = ${level:-?}; trackerd needs logical."
  say "To prepare it, this script will:"
  say "  1. ALTER SYSTEM SET wal_level = logical;   (over the URI, as its superuser role; written to postgresql.auto.conf)"
  say "  2. ${sudo[*]:+${sudo[*]} }pg_ctlcluster $ver $cluster restart   (a restart of the server, as root${sudo[*]:+ through sudo}: every client of it is disconnected for a moment)"
  if [ $yes = 0 ]; then
    printf 'Proceed? [y/N] ' >&2
    answer=
    read -r answer || true
    case $answer in
      y | Y | yes | YES) ;;
      *) say "nothing changed. Run the two steps above yourself, or scripts/try.sh --yes to let this script do them."; exit 1 ;;
    esac
  fi
  pguri=$(printf '%s' "$uri" | sed -E 's#^(postgres(ql)?)\+[^:/]*://#\1://#')
  say "ALTER SYSTEM SET wal_level = logical"
  psql "$pguri" -XAtq -c 'ALTER SYSTEM SET wal_level = logical'
  say "restarting PostgreSQL $ver/$cluster"
  "${sudo[@]}" pg_ctlcluster "$ver" "$cluster" restart
  for _ in $(seq 1 60); do psql "$pguri" -XAtq -c 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
  check
  if [ -n "$failing" ]; then
    printf '%s\n' "$report" >&2
    die "PostgreSQL $ver/$cluster was restarted, but \`trackerd check\` still fails (above)"
  fi
  say "PostgreSQL $ver/$cluster now has wal_level = logical"
fi
# Tables without a replica identity: trackerd warns at start; show the fix.
printf '%s\n' "$report" | grep -A1 '^FAIL .* replica identity:' >&2 || true

say "starting trackerd run --database-uri '$shown' --track-modifications${*:+ $*} (embedded NATS unless NATS_URL is set; Ctrl-C stops it)"
"$trackerd" run "${flags[@]}"
