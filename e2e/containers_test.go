package e2e

// Servers in containers, for the fault tests that crash, stop, pause or
// restart a server (faults_*_test.go). They run through testcontainers-go's
// GenericContainer on a local Docker engine, with images built locally by
// scripts/test-images.sh (no image registry is needed; the reaper, the one
// image testcontainers would pull by itself, is disabled).
//
// Image names come from TRACKERD_TEST_PG_IMAGE, TRACKERD_TEST_MARIADB_IMAGE
// and TRACKERD_TEST_NATS_IMAGE. The defaults are the local tc-local/...
// images. The official images work too where a registry is reachable
// (postgres:15, mariadb:10.11, nats:2.10 or later): every server setting
// the tests need is passed as a flag in the container's Cmd, which both the
// local images (whose ENTRYPOINT is the server) and the official ones (whose
// entrypoint script runs the server when the first argument is a flag)
// accept, and the official images' POSTGRES_PASSWORD / MARIADB_ROOT_PASSWORD
// are set to the local images' fixed passwords.
//
// A test using a container skips when no Docker engine answers or a local
// image is missing, naming what to run; under CI=true it fails instead.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Default images, as scripts/test-images.sh names them (the NATS one
// carries the nats-server version go.mod pins: see defaultNATSImage).
const (
	defaultPGImage      = "tc-local/postgres:15-logical"
	defaultMariaDBImage = "tc-local/mariadb:10.11-binlog"
	buildImagesHint     = "scripts/docker-engine.sh && scripts/test-images.sh"
)

// defaultNATSImage is tc-local/nats:<version>-js, with the nats-server
// version of ../go.mod, as scripts/test-images.sh builds it.
func defaultNATSImage() string {
	version := "2.15.2"
	if data, err := os.ReadFile("../go.mod"); err == nil {
		if m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(data); m != nil {
			version = string(m[1])
		}
	}
	return "tc-local/nats:" + version + "-js"
}

// skipOrFail skips the test, or fails it under CI=true, where every
// container test must run.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// dockerEngine returns a client of the local Docker engine, configuring
// testcontainers for machines without an image registry: no reaper, and the
// host's loopback as the containers' address.
func dockerEngine(t testing.TB) *testcontainers.DockerClient {
	t.Helper()
	for k, v := range map[string]string{
		"TESTCONTAINERS_RYUK_DISABLED": "true",
		"TESTCONTAINERS_HOST_OVERRIDE": "localhost",
	} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	ctx := ctxT(t, 20*time.Second)
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err == nil {
		_, err = cli.Ping(ctx, client.PingOptions{})
	}
	if err != nil {
		skipOrFail(t, "no Docker engine answers (%v): run %s", err, buildImagesHint)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// testImage returns the image named by the environment variable env, else def.
// A missing default (local) image skips the test, naming the script that
// builds it; another image is left for the engine to pull.
func testImage(t testing.TB, cli *testcontainers.DockerClient, env, def string) string {
	t.Helper()
	name := os.Getenv(env)
	if name == "" {
		name = def
	}
	if _, err := cli.ImageInspect(ctxT(t, 20*time.Second), name); err != nil && name == def {
		skipOrFail(t, "image %s is missing (%v): run %s, or set %s", name, err, buildImagesHint, env)
	}
	return name
}

// box is a server in a container that the test owns: its main port is
// published on a host port chosen in advance, so that clients reconnect to
// the same address after a restart.
type box struct {
	t     testing.TB
	cli   *testcontainers.DockerClient
	c     testcontainers.Container
	what  string // "postgres", "mariadb", "nats"
	port  int    // host port of the main service
	ready func(ctx context.Context) error
}

// boxSpec describes a container to start.
type boxSpec struct {
	what       string
	image      string
	port       string   // the main service's container port, "5432/tcp"
	entrypoint []string // the image's when nil
	cmd        []string
	env        map[string]string
	files      []testcontainers.ContainerFile
	waitFor    wait.Strategy
	ready      func(b *box) func(ctx context.Context) error
	// hostPort is the host port to publish the main port on (0: a free
	// one), binds are Docker bind or volume mounts ("vol:/var/lib/mysql").
	hostPort int
	binds    []string
}

// startBox starts a container, waits until its server answers, and
// removes it when the test ends (printing its log if the test failed).
func startBox(t testing.TB, cli *testcontainers.DockerClient, s boxSpec) *box {
	t.Helper()
	b := &box{t: t, cli: cli, what: s.what, port: s.hostPort}
	if b.port == 0 {
		b.port = freePort(t)
	}
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        s.image,
			ExposedPorts: []string{s.port},
			Entrypoint:   s.entrypoint,
			Cmd:          s.cmd,
			Env:          s.env,
			Files:        s.files,
			Labels:       map[string]string{"org.trackerd.e2e": t.Name()},
			WaitingFor:   s.waitFor,
			HostConfigModifier: func(hc *container.HostConfig) {
				if hc.PortBindings == nil {
					hc.PortBindings = network.PortMap{}
				}
				hc.PortBindings[network.MustParsePort(s.port)] = []network.PortBinding{{HostPort: strconv.Itoa(b.port)}}
				hc.Binds = append(hc.Binds, s.binds...)
			},
		},
		Started: true,
		Logger:  tclog.TestLogger(t),
	}
	began := time.Now()
	c, err := testcontainers.GenericContainer(ctxT(t, 2*time.Minute), req)
	if c != nil {
		b.c = c
		t.Cleanup(b.remove)
	}
	if err != nil {
		t.Fatalf("start %s container (%s): %v", s.what, s.image, err)
	}
	b.ready = s.ready(b)
	b.waitReady(time.Minute)
	t.Logf("%s container %.12s (%s) on 127.0.0.1:%d, ready in %v", s.what, c.GetContainerID(), s.image, b.port,
		time.Since(began).Round(time.Millisecond))
	return b
}

// remove stops and removes the container, logging its output first when
// the test failed.
func (b *box) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b.t.Failed() {
		b.t.Logf("%s container log (tail):\n%s", b.what, b.logTail(ctx, 60))
	}
	b.c.Terminate(ctx)
}

// logTail returns the last n lines of the container's log.
func (b *box) logTail(ctx context.Context, n int) string {
	rc, err := b.c.Logs(ctx)
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitReady polls the server until it answers a query.
func (b *box) waitReady(d time.Duration) {
	b.t.Helper()
	var last error
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last = b.ready(ctx)
		cancel()
		if last == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s container did not answer within %v: %v", b.what, d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// running reports whether the container is running.
func (b *box) running() bool {
	st, err := b.c.State(ctxT(b.t, 20*time.Second))
	return err == nil && st.Running
}

// kill sends SIGKILL (a crash: no shutdown, no flush) and waits until the
// container has stopped.
func (b *box) kill() {
	b.t.Helper()
	b.signal("SIGKILL")
	eventually(b.t, 30*time.Second, b.what+" container to stop after SIGKILL", func() bool { return !b.running() })
}

// signal sends a signal to the container's main process.
func (b *box) signal(sig string) {
	b.t.Helper()
	if _, err := b.cli.ContainerKill(ctxT(b.t, 20*time.Second), b.c.GetContainerID(), client.ContainerKillOptions{Signal: sig}); err != nil {
		b.t.Fatalf("%s %s container: %v", sig, b.what, err)
	}
}

// stop stops the container with its stop signal (PostgreSQL: SIGINT, a fast
// shutdown; MariaDB, NATS: SIGTERM), waiting at most grace before SIGKILL.
func (b *box) stop(grace time.Duration) {
	b.t.Helper()
	if err := b.c.Stop(ctxT(b.t, grace+30*time.Second), &grace); err != nil {
		b.t.Fatalf("stop %s container: %v", b.what, err)
	}
}

// start starts a stopped container and waits until its server answers.
func (b *box) start() {
	b.t.Helper()
	if err := b.c.Start(ctxT(b.t, 2*time.Minute)); err != nil {
		b.t.Fatalf("start %s container: %v", b.what, err)
	}
	b.waitReady(2 * time.Minute)
}

// pause freezes every process of the container (docker pause): a silent
// partition, in which connections stay open and nothing answers.
func (b *box) pause() {
	b.t.Helper()
	if _, err := b.cli.ContainerPause(ctxT(b.t, 20*time.Second), b.c.GetContainerID(), client.ContainerPauseOptions{}); err != nil {
		b.t.Fatalf("pause %s container: %v", b.what, err)
	}
}

// unpause thaws a paused container.
func (b *box) unpause() {
	b.t.Helper()
	if _, err := b.cli.ContainerUnpause(ctxT(b.t, 20*time.Second), b.c.GetContainerID(), client.ContainerUnpauseOptions{}); err != nil {
		b.t.Fatalf("unpause %s container: %v", b.what, err)
	}
}

// disconnect takes the container off Docker's bridge network: its
// published port disappears and the connections through it end, so the
// server sees its clients go while what it had sent them is lost.
func (b *box) disconnect() {
	b.t.Helper()
	if _, err := b.cli.NetworkDisconnect(ctxT(b.t, 20*time.Second), "bridge",
		client.NetworkDisconnectOptions{Container: b.c.GetContainerID(), Force: true}); err != nil {
		b.t.Fatalf("disconnect %s container: %v", b.what, err)
	}
}

// connect puts the container back on the bridge network, on the same host
// port, and waits until its server answers.
func (b *box) connect() {
	b.t.Helper()
	if _, err := b.cli.NetworkConnect(ctxT(b.t, 20*time.Second), "bridge",
		client.NetworkConnectOptions{Container: b.c.GetContainerID()}); err != nil {
		b.t.Fatalf("connect %s container: %v", b.what, err)
	}
	b.waitReady(time.Minute)
}

// exec runs a command in the container and returns its exit code and
// output.
func (b *box) exec(cmd ...string) (int, string) {
	b.t.Helper()
	code, r, err := b.c.Exec(ctxT(b.t, 2*time.Minute), cmd, tcexec.Multiplexed())
	if err != nil {
		b.t.Fatalf("exec %v in %s container: %v", cmd, b.what, err)
	}
	var out strings.Builder
	if r != nil {
		io.Copy(&out, r)
	}
	return code, out.String()
}

// ------------------------------------------------------------ PostgreSQL ---

// pgBox is PostgreSQL 15 in a container.
type pgBox struct {
	*box
}

// url is the superuser's URL of database postgres.
func (p *pgBox) url() string {
	return fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// pgHBA is the containers' pg_hba.conf: password logins from anywhere, for
// replication connections too (the official image's file has no
// replication line but for the loopback).
const pgHBA = `local all all trust
host all all all scram-sha-256
host replication all all scram-sha-256
`

// startPGBox starts PostgreSQL with wal_level=logical and any further
// settings ("wal_sender_timeout=10s").
func startPGBox(t testing.TB, settings ...string) *pgBox {
	t.Helper()
	return startPGBoxWith(t, false, settings...)
}

// freshClusterEntrypoint makes a new data directory with initdb when the
// container starts, then runs the server on it with the container's flags.
var freshClusterEntrypoint = []string{"/bin/sh", "-c", `set -e
echo postgres >/tmp/pw
initdb -D /tmp/pgdata -U postgres --pwfile=/tmp/pw -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/tmp/initdb.log 2>&1 || { cat /tmp/initdb.log; exit 1; }
exec postgres -D /tmp/pgdata -c listen_addresses=* -c dynamic_shared_memory_type=posix "$@"`, "postgres"}

// startPGBoxWith is startPGBox; fresh gives the container a cluster of its
// own. Containers of the local image share the data directory initdb made
// when the image was built, so they are clones of one cluster, with its
// system identifier; a fresh one runs initdb when it starts (the official
// image does so in every container anyway).
func startPGBoxWith(t testing.TB, fresh bool, settings ...string) *pgBox {
	t.Helper()
	cli := dockerEngine(t)
	img := testImage(t, cli, "TRACKERD_TEST_PG_IMAGE", defaultPGImage)
	cmd := []string{"-c", "wal_level=logical", "-c", "max_wal_senders=20", "-c", "max_replication_slots=20",
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "hba_file=/tmp/trackerd_hba.conf"}
	for _, s := range settings {
		cmd = append(cmd, "-c", s)
	}
	var entrypoint []string
	if fresh && img == defaultPGImage {
		entrypoint = freshClusterEntrypoint
	}
	p := &pgBox{}
	p.box = startBox(t, cli, boxSpec{
		what: "postgres", image: img, port: "5432/tcp", entrypoint: entrypoint, cmd: cmd,
		env:   map[string]string{"POSTGRES_PASSWORD": "postgres"},
		files: []testcontainers.ContainerFile{{Reader: strings.NewReader(pgHBA), ContainerFilePath: "/tmp/trackerd_hba.conf", FileMode: 0o644}},
		// The official image prints the "ready" line twice (its
		// initialisation server listens on no TCP port), so the port is
		// what tells; the ready func then waits for real queries.
		waitFor: wait.ForListeningPort("5432/tcp").WithStartupTimeout(2 * time.Minute),
		ready: func(b *box) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%d/postgres?sslmode=disable", b.port))
				if err != nil {
					return err
				}
				defer c.Close(ctx)
				_, err = c.Exec(ctx, "SELECT 1")
				return err
			}
		},
	})
	return p
}

// conn connects as the superuser; cleanup closes it.
func (p *pgBox) conn() *pgx.Conn {
	p.t.Helper()
	c, err := pgx.Connect(ctxT(p.t, 30*time.Second), p.url())
	if err != nil {
		p.t.Fatalf("connect to the postgres container: %v", err)
	}
	p.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// bind creates a schema with the given tables in the container's database
// and returns a bind over them.
func (p *pgBox) bind(tables map[string]string) *pgBind {
	p.t.Helper()
	db := p.conn()
	name := uniq("f")
	b := &pgBind{key: "pg", schema: name, slot: name + "_slot", pub: name + "_pub", uri: p.url()}
	pgExec(p.t, db, fmt.Sprintf(`CREATE SCHEMA %q`, b.schema))
	for n, cols := range tables {
		pgExec(p.t, db, fmt.Sprintf(`CREATE TABLE %q.%q (%s)`, b.schema, n, cols))
	}
	return b
}

// immediateShutdown stops PostgreSQL with pg_ctl -m immediate (no shutdown
// checkpoint: crash recovery at the next start) and waits until the
// container has stopped.
func (p *pgBox) immediateShutdown() {
	p.t.Helper()
	// -W: do not wait, since the exec dies with the container's main process.
	if code, out := p.exec("sh", "-c", `pg_ctl stop -W -m immediate -D "${PGDATA:-/var/lib/postgresql/data}"`); code != 0 {
		p.t.Fatalf("pg_ctl stop -m immediate: exit %d: %s", code, out)
	}
	eventually(p.t, 30*time.Second, "the postgres container to stop", func() bool { return !p.running() })
}

// ---------------------------------------------------------------- MariaDB ---

// mariaBox is MariaDB 10.11 in a container.
type mariaBox struct {
	*box
	serverID int
}

// startMariaBox starts MariaDB with a row-based binlog and any further
// server flags.
func startMariaBox(t testing.TB, flags ...string) *mariaBox {
	return startMariaBoxOn(t, mariaOpts{}, flags...)
}

// mariaOpts are startMariaBoxOn's options.
type mariaOpts struct {
	serverID int    // 0: a random one
	hostPort int    // 0: a free port
	volume   string // a Docker volume for /var/lib/mysql, "": none
}

// startMariaBoxOn is startMariaBox with a given server_id, host port or
// data volume (a container recreated on the volume keeps its data and
// binlog, under a new host name).
func startMariaBoxOn(t testing.TB, o mariaOpts, flags ...string) *mariaBox {
	t.Helper()
	cli := dockerEngine(t)
	img := testImage(t, cli, "TRACKERD_TEST_MARIADB_IMAGE", defaultMariaDBImage)
	m := &mariaBox{serverID: o.serverID}
	if m.serverID == 0 {
		m.serverID = 100 + rand.IntN(1000)
	}
	var binds []string
	if o.volume != "" {
		binds = []string{o.volume + ":/var/lib/mysql"}
	}
	cmd := append([]string{"--server-id=" + strconv.Itoa(m.serverID), "--log-bin=mysql-bin", "--binlog-format=ROW",
		"--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--max-allowed-packet=64M"}, flags...)
	m.box = startBox(t, cli, boxSpec{
		what: "mariadb", image: img, port: "3306/tcp", cmd: cmd, hostPort: o.hostPort, binds: binds,
		env:     map[string]string{"MARIADB_ROOT_PASSWORD": "root", "MARIADB_DATABASE": "test"},
		waitFor: wait.ForListeningPort("3306/tcp").WithStartupTimeout(2 * time.Minute),
		ready: func(b *box) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				db, err := sql.Open("mysql", fmt.Sprintf("root:root@tcp(127.0.0.1:%d)/test", b.port))
				if err != nil {
					return err
				}
				defer db.Close()
				return db.PingContext(ctx)
			}
		},
	})
	return m
}

// url is root's URI of database db, in the form trackerd takes.
func (m *mariaBox) url(db string) string {
	return fmt.Sprintf("mysql://root:root@127.0.0.1:%d/%s", m.port, db)
}

// db opens a pool on the server; cleanup closes it.
func (m *mariaBox) db() *sql.DB {
	m.t.Helper()
	db, err := sql.Open("mysql", fmt.Sprintf("root:root@tcp(127.0.0.1:%d)/?multiStatements=true&parseTime=true", m.port))
	if err != nil {
		m.t.Fatal(err)
	}
	db.SetMaxOpenConns(4)
	m.t.Cleanup(func() { db.Close() })
	return db
}

// bind creates a database with the given tables and returns a bind over it
// with a server_id of its own.
func (m *mariaBox) bind(tables map[string]string) *myBind {
	m.t.Helper()
	db := m.db()
	name := uniq("f")
	myExec(m.t, db, "CREATE DATABASE `"+name+"`")
	for tb, cols := range tables {
		myExec(m.t, db, fmt.Sprintf("CREATE TABLE `%s`.`%s` (%s)", name, tb, cols))
	}
	return &myBind{key: "my", dbs: []string{name}, uri: m.url(name), serverID: 2_000_000 + rand.Uint32N(1_000_000_000)}
}

// ------------------------------------------------------------------- NATS ---

// natsBox is nats-server with JetStream in a container; its store is in the
// container's file system, so it survives stop, kill and start.
type natsBox struct {
	*box
}

func (n *natsBox) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// startNATSBox starts nats-server with JetStream.
func startNATSBox(t testing.TB) *natsBox {
	t.Helper()
	cli := dockerEngine(t)
	img := testImage(t, cli, "TRACKERD_TEST_NATS_IMAGE", defaultNATSImage())
	n := &natsBox{}
	n.box = startBox(t, cli, boxSpec{
		what: "nats", image: img, port: "4222/tcp", cmd: []string{"-js", "-sd", "/data"},
		waitFor: wait.ForListeningPort("4222/tcp").WithStartupTimeout(time.Minute),
		ready: func(b *box) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				nc, err := natsgo.Connect("nats://127.0.0.1:"+strconv.Itoa(b.port), natsgo.Timeout(2*time.Second))
				if err != nil {
					return err
				}
				defer nc.Close()
				js, _ := jetstream.New(nc)
				_, err = js.AccountInfo(ctx)
				return err
			}
		},
	})
	return n
}

// busAt is a test's bus on the NATS server at url, with a client that
// reconnects forever (the server may be stopped and started under it).
func busAt(t testing.TB, url string) *bus {
	t.Helper()
	name := uniq("f")
	b := &bus{url: url, stream: strings.ToUpper(name), prefix: name, bucket: name + "_cp"}
	nc, err := natsgo.Connect(url, natsgo.MaxReconnects(-1), natsgo.ReconnectWait(200*time.Millisecond),
		natsgo.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v", url, err)
	}
	b.nc = nc
	b.js, _ = jetstream.New(nc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.js.DeleteStream(ctx, b.stream)
		b.js.DeleteKeyValue(ctx, b.bucket)
		nc.Close()
	})
	return b
}

// checkpointPosition returns the position of the one checkpoint in the
// bus's bucket.
func checkpointPosition(t testing.TB, bs *bus) string {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	kv, err := bs.js.KeyValue(ctx, bs.bucket)
	if err != nil {
		t.Fatalf("checkpoint bucket %s: %v", bs.bucket, err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("checkpoint bucket %s holds keys %v (%v), want one", bs.bucket, keys, err)
	}
	e, err := kv.Get(ctx, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		Position string `json:"position"`
	}
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		t.Fatalf("checkpoint %s: %v", e.Value(), err)
	}
	return cp.Position
}

// ------------------------------------------------------ workloads, checks ---

// rowWriter inserts rows with increasing ids, in transactions of perTx rows,
// until stopped, and survives a server going away: a failed transaction is
// abandoned (its rows may or may not have committed; the table says which)
// and the writer reconnects.
type rowWriter struct {
	next     atomic.Int64 // the next id to write
	failures atomic.Int64 // transactions that failed
	stop     chan struct{}
	done     chan struct{}
}

// startRowWriter runs tx(ctx, from, to) for ids [from, to) in a loop, at most
// limit ids (0: unlimited), pausing pause between transactions.
func startRowWriter(t testing.TB, perTx, limit int, pause time.Duration, tx func(ctx context.Context, from, to int) error) *rowWriter {
	w := &rowWriter{stop: make(chan struct{}), done: make(chan struct{})}
	w.next.Store(1)
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			from := int(w.next.Load())
			if limit > 0 && from > limit {
				return
			}
			to := from + perTx
			if limit > 0 {
				to = min(to, limit+1)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := tx(ctx, from, to)
			cancel()
			w.next.Store(int64(to)) // committed or not, these ids are used
			if err != nil {
				w.failures.Add(1)
				select {
				case <-w.stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			if pause > 0 {
				select {
				case <-w.stop:
					return
				case <-time.After(pause):
				}
			}
		}
	}()
	t.Cleanup(w.halt)
	return w
}

// halt stops the writer and waits for it.
func (w *rowWriter) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// written returns the number of ids the writer has used.
func (w *rowWriter) written() int { return int(w.next.Load()) - 1 }

// pgTxWriter returns a writer transaction that inserts ids [from, to) into
// table tbl of the PostgreSQL at url, one INSERT statement per row in one
// transaction, on a connection it keeps (and replaces after a failure)
// until the test ends.
func pgTxWriter(t testing.TB, url, tbl string) func(ctx context.Context, from, to int) error {
	var mu sync.Mutex
	var conn *pgx.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if conn != nil {
			conn.Close(context.Background())
		}
	})
	return func(ctx context.Context, from, to int) error {
		mu.Lock()
		defer mu.Unlock()
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				return err
			}
			conn = c
		}
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		for id := from; id < to; id++ {
			b.Queue("INSERT INTO "+tbl+" VALUES ($1, $2)", id, "payload-"+strconv.Itoa(id))
		}
		b.Queue("COMMIT")
		err := conn.SendBatch(ctx, b).Close()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
		}
		return err
	}
}

// myTxWriter is pgTxWriter for MySQL/MariaDB: one INSERT statement per row
// in one transaction.
func myTxWriter(t testing.TB, dsn, tbl string) func(ctx context.Context, from, to int) error {
	var mu sync.Mutex
	var db *sql.DB
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if db != nil {
			db.Close()
		}
	})
	return func(ctx context.Context, from, to int) error {
		mu.Lock()
		defer mu.Unlock()
		if db == nil {
			d, err := sql.Open("mysql", dsn)
			if err != nil {
				return err
			}
			d.SetMaxOpenConns(1)
			db = d
		}
		var sb strings.Builder
		sb.WriteString("BEGIN;")
		for id := from; id < to; id++ {
			fmt.Fprintf(&sb, "INSERT INTO %s VALUES (%d, 'payload-%d');", tbl, id, id)
		}
		sb.WriteString("COMMIT;")
		_, err := db.ExecContext(ctx, sb.String())
		if err != nil {
			db.Close()
			db = nil
		}
		return err
	}
}

// pgIDs returns the ids in table tbl: the rows that committed.
func pgIDs(t testing.TB, url, tbl string) []int {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	var ids []int
	var err error
	for range 50 { // the server may still be recovering
		var c *pgx.Conn
		if c, err = pgx.Connect(ctx, url); err == nil {
			var rows pgx.Rows
			if rows, err = c.Query(ctx, "SELECT id FROM "+tbl+" ORDER BY id"); err == nil {
				ids, err = pgx.CollectRows(rows, pgx.RowTo[int])
			}
			c.Close(ctx)
		}
		if err == nil {
			return ids
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("read the ids of %s: %v", tbl, err)
	return nil
}

// myIDs returns the ids in table tbl of a MySQL/MariaDB pool.
func myIDs(t testing.TB, db *sql.DB, tbl string) []int {
	t.Helper()
	var ids []int
	var err error
	for range 50 {
		ids = ids[:0]
		var rows *sql.Rows
		if rows, err = db.QueryContext(ctxT(t, time.Minute), "SELECT id FROM "+tbl+" ORDER BY id"); err == nil {
			for rows.Next() {
				var id int
				if err = rows.Scan(&id); err != nil {
					break
				}
				ids = append(ids, id)
			}
			err = errors.Join(err, rows.Err(), rows.Close())
		}
		if err == nil {
			return ids
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("read the ids of %s: %v", tbl, err)
	return nil
}

// trackerdMetric returns the value of a sample of trackerd's /metrics,
// named as it appears there, `trackerd_events_published_total{bind="pg"}`,
// or the sum of a metric's samples over its labels when named without
// them: `trackerd_sink_duplicates_total` (of every bind).
func trackerdMetric(t testing.TB, p *proc, sample string) int {
	t.Helper()
	base := p.waitLog(`msg="HTTP endpoints listening" addr=(http://\S+)`, 10*time.Second)[1]
	ctx := ctxT(t, 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum, found := 0.0, false
	for line := range strings.Lines(string(body)) {
		v, ok := strings.CutPrefix(line, sample+" ")
		if !ok && !strings.Contains(sample, "{") && strings.HasPrefix(line, sample+"{") {
			v, ok = line[strings.LastIndexByte(line, ' ')+1:], true
		}
		if ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s/metrics: %s", base, line)
			}
			sum, found = sum+f, true
		}
	}
	if !found {
		t.Fatalf("no %s in %s/metrics", sample, base)
	}
	return int(sum)
}

// resent returns how many events trackerd published beyond those the
// stream holds: the events it sent again after a reconnect, which
// JetStream dropped as duplicates.
func resent(t testing.TB, p *proc, bs *bus, bind string) int {
	t.Helper()
	return trackerdMetric(t, p, `trackerd_events_published_total{bind="`+bind+`"}`) - int(bs.count(t))
}

// rowTally counts, per phase and row id, the insert events of a stream, and
// holds what does not belong (events of ids that never committed, other
// operations).
type rowTally struct {
	n       map[string]int // "<phase> <id>" -> copies
	foreign []string
}

func tallyRows(ms []msg, ids []int) rowTally {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[strconv.Itoa(id)] = true
	}
	tl := rowTally{n: make(map[string]int, 2*len(ids))}
	for _, m := range ms {
		id := string(m.Change.After["id"])
		if m.Change.Op != "insert" || !want[id] {
			tl.foreign = append(tl.foreign, fmt.Sprintf("seq %d: %s %s id=%s", m.Seq, m.Event.Type(), m.Change.Op, id))
			continue
		}
		tl.n[m.Event.Type()+" "+id]++
	}
	return tl
}

// missingAndDuplicated counts, over ids, the events absent from the stream
// and the extra copies of those present more than once.
func (tl rowTally) missingAndDuplicated(ids []int) (missing, dups int) {
	for _, id := range ids {
		for _, ph := range []string{"trackerd.before_commit", "trackerd.after_commit"} {
			switch c := tl.n[ph+" "+strconv.Itoa(id)]; {
			case c == 0:
				missing++
			case c > 1:
				dups += c - 1
			}
		}
	}
	return missing, dups
}

// checkRowsExactlyOnce asserts that the stream holds exactly one
// before_commit and one after_commit insert event for each committed id,
// and nothing else.
func checkRowsExactlyOnce(t testing.TB, ms []msg, ids []int) {
	t.Helper()
	tl := tallyRows(ms, ids)
	missing, dups := tl.missingAndDuplicated(ids)
	if len(tl.foreign) > 0 {
		t.Errorf("%d events of rows that never committed, or of other operations; first: %v", len(tl.foreign), tl.foreign[:min(5, len(tl.foreign))])
	}
	if missing > 0 || dups > 0 || len(ms) != 2*len(ids) {
		t.Fatalf("%d events for %d committed rows: %d missing, %d duplicated", len(ms), len(ids), missing, dups)
	}
}

// serverFault is a named way of stopping and starting a server container.
type serverFault struct {
	name  string
	fault func()
}

// restartsWhileStreaming applies each fault to the server while w writes
// and trackerd p streams, checking after each that events keep coming and
// that p still runs; then it stops the writer and checks that the stream
// holds every committed row (ids reads them back) once per phase.
func restartsWhileStreaming(t *testing.T, p *proc, bs *bus, w *rowWriter, server string, ids func() []int, faults ...serverFault) {
	t.Helper()
	progress := func(what string) { t.Helper(); progressed(t, p, bs, scale(400), what) }
	progress("events before the first restart")
	for _, f := range faults {
		began := time.Now()
		f.fault()
		t.Logf("%s: %s back in %v, %d events so far", f.name, server, time.Since(began).Round(time.Millisecond), bs.count(t))
		progress("events after the " + f.name)
		stillRunning(t, p, "after the "+f.name)
	}
	w.halt()
	committed := ids()
	ms := settleRows(t, bs, committed, 2*time.Minute)
	checkRowsExactlyOnce(t, ms, committed)
	t.Logf("%d rows committed (%d writer transactions failed at the restarts); %d events checked", len(committed), w.failures.Load(), len(ms))
}

// progressed waits until the stream holds n more events than now, failing
// at once if trackerd exits meanwhile.
func progressed(t testing.TB, p *proc, bs *bus, n int, what string) {
	t.Helper()
	from := bs.count(t)
	eventually(t, 2*time.Minute, what, func() bool {
		select {
		case <-p.done:
			t.Fatalf("trackerd exited (%v) while waiting for %s", p.err, what)
		default:
		}
		return bs.count(t) >= from+uint64(n)
	})
}

// settleRows waits until the stream holds at least 2*len(ids) events (then a
// moment more for anything extra to arrive) and returns them.
func settleRows(t testing.TB, bs *bus, ids []int, d time.Duration) []msg {
	t.Helper()
	bs.waitCount(t, uint64(2*len(ids)), d)
	time.Sleep(time.Second)
	return bs.read(t)
}

// vmRSS returns a process's resident set size in KiB (VmRSS), or 0.
func vmRSS(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// rssSampler records a process's peak RSS until stopped.
type rssSampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			if v := int64(vmRSS(pid)); v > s.peak.Load() {
				s.peak.Store(v)
			}
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

// halt stops sampling and returns the peak in KiB.
func (s *rssSampler) halt() int {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return int(s.peak.Load())
}

// TestContainerFaultOperations checks the harness itself: each server comes
// back on the same host port after SIGKILL, stop and start, answers again
// after pause and unpause, keeps its data, and runs commands inside.
func TestContainerFaultOperations(t *testing.T) {
	pg := startPGBox(t, "wal_sender_timeout=10s")
	db := pg.conn()
	pgExec(t, db, "CREATE TABLE kept (id int PRIMARY KEY)")
	pgExec(t, db, "INSERT INTO kept VALUES (1)")
	var timeout, hba string
	if err := db.QueryRow(ctxT(t, 10*time.Second), "SELECT current_setting('wal_sender_timeout'), current_setting('hba_file')").Scan(&timeout, &hba); err != nil ||
		timeout != "10s" || hba != "/tmp/trackerd_hba.conf" {
		t.Fatalf("wal_sender_timeout = %q, hba_file = %q (%v), want the Cmd's 10s and /tmp/trackerd_hba.conf", timeout, hba, err)
	}
	pg.kill()
	pg.start()
	pg.stop(30 * time.Second)
	pg.start()
	pg.immediateShutdown()
	pg.start()
	if ids := pgIDs(t, pg.url(), "kept"); len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("after kill, stop and immediate shutdown, table kept holds %v, want [1]", ids)
	}
	if code, out := pg.exec("sh", "-c", "echo $PGDATA"); code != 0 || strings.TrimSpace(out) == "" {
		t.Fatalf("exec in the postgres container: %d %q", code, out)
	}

	my := startMariaBox(t)
	mdb := my.db()
	myExec(t, mdb, "CREATE TABLE test.kept (id INT PRIMARY KEY)")
	myExec(t, mdb, "INSERT INTO test.kept VALUES (1)")
	var format, metadata string
	if err := mdb.QueryRowContext(ctxT(t, 10*time.Second), "SELECT @@binlog_format, @@binlog_row_metadata").Scan(&format, &metadata); err != nil ||
		format != "ROW" || metadata != "FULL" {
		t.Fatalf("binlog_format %q, binlog_row_metadata %q (%v)", format, metadata, err)
	}
	my.kill()
	my.start()
	my.stop(30 * time.Second)
	my.start()
	if ids := myIDs(t, mdb, "test.kept"); len(ids) != 1 {
		t.Fatalf("after kill and stop, test.kept holds %v, want [1]", ids)
	}

	ns := startNATSBox(t)
	bs := busAt(t, ns.url())
	ctx := ctxT(t, time.Minute)
	if _, err := bs.js.CreateStream(ctx, jetstream.StreamConfig{Name: bs.stream, Subjects: []string{bs.prefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.js.Publish(ctx, bs.prefix+".x", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	ns.kill()
	ns.start()
	ns.pause()
	pctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := bs.js.Publish(pctx, bs.prefix+".x", []byte("lost"))
	cancel()
	if err == nil {
		t.Fatal("a publish to a paused NATS server was acknowledged")
	}
	ns.unpause()
	eventually(t, 30*time.Second, "the stream to answer after unpause", func() bool {
		return bs.count(t) >= 1
	})
	if n := bs.count(t); n != 1 && n != 2 {
		t.Fatalf("the stream holds %d messages after kill, start, pause and unpause, want 1 (2 if the paused publish landed)", n)
	}
}
