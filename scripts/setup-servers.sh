#!/usr/bin/env bash
# setup-servers.sh: make this machine's PostgreSQL, MariaDB and NATS ready for
# trackerd's tests and for running trackerd against them. Idempotent: a second
# run changes nothing and restarts nothing.
#
#   PostgreSQL 15: wal_level=logical, room for test slots,
#                  max_prepared_transactions (two-phase commit), and a role group
#                  `trackerd_pwauth` whose members log in with a password over
#                  TCP (the rest of the host keeps its trust auth), so tests can
#                  check that passwords never leak.
#   MariaDB 10.11: log_bin, binlog_format=ROW, binlog_row_image=FULL,
#                  binlog_row_metadata=FULL, server_id, max_allowed_packet
#                  64M, via a file under /etc/mysql/mariadb.conf.d/; TLS with
#                  a test CA (/etc/mysql/trackerd-tls/ca.pem; the server's
#                  certificate is for 127.0.0.1 and localhost) for the
#                  binlog-over-TLS test.
#   NATS:          answers on 127.0.0.1:4222 with JetStream.
#
#   scripts/setup-servers.sh           make every change still needed (root)
#   scripts/setup-servers.sh --check   only list them, as any user: exit 0
#                                      when there is nothing to change, 3
#                                      when there is (scripts/test.sh asks
#                                      for sudo only then), 1 on errors
#
# Every change goes through `apply`, which logs it and, with --check, only
# counts it. A restart is a change of its own, made only when a setting that
# needs one differs.
set -euo pipefail

PGVER=${PGVER:-15}
PGCLUSTER=${PGCLUSTER:-main}
PGPORT=${PGPORT:-5432}
PGCONF=/etc/postgresql/$PGVER/$PGCLUSTER
MYCONF_DIR=/etc/mysql/mariadb.conf.d
MYCONF=$MYCONF_DIR/60-trackerd-binlog.cnf
MYTLS=${MYTLS:-/etc/mysql/trackerd-tls}
NATS_HOSTPORT=${NATS_HOSTPORT:-127.0.0.1:4222}

log() { printf 'setup-servers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

CHECK=0
case ${1:-} in
  --check) CHECK=1 ;;
  "") ;;
  *) die "usage: setup-servers.sh [--check]" ;;
esac
[ $CHECK = 1 ] || [ "$(id -u)" = 0 ] || die "run as root: it edits server configuration and restarts servers (--check lists what it would change, as any user)"

changes=0
apply() { # description command...: one change; with --check only listed
  local what=$1; shift
  changes=$((changes + 1))
  if [ $CHECK = 1 ]; then log "would: $what"; return 0; fi
  log "$what"
  "$@"
}

# (env -u: Debian's psql wrapper reads PGCLUSTER as "version/cluster")
psql_q() { env -u PGCLUSTER psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -XAtqc "$1"; }
wait_for() { # what command...
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "$what did not come up within 30 s"
}

# ------------------------------------------------------------ PostgreSQL ---
pg_start() { pg_ctlcluster --skip-systemctl-redirect "$PGVER" "$PGCLUSTER" start 2>/dev/null || true; }
pg_ready() { psql_q 'select 1'; }

pg_restart=0
want() { # name value: a server setting, by ALTER SYSTEM
  local cur; cur=$(psql_q "select setting from pg_settings where name='$1'")
  [ "$cur" != "$2" ] || return 0
  apply "PostgreSQL: $1 = $cur -> $2" psql_q "ALTER SYSTEM SET $1 = '$2'" >/dev/null
  if [ "$(psql_q "select context from pg_settings where name='$1'")" = postmaster ]; then
    pg_restart=1
  elif [ $CHECK = 0 ]; then
    psql_q 'select pg_reload_conf()' >/dev/null
  fi
}

# Password logins for members of trackerd_pwauth, ahead of the trust lines.
HBA=$PGCONF/pg_hba.conf
hba_has_pwauth() { # the file when readable (root), else what the server reads
  if [ -r "$HBA" ]; then grep -q 'trackerd_pwauth' "$HBA"
  else [ "$(psql_q "select count(*) from pg_hba_file_rules where '+trackerd_pwauth' = any(user_name)")" != 0 ]; fi
}
hba_add_pwauth() {
  local tmp; tmp=$(mktemp)
  { echo '# trackerd tests: members of trackerd_pwauth must give a password over TCP'
    echo 'host    all    +trackerd_pwauth    127.0.0.1/32    scram-sha-256'
    echo 'host    all    +trackerd_pwauth    ::1/128         scram-sha-256'
    cat "$HBA"; } >"$tmp"
  cat "$tmp" >"$HBA"; rm -f "$tmp"
  psql_q 'select pg_reload_conf()' >/dev/null
}
pg_restart_now() {
  pg_ctlcluster --skip-systemctl-redirect "$PGVER" "$PGCLUSTER" restart
  wait_for PostgreSQL pg_ready
}

setup_postgres() {
  if ! pg_ready >/dev/null 2>&1; then
    apply "PostgreSQL: start $PGVER/$PGCLUSTER" pg_start
    [ $CHECK = 0 ] || { log "PostgreSQL does not answer: its settings are not checked"; return 0; }
  fi
  wait_for PostgreSQL pg_ready

  want wal_level logical
  want max_replication_slots 40
  want max_wal_senders 40
  # Two-phase commit (PREPARE TRANSACTION), which trackerd publishes as true
  # before_commit events; 0, PostgreSQL's default, disables it.
  want max_prepared_transactions 10
  # Let tests see slow standby updates fail quickly enough, but keep the default.
  want wal_sender_timeout 60000

  hba_has_pwauth || apply "PostgreSQL: password auth for +trackerd_pwauth in $HBA" hba_add_pwauth
  [ -n "$(psql_q "select 1 from pg_roles where rolname='trackerd_pwauth'")" ] ||
    apply "PostgreSQL: CREATE ROLE trackerd_pwauth NOLOGIN" psql_q 'CREATE ROLE trackerd_pwauth NOLOGIN' >/dev/null

  [ $pg_restart = 0 ] || apply "PostgreSQL: restart $PGVER/$PGCLUSTER for the settings above" pg_restart_now
  [ -n "$(psql_q "select 1 from pg_database where datname='test'")" ] ||
    apply "PostgreSQL: CREATE DATABASE test" psql_q 'CREATE DATABASE test' >/dev/null
  [ $CHECK = 1 ] && return 0
  [ "$(psql_q 'show wal_level')" = logical ] || die "PostgreSQL wal_level is still not logical"
  log "PostgreSQL ready (wal_level=logical)"
}

# --------------------------------------------------------------- MariaDB ---
my_q() { mariadb -uroot -h127.0.0.1 -P3306 -NBe "$1"; }
my_ready() { my_q 'select 1'; }
my_start() { start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd; }
my_restart_now() {
  mariadb-admin -uroot -h127.0.0.1 shutdown || true
  for _ in $(seq 1 60); do pgrep -x mariadbd >/dev/null || break; sleep 0.5; done
  my_start
  wait_for MariaDB my_ready
}

# A test CA and a server certificate for 127.0.0.1/localhost, made once.
make_tls() {
  if ! command -v openssl >/dev/null; then
    log "installing openssl (for the test certificates)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null; }
  fi
  mkdir -p "$MYTLS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=trackerd test CA" \
    -keyout "$MYTLS/ca-key.pem" -out "$MYTLS/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$MYTLS/server-key.pem" -out "$MYTLS/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$MYTLS/san.ext"
  openssl x509 -req -in "$MYTLS/server.csr" -CA "$MYTLS/ca.pem" -CAkey "$MYTLS/ca-key.pem" \
    -CAcreateserial -days 3650 -extfile "$MYTLS/san.ext" -out "$MYTLS/server-cert.pem" 2>/dev/null
  chown -R mysql: "$MYTLS" 2>/dev/null || true
  chmod 0644 "$MYTLS/ca.pem" "$MYTLS/server-cert.pem"
  chmod 0600 "$MYTLS/ca-key.pem" "$MYTLS/server-key.pem"
}

want_cnf=$(cat <<CNF
# trackerd: row-based binary log with full row images and column metadata.
[mariadbd]
log_bin                = mariadb-bin
binlog_format          = ROW
binlog_row_image       = FULL
binlog_row_metadata    = FULL
server_id              = 1
binlog_expire_logs_seconds = 864000
# room for the 20 MiB LONGBLOB of e2e/oversize_test.go (default 16 MiB)
max_allowed_packet     = 64M
# TLS for the binlog-over-TLS tests (clients choose; plain text still works)
ssl_ca                 = $MYTLS/ca.pem
ssl_cert               = $MYTLS/server-cert.pem
ssl_key                = $MYTLS/server-key.pem
CNF
)
write_cnf() { mkdir -p "$MYCONF_DIR"; printf '%s\n' "$want_cnf" >"$MYCONF"; }
add_includedir() { printf '\n!includedir %s/\n' "$MYCONF_DIR" >>"$1"; }

setup_mariadb() {
  if ! my_ready >/dev/null 2>&1; then
    apply "MariaDB: start mariadbd" my_start
    [ $CHECK = 0 ] || { log "MariaDB does not answer: its settings are not checked"; return 0; }
  fi
  wait_for MariaDB my_ready

  # Debian's /etc/mysql/my.cnf normally includes mariadb.conf.d; this machine's
  # stripped one may not, so add the include once.
  local f
  for f in /etc/mysql/my.cnf /etc/mysql/mariadb.cnf; do
    [ -f "$f" ] || continue
    grep -q "^!includedir $MYCONF_DIR" "$f" || apply "MariaDB: add !includedir $MYCONF_DIR to $f" add_includedir "$f"
    break
  done
  [ -s "$MYTLS/server-key.pem" ] || apply "MariaDB: make a test CA and server certificate in $MYTLS" make_tls
  if [ ! -f "$MYCONF" ] || [ "$(cat "$MYCONF")" != "$want_cnf" ]; then
    apply "MariaDB: write $MYCONF" write_cnf
  fi
  local my_restart=0
  [ "$(my_q 'select @@log_bin')" = 1 ] || my_restart=1
  [ "$(my_q 'select @@global.binlog_format')" = ROW ] || my_restart=1
  [ "$(my_q 'select @@global.binlog_row_image')" = FULL ] || my_restart=1
  [ "$(my_q 'select @@global.binlog_row_metadata')" = FULL ] || my_restart=1
  [ "$(my_q 'select @@have_ssl')" = YES ] || my_restart=1
  [ $my_restart = 0 ] || apply "MariaDB: restart for the binlog and TLS settings of $MYCONF" my_restart_now
  # max_allowed_packet is dynamic: raise it without a restart.
  [ "$(my_q 'select @@global.max_allowed_packet')" -ge 67108864 ] ||
    apply "MariaDB: SET GLOBAL max_allowed_packet = 64M" my_q 'set global max_allowed_packet = 67108864'
  [ -n "$(my_q "select 1 from information_schema.schemata where schema_name = 'test'")" ] ||
    apply "MariaDB: CREATE DATABASE test" my_q 'create database if not exists test'
  [ $CHECK = 1 ] && return 0
  [ "$(my_q 'select @@log_bin')" = 1 ] || die "MariaDB log_bin is still off (is $MYCONF read?)"
  [ "$(my_q 'select @@global.binlog_format')" = ROW ] || die "MariaDB binlog_format is not ROW"
  [ "$(my_q 'select @@have_ssl')" = YES ] || die "MariaDB TLS is off (have_ssl=$(my_q 'select @@have_ssl')): see the error log"
  log "MariaDB ready (log_bin, ROW, FULL, metadata FULL, TLS)"
}

# ------------------------------------------------------------------ NATS ---
nats_ready() { # a PING/PONG over the client protocol, plus JetStream in INFO
  exec 3<>"/dev/tcp/${NATS_HOSTPORT%:*}/${NATS_HOSTPORT#*:}" || return 1
  local info; IFS= read -r -t 2 info <&3 || { exec 3<&-; return 1; }
  exec 3<&-
  case $info in *'"jetstream":true'*) return 0 ;; *) return 2 ;; esac
}
nats_start() {
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a "${NATS_HOSTPORT%:*}" -p "${NATS_HOSTPORT#*:}" -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for NATS nats_ready
}

setup_nats() {
  nats_ready 2>/dev/null || apply "NATS: start nats-server with JetStream on $NATS_HOSTPORT" nats_start
  [ $CHECK = 1 ] || log "NATS ready on $NATS_HOSTPORT (JetStream)"
}

# ------------------------------------------------------------------ main ---
setup_postgres
setup_mariadb
setup_nats
if [ $CHECK = 1 ]; then
  [ $changes = 0 ] || { log "$changes change(s) to make: run scripts/setup-servers.sh as root"; exit 3; }
  log "nothing to change: PostgreSQL, MariaDB and NATS are ready"
elif [ $changes = 0 ]; then
  log "nothing changed: every server was ready"
fi
