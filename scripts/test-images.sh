#!/usr/bin/env bash
# test-images.sh: build the local container images the fault tests run
# (e2e/containers_test.go), without any image registry. Idempotent: an image
# that exists already (docker image inspect) is left alone; FORCE=1 rebuilds.
#
#   tc-local/postgres:15-logical   PostgreSQL 15, wal_level=logical, 20 slots and
#                                  WAL senders, user/password postgres/postgres
#                                  (scram over TCP), fsync off; ENTRYPOINT postgres,
#                                  STOPSIGNAL SIGINT (fast shutdown)
#   tc-local/mariadb:10.11-binlog  MariaDB 10.11, log_bin, ROW, FULL image,
#                                  binlog_row_metadata=FULL, server_id=1,
#                                  root/root from any host; ENTRYPOINT mariadbd
#   tc-local/nats:<ver>-js         nats-server (the version go.mod pins) with
#                                  JetStream, -js -sd /data -m 8222; FROM scratch
#   tc-local/golang:<go>           the Go toolchain of this machine (go env GOROOT)
#                                  with a shell, coreutils' basics and CA
#                                  certificates: the Dockerfile's GO_IMAGE
#   tc-local/distroless-static:nonroot
#                                  a distroless-like runtime: passwd with root,
#                                  nobody and nonroot (65532), CA certificates,
#                                  zoneinfo, /tmp, no shell: the Dockerfile's
#                                  RUNTIME_IMAGE
# The last two are the base images of trackerd's own image, for
# e2e/image_test.go, which builds the Dockerfile with them.
#
# Each image's ENTRYPOINT is the server, so a container's Cmd only adds flags
# (["-c","wal_sender_timeout=10s"], ["--server-id=7"], ["-js","-sd","/data"]).
#
# Two ways to build PostgreSQL and MariaDB (TEST_IMAGES_FROM):
#   host         copy the host's installed postgresql-15 / mariadb-server
#                binaries and the libraries ldd names: seconds, ~100 MB images,
#                the host's versions. Needs those packages installed.
#   debootstrap  a minimal Debian bookworm with the packages from the apt
#                mirror (about 50 s each, 250-350 MB). Needs only a mirror.
#   auto         (default) host where the host has the server, else debootstrap.
# NATS is compiled from the Go module cache (the nats-server version go.mod
# pins; ~50 s the first time, 1 s once Go's build cache has it).
#
# Usage:  scripts/test-images.sh [pg] [maria] [nats] [go] [runtime]   (default: all)
#         scripts/test-images.sh --check [pg] [maria] [nats] [go] [runtime]
#                 as any user who may use Docker: exit 0 when every image is
#                 present, 3 when one is missing (scripts/test.sh asks for
#                 sudo only then)
# Env:    PREFIX (tc-local), TEST_IMAGES_FROM (auto), FORCE=1, WORK
#         (/var/tmp/trackerd-test-images), MIRROR (the apt sources' mirror),
#         NATS_VERSION (go.mod's), KEEP_LLVM=1 (keep PostgreSQL's JIT).
# Needs root (chroot, mknod, debootstrap) and a running engine
# (scripts/docker-engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-tc-local}
FROM=${TEST_IMAGES_FROM:-auto}
WORK=${WORK:-/var/tmp/trackerd-test-images}
if [ -z "${NATS_VERSION:-}" ]; then
  NATS_VERSION=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2 2>/dev/null || echo v2.15.2)
fi
if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
PG_IMAGE=$PREFIX/postgres:15-logical
MARIA_IMAGE=$PREFIX/mariadb:10.11-binlog
NATS_IMAGE=$PREFIX/nats:${NATS_VERSION#v}-js
GOROOT_HOST=$(go env GOROOT)
GO_VERSION=$(go env GOVERSION)
GO_IMAGE=$PREFIX/golang:${GO_VERSION#go}
RUNTIME_IMAGE=$PREFIX/distroless-static:nonroot
PGBIN=/usr/lib/postgresql/15/bin

log() { printf '[%(%H:%M:%S)T] test-images: %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------- helpers ---

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# finish imports root filesystem $1 under a temporary tag, then adds what
# `docker import --change` cannot (STOPSIGNAL, LABEL) with a metadata-only
# legacy build FROM that local image (nothing is pulled), tagging the result
# $2. The final name appears only once the image is complete.
finish() { # rootfs image stopsignal variant [--change ...]
  local dir=$1 image=$2 sig=$3 variant=$4; shift 4
  local tmp=$PREFIX/partial:$(echo "$image" | tr '/:' '--')
  log "docker import $image ($variant)"
  tar --numeric-owner --exclude=./.bootstrapped -C "$dir" -c . | docker import "$@" - "$tmp" >/dev/null
  { printf 'FROM %s\n' "$tmp"
    [ -z "$sig" ] || printf 'STOPSIGNAL %s\n' "$sig"
    printf 'LABEL org.trackerd.test-image.variant=%s org.trackerd.test-image.built=%s\n' "$variant" "$(date -u +%FT%TZ)"
  } | DOCKER_BUILDKIT=0 docker build -q -t "$image" - >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
  docker rmi "$tmp" >/dev/null 2>&1 || true
}

# Drop what a test server never needs (apt caches and lists, docs, locales).
trim() { # dir
  local d=$1
  rm -rf "$d"/var/cache/apt/* "$d"/var/lib/apt/lists/* "$d"/usr/share/doc/* \
         "$d"/usr/share/man/* "$d"/usr/share/info/* "$d"/usr/share/locale/* \
         "$d"/var/log/*.log "$d"/var/cache/debconf/*-old
}

# debootstrap a minbase bookworm with extra packages (reused when present).
bootstrap() { # dir packages
  local dir=$1 pkgs=$2
  if [ -f "$dir/.bootstrapped" ]; then log "reusing $dir"; return; fi
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  rm -rf "$dir"
  log "debootstrap --include=$pkgs from $MIRROR"
  debootstrap --variant=minbase --include="$pkgs" bookworm "$dir" "$MIRROR" >"$dir.debootstrap.log" 2>&1 \
    || { tail -20 "$dir.debootstrap.log" >&2; exit 1; }
  touch "$dir/.bootstrapped"
}

# copy files plus the shared libraries ldd says they need into root $R
copy_with_libs() { # R files...
  local R=$1; shift
  for f in "$@"; do
    mkdir -p "$R$(dirname "$f")"; cp -a "$f" "$R$f"
    ldd "$f" 2>/dev/null | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
  done | sort -u | while read -r lib; do
    mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
  done
}
copy_tree() { # R paths...
  local R=$1; shift
  for d in "$@"; do mkdir -p "$R$(dirname "$d")"; cp -a "$d" "$R$(dirname "$d")/"; done
}

# skeleton makes a tiny root: passwd/group for the server user, /dev/null for
# the build-time chroot (docker mounts its own /dev), and sh/cat/awk/grep,
# which testcontainers' in-container port check runs.
skeleton() { # R user uid home
  local R=$1
  rm -rf "$R"; mkdir -p "$R"/{etc,tmp,run,dev,usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64}
  ln -s usr/bin "$R/bin"; ln -s usr/sbin "$R/sbin"; ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"
  chmod 1777 "$R/tmp"
  mknod -m 666 "$R/dev/null" c 1 3
  printf 'root:x:0:0:root:/root:/bin/sh\n%s:x:%s:%s::%s:/bin/sh\n' "$2" "$3" "$3" "$4" >"$R/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$2" "$3" >"$R/etc/group"
  echo '127.0.0.1 localhost' >"$R/etc/hosts"
  copy_with_libs "$R" /usr/bin/dash /usr/bin/cat /usr/bin/mawk /usr/bin/grep /usr/bin/sleep /usr/bin/kill
  ln -sf dash "$R/usr/bin/sh"; ln -sf mawk "$R/usr/bin/awk"
  copy_tree "$R" /usr/lib/locale/C.utf8 /usr/share/zoneinfo
}

# ----------------------------------------------------------- PostgreSQL ---

# PostgreSQL settings of both variants. Anything here can be overridden per
# container with -c flags (wal_sender_timeout, checkpoint_timeout, ...).
pg_configure() { # datadir
  cat >>"$1/postgresql.conf" <<'EOF'

# --- trackerd test image ---
listen_addresses = '*'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_connections = 100
dynamic_shared_memory_type = posix
# A killed container keeps the host's page cache, so committed data survives
# simulated crashes without fsync; only a host crash would lose it.
fsync = off
full_page_writes = off
jit = off
log_line_prefix = '%m [%p] '
EOF
  cat >>"$1/pg_hba.conf" <<'EOF'
host    all             all             all                     scram-sha-256
host    replication     all             all                     scram-sha-256
EOF
}

pg_initdb() { # R uid:gid (initdb as the postgres user, in the chroot)
  local R=$1 ids=$2
  rm -rf "$R"/var/lib/postgresql/data; mkdir -p "$R"/var/lib/postgresql/data "$R"/var/run/postgresql
  echo postgres >"$R"/pwfile
  chown -R "$ids" "$R"/var/lib/postgresql "$R"/var/run/postgresql "$R"/pwfile
  chroot --userspec="$ids" "$R" $PGBIN/initdb -D /var/lib/postgresql/data -U postgres --pwfile=/pwfile \
      -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >"$R.initdb.log" 2>&1 \
      || { cat "$R.initdb.log" >&2; exit 1; }
  rm -f "$R"/pwfile
  pg_configure "$R"/var/lib/postgresql/data
}

pg_finish() { # R variant
  finish "$1" "$PG_IMAGE" SIGINT "$2" \
    --change 'USER postgres' --change 'EXPOSE 5432' \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change "ENV PATH=$PGBIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENTRYPOINT [\"$PGBIN/postgres\", \"-D\", \"/var/lib/postgresql/data\"]"
}

build_pg_host() {
  local R=$WORK/root-pg-host
  skeleton "$R" postgres 999 /var/lib/postgresql
  copy_with_libs "$R" $PGBIN/postgres $PGBIN/initdb $PGBIN/pg_ctl $PGBIN/psql $PGBIN/pg_controldata \
    $(ls /usr/lib/postgresql/15/lib/*.so | grep -v llvmjit)
  copy_tree "$R" /usr/share/postgresql/15
  pg_initdb "$R" 999:999
  pg_finish "$R" host
  rm -rf "$R"   # rebuilt from the host's files each time: nothing to keep
}

build_pg_debootstrap() {
  local R=$WORK/root-pg
  bootstrap "$R" postgresql-15
  rm -rf "$R"/etc/postgresql/15/main "$R"/var/lib/postgresql/15
  # Debian's postgres user gets whatever uid debootstrap gave it.
  pg_initdb "$R" "$(awk -F: '$1=="postgres"{print $3":"$4}' "$R/etc/passwd")"
  if [ "${KEEP_LLVM:-0}" != 1 ]; then   # LLVM is only used by the JIT
    rm -rf "$R"/usr/lib/postgresql/15/lib/llvmjit* "$R"/usr/lib/postgresql/15/lib/bitcode \
           "$R"/usr/lib/x86_64-linux-gnu/libLLVM-* "$R"/usr/lib/x86_64-linux-gnu/libz3.so*
  fi
  trim "$R"
  pg_finish "$R" debootstrap
}

# -------------------------------------------------------------- MariaDB ---

maria_cnf() {
  cat <<'EOF'
[mariadbd]
bind-address             = 0.0.0.0
skip-name-resolve
log_bin                  = mysql-bin
binlog_format            = ROW
binlog_row_image         = FULL
binlog_row_metadata      = FULL
server_id                = 1
max_allowed_packet       = 64M
innodb_log_file_size     = 16M
innodb_buffer_pool_size  = 128M
# commit to the OS page cache only: survives a killed container, not a host crash
innodb_flush_log_at_trx_commit = 2
sync_binlog              = 0
EOF
}

maria_users() {
  cat <<'EOF'
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY 'root';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS test;
EOF
}

maria_finish() { # R variant
  finish "$1" "$MARIA_IMAGE" "" "$2" \
    --change 'USER mysql' --change 'EXPOSE 3306' \
    --change 'ENTRYPOINT ["/usr/sbin/mariadbd"]'
}

build_maria_host() {
  local R=$WORK/root-maria-host S=/usr/share/mysql
  skeleton "$R" mysql 999 /nonexistent
  copy_with_libs "$R" /usr/sbin/mariadbd /usr/bin/mariadb /usr/bin/my_print_defaults \
    $(ls /usr/lib/mysql/plugin/*.so)
  copy_tree "$R" $S /usr/lib/mysql/plugin
  mkdir -p "$R"/etc/mysql "$R"/var/lib/mysql "$R"/run/mysqld
  { printf '[mariadbd]\nuser=mysql\ndatadir=/var/lib/mysql\nsocket=/run/mysqld/mysqld.sock\n'
    printf 'pid-file=/run/mysqld/mysqld.pid\nlc-messages-dir=/usr/share/mysql\n'
    printf 'character-set-server=utf8mb4\ncollation-server=utf8mb4_general_ci\n'
    maria_cnf | grep -v '^\[mariadbd\]'
    printf '[client]\nsocket=/run/mysqld/mysqld.sock\n'; } >"$R"/etc/mysql/my.cnf
  chown -R 999:999 "$R"/var/lib/mysql "$R"/run/mysqld
  log "bootstrap MariaDB system tables (host mariadbd, chroot)"
  # mariadb-install-db is a shell script needing many tools: feed the SQL it
  # would use straight into mariadbd --bootstrap.
  { echo "create database if not exists mysql;"; echo "use mysql;"; echo "SET @auth_root_socket='root';"
    cat $S/mysql_system_tables.sql $S/mysql_performance_tables.sql $S/mysql_system_tables_data.sql \
        $S/fill_help_tables.sql $S/maria_add_gis_sp_bootstrap.sql $S/mysql_sys_schema.sql
    maria_users
  } | chroot --userspec=999:999 "$R" /usr/sbin/mariadbd --bootstrap --skip-log-bin --datadir=/var/lib/mysql \
        >"$R.bootstrap.log" 2>&1 || { tail -20 "$R.bootstrap.log" >&2; exit 1; }
  maria_finish "$R" host
  rm -rf "$R"
}

build_maria_debootstrap() {
  local R=$WORK/root-maria
  bootstrap "$R" mariadb-server
  maria_cnf >"$R"/etc/mysql/mariadb.conf.d/99-test-image.cnf
  mkdir -p "$R"/run/mysqld
  grep -qs localhost "$R"/etc/hosts || echo '127.0.0.1 localhost' >>"$R"/etc/hosts
  maria_users >"$R"/tmp/users.sql
  log "mariadb-install-db (chroot)"
  chroot "$R" /bin/sh -c '
    set -e
    chown mysql:mysql /run/mysqld
    rm -rf /var/lib/mysql && mkdir -p /var/lib/mysql && chown mysql:mysql /var/lib/mysql
    mariadb-install-db --force --user=mysql --datadir=/var/lib/mysql --skip-test-db \
        --auth-root-authentication-method=socket >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
    mariadbd --bootstrap --user=mysql --skip-log-bin --datadir=/var/lib/mysql </tmp/users.sql >/tmp/boot.log 2>&1 \
      || { cat /tmp/boot.log; exit 1; }
    rm -f /tmp/install.log /tmp/boot.log /tmp/users.sql'
  trim "$R"
  maria_finish "$R" debootstrap
}

# ----------------------------------------------------------------- NATS ---

build_nats() {
  local D=$WORK/nats bin=$WORK/nats/nats-server-$NATS_VERSION
  mkdir -p "$D"
  if [ ! -x "$bin" ]; then
    log "compiling nats-server $NATS_VERSION (CGO_ENABLED=0)"
    # The version go.mod pins, from the module cache; else through the proxy.
    if [ "$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2 2>/dev/null)" = "$NATS_VERSION" ]; then
      CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bin.tmp" github.com/nats-io/nats-server/v2
    else
      (cd "$D" && GOBIN=$D/bin CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags='-s -w' \
        "github.com/nats-io/nats-server/v2@$NATS_VERSION" && mv "$D/bin/nats-server" "$bin.tmp")
    fi
    mv "$bin.tmp" "$bin"
  fi
  rm -rf "$D/rootfs"; mkdir -p "$D/rootfs/data" "$D/rootfs/tmp"
  chmod 1777 "$D/rootfs/tmp"
  cp "$bin" "$D/rootfs/nats-server"
  finish "$D/rootfs" "$NATS_IMAGE" "" static \
    --change 'EXPOSE 4222 8222' \
    --change 'ENTRYPOINT ["/nats-server"]' \
    --change 'CMD ["-js", "-sd", "/data", "-m", "8222"]'
}

# ------------------------------------------- trackerd's own base images ---

# The Go toolchain image: this machine's GOROOT (without its tests), a shell
# and the few tools a Dockerfile's RUN lines use, CA certificates for the
# module proxy. GOTOOLCHAIN=local, as in the official image: no toolchain
# download.
build_go() {
  local R=$WORK/root-go
  skeleton "$R" nonroot 65532 /home/nonroot
  copy_with_libs "$R" /usr/bin/mkdir /usr/bin/cp /usr/bin/rm /usr/bin/ls /usr/bin/env /usr/bin/mv /usr/bin/chmod
  mkdir -p "$R/usr/local" "$R/etc/ssl/certs" "$R/go" "$R/root"
  log "copying $GOROOT_HOST ($GO_VERSION)"
  tar -C "$(dirname "$GOROOT_HOST")" --exclude=./go/test --exclude=./go/pkg/obj -c "$(basename "$GOROOT_HOST")" \
    | tar -C "$R/usr/local" -x
  [ "$(basename "$GOROOT_HOST")" = go ] || mv "$R/usr/local/$(basename "$GOROOT_HOST")" "$R/usr/local/go"
  cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"
  finish "$R" "$GO_IMAGE" "" host \
    --change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV GOPATH=/go' --change 'ENV GOTOOLCHAIN=local' --change 'ENV HOME=/root' \
    --change 'WORKDIR /go'
  rm -rf "$R"
}

# A distroless-like static runtime: what gcr.io/distroless/static-debian12
# holds (users, CA certificates, zoneinfo, /tmp), nothing to run but the
# binary copied in.
build_runtime() {
  local R=$WORK/root-runtime
  rm -rf "$R"; mkdir -p "$R"/{etc/ssl/certs,tmp,home/nonroot,usr/share,var/lib}
  chmod 1777 "$R/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$R/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$R/etc/group"
  chown 65532:65532 "$R/home/nonroot"
  cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"
  cp -a /usr/share/zoneinfo "$R/usr/share/"
  finish "$R" "$RUNTIME_IMAGE" "" static \
    --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
  rm -rf "$R"
}

# ----------------------------------------------------------------- main ---

variant() { # host-binary
  case $FROM in
    host) [ -x "$1" ] || die "TEST_IMAGES_FROM=host, but $1 is not installed"; echo host ;;
    debootstrap) echo debootstrap ;;
    auto) if [ -x "$1" ]; then echo host; else echo debootstrap; fi ;;
    *) die "TEST_IMAGES_FROM=$FROM: want auto, host or debootstrap" ;;
  esac
}

CHECK=0
[ "${1:-}" != --check ] || { CHECK=1; shift; }
[ $CHECK = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (chroot, mknod and debootstrap need it)"
docker info >/dev/null 2>&1 || die "no Docker engine answers: run scripts/docker-engine.sh first"
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(pg maria nats go runtime)
if [ $CHECK = 1 ]; then
  missing=0
  for t in "${targets[@]}"; do
    case $t in pg) image=$PG_IMAGE ;; maria) image=$MARIA_IMAGE ;; nats) image=$NATS_IMAGE ;;
      go) image=$GO_IMAGE ;; runtime) image=$RUNTIME_IMAGE ;;
      *) die "unknown image $t: want pg, maria, nats, go or runtime" ;; esac
    if have_image "$image"; then log "$image is present"; else log "would build $image"; missing=1; fi
  done
  [ $missing = 0 ] || exit 3
  exit 0
fi
mkdir -p "$WORK"
for t in "${targets[@]}"; do
  case $t in
    pg) image=$PG_IMAGE; build="build_pg_$(variant $PGBIN/postgres)" ;;
    maria) image=$MARIA_IMAGE; build="build_maria_$(variant /usr/sbin/mariadbd)" ;;
    nats) image=$NATS_IMAGE; build=build_nats ;;
    go) image=$GO_IMAGE; build=build_go ;;
    runtime) image=$RUNTIME_IMAGE; build=build_runtime ;;
    *) die "unknown image $t: want pg, maria, nats, go or runtime" ;;
  esac
  if [ "${FORCE:-0}" != 1 ] && have_image "$image"; then
    log "$image is present"
    continue
  fi
  s=$SECONDS
  "$build"
  log "$image built in $((SECONDS - s))s"
done
docker image ls --filter "reference=$PREFIX/*" --format '{{.Repository}}:{{.Tag}}  {{.Size}}' >&2
