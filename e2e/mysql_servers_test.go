package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// MariaDB servers of the test's own, in containers: two with the same
// server_id, one whose GTIDs go backwards, one recreated on its data
// volume.

// myDB creates database name with table t (id INT PRIMARY KEY) on m.
func (m *mariaBox) myDB(name string) *sql.DB {
	m.t.Helper()
	db := m.db()
	myExec(m.t, db, "CREATE DATABASE IF NOT EXISTS `"+name+"`")
	myExec(m.t, db, "CREATE TABLE IF NOT EXISTS `"+name+"`.t (id INT PRIMARY KEY)")
	return db
}

// hostname is the server's @@hostname.
func (m *mariaBox) hostname() string {
	m.t.Helper()
	var h string
	if err := m.db().QueryRowContext(ctxT(m.t, 10*time.Second), "SELECT @@hostname").Scan(&h); err != nil {
		m.t.Fatal(err)
	}
	return h
}

// insert inserts each id into db's table t, one transaction each.
func insert(t *testing.T, db *sql.DB, name string, ids ...int) {
	t.Helper()
	for _, id := range ids {
		myExec(t, db, fmt.Sprintf("INSERT INTO `%s`.t VALUES (%d)", name, id))
	}
}

// TestMariaDBTwoServersSameServerID: two MariaDB servers with server_id 1
// (every MariaDB's default) and a database of the same name, followed by
// two deployments with bind key default, one checkpoint bucket and one
// stream. Their transactions have the same GTIDs (0-1-N), yet different
// ids: the origin holds each server's host name. All events are stored.
func TestMariaDBTwoServersSameServerID(t *testing.T) {
	m1 := startMariaBoxOn(t, mariaOpts{serverID: 1})
	m2 := startMariaBoxOn(t, mariaOpts{serverID: 1})
	const name = "shop"
	db1, db2 := m1.myDB(name), m2.myDB(name)
	bs := newBus(t)
	envA := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(m1.url(name), nil)})
	envB := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(m2.url(name), nil)})
	// One bucket: B starts while A runs (and holds its checkpoint's lease).
	pa := startDeployment(t, envA)
	pb := startDeployment(t, envB)
	insert(t, db1, name, 1, 2, 3)
	insert(t, db2, name, 1, 2, 3)
	var g1, g2 string
	db1.QueryRow("SELECT @@gtid_binlog_pos").Scan(&g1)
	db2.QueryRow("SELECT @@gtid_binlog_pos").Scan(&g2)
	t.Logf("hosts %s and %s, GTID positions %s and %s", m1.hostname(), m2.hostname(), g1, g2)
	ms := settle(t, bs, 12)
	if len(ms) != 12 {
		t.Fatalf("stream holds %d events, want 12:\n%s", len(ms), strings.Join(summary(ms), "\n"))
	}
	distinctIDs(t, ms)
	keys := map[string]int{}
	for _, m := range ms {
		keys[m.Change.Source.TxKey]++
	}
	if len(keys) != 3 {
		t.Errorf("transaction keys %v: want the same three GTIDs on both servers", keys)
	}
	stopAll(t, pa, pb)
}

// TestMariaDBLowerGTID (F2): with gtid_strict_mode off (MariaDB's default)
// a session may set gtid_seq_no below its domain's last sequence number,
// or to one used before (a binlog replayed with mysqlbinlog does). Those
// transactions are published, once per phase, across a restart; their ids
// differ from the earlier transaction's with the same GTID.
func TestMariaDBLowerGTID(t *testing.T) {
	m := startMariaBoxOn(t, mariaOpts{})
	const name = "shop"
	db := m.myDB(name)
	var strict int
	if err := db.QueryRow("SELECT @@gtid_strict_mode").Scan(&strict); err != nil || strict != 0 {
		t.Fatalf("gtid_strict_mode = %d (%v), want 0", strict, err)
	}
	bs := newBus(t)
	env := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(m.url(name), nil)})
	p := startDeployment(t, env)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	run := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := conn.ExecContext(ctxT(t, time.Minute), q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	tbl := "`" + name + "`.t"
	run("INSERT INTO " + tbl + " VALUES (1)")
	var first string // the GTID of row 1's transaction
	if err := conn.QueryRowContext(ctxT(t, time.Minute), "SELECT @@last_gtid").Scan(&first); err != nil {
		t.Fatal(err)
	}
	seq := first[strings.LastIndexByte(first, '-')+1:]
	run("INSERT INTO "+tbl+" VALUES (2)",
		"SET gtid_seq_no = 1000", "INSERT INTO "+tbl+" VALUES (3)",
		"SET gtid_seq_no = 500", "INSERT INTO "+tbl+" VALUES (4)", // lower, new
		"SET gtid_seq_no = "+seq, "INSERT INTO "+tbl+" VALUES (5)", // row 1's GTID again
		"INSERT INTO "+tbl+" VALUES (6)")
	checkRowsExactlyOnce(t, settle(t, bs, 12), []int{1, 2, 3, 4, 5, 6})
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("checkpoint after the lower GTIDs: %s", cpPosition(t, bs))
	run("INSERT INTO "+tbl+" VALUES (7)", "SET gtid_seq_no = 600", "INSERT INTO "+tbl+" VALUES (8)")
	p2 := startDeployment(t, env)
	checkRowsExactlyOnce(t, settle(t, bs, 16), []int{1, 2, 3, 4, 5, 6, 7, 8})
	stopAll(t, p2)
}

// TestMariaDBRecreatedContainer (F6): a MariaDB container is removed and
// created again on its data volume while trackerd is stopped: same data,
// binlog and server_id, a new @@hostname, so a new source identity.
// trackerd adopts the checkpoint of the former identity (its position is
// in this server's binlog), and publishes what was written before and
// after the recreation, none skipped. A container created on a fresh
// volume (another binlog) cannot resume that checkpoint: trackerd exits 2,
// saying why and how to start afresh.
func TestMariaDBRecreatedContainer(t *testing.T) {
	cli := dockerEngine(t)
	vol, fresh := uniq("trk_mysql_vol"), uniq("trk_mysql_fresh")
	// Registered before the containers: removed after them.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, v := range []string{vol, fresh} {
			cli.VolumeRemove(ctx, v, client.VolumeRemoveOptions{Force: true})
		}
	})
	port := freePort(t)
	opts := mariaOpts{serverID: 4242, hostPort: port, volume: vol}
	m1 := startMariaBoxOn(t, opts)
	const name = "shop"
	db := m1.myDB(name)
	host1 := m1.hostname()
	bs := newBus(t)
	env := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(m1.url(name), nil)})
	p := startDeployment(t, env)
	insert(t, db, name, 1, 2)
	settle(t, bs, 4)
	stopAll(t, p)
	insert(t, db, name, 3, 4) // while trackerd is stopped, before the recreation
	db.Close()
	if err := m1.c.Terminate(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}

	m2 := startMariaBoxOn(t, opts)
	host2 := m2.hostname()
	if host1 == host2 {
		t.Fatalf("the recreated container has the same host name %s", host1)
	}
	db = m2.myDB(name)
	insert(t, db, name, 5, 6)
	p2 := startDeployment(t, env)
	p2.waitLog(`resuming from the checkpoint of this server under its former identity`, 10*time.Second)
	checkRowsExactlyOnce(t, settle(t, bs, 12), []int{1, 2, 3, 4, 5, 6})
	insert(t, db, name, 7)
	checkRowsExactlyOnce(t, settle(t, bs, 14), []int{1, 2, 3, 4, 5, 6, 7})
	stopAll(t, p2)
	db.Close()
	if err := m2.c.Terminate(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}

	// The same server_id and database on a fresh volume: another binlog.
	m3 := startMariaBoxOn(t, mariaOpts{serverID: 4242, hostPort: port, volume: fresh})
	db = m3.myDB(name)
	insert(t, db, name, 1)
	p3 := start(t, env, "run")
	code := p3.exitCode(2 * time.Minute)
	out := p3.out.String()
	if code != 2 {
		t.Fatalf("trackerd exited %d on a server without the checkpoint's position, want 2:\n%s", code, out)
	}
	for _, says := range []string{"cannot be resumed here", "mysql-bin.000002", "remove checkpoint"} {
		if !strings.Contains(out, says) {
			t.Errorf("output does not say %q:\n%s", says, out)
		}
	}
}
