package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Faults of MariaDB under a running trackerd. Each test asserts the
// stream's contents: every committed row exactly once per phase, nothing
// else.

// myDSN is a go-sql-driver DSN for the URI of a MySQL bind.
func myDSN(t testing.TB, uri string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := u.User.Password()
	return fmt.Sprintf("%s:%s@tcp(%s)%s?multiStatements=true", u.User.Username(), pass, u.Host, u.Path)
}

// dumpThread returns the id of user's binlog dump thread, or 0.
func dumpThread(t testing.TB, db *sql.DB, user string) int64 {
	var id int64
	if err := db.QueryRowContext(ctxT(t, 10*time.Second),
		"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND LIKE 'Binlog Dump%'", user).Scan(&id); err != nil {
		return 0
	}
	return id
}

// readerUser creates a MariaDB user of the test's own with the privileges
// of a binlog reader, so that its dump thread can be told apart, and
// points b at it.
func readerUser(t testing.TB, db *sql.DB, b *myBind) string {
	t.Helper()
	user := uniq("f_rd")
	myExec(t, db, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'rd-pw'", user))
	t.Cleanup(func() { db.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
	myExec(t, db, fmt.Sprintf("GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '%s'@'%%'", user))
	u, err := url.Parse(b.uri)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, "rd-pw")
	b.uri = u.String()
	return user
}

// killDumpThread KILLs user's binlog dump thread and waits until trackerd
// has a new one.
func killDumpThread(t testing.TB, db *sql.DB, user string) {
	t.Helper()
	var id int64
	eventually(t, 30*time.Second, "the reader's binlog dump thread", func() bool { id = dumpThread(t, db, user); return id != 0 })
	myExec(t, db, fmt.Sprintf("KILL %d", id))
	eventually(t, 60*time.Second, "trackerd to reconnect after KILL", func() bool {
		nid := dumpThread(t, db, user)
		return nid != 0 && nid != id
	})
}

// TestMariaDBKillBinlogMidTransaction KILLs trackerd's binlog dump thread
// at random moments while transactions of 200 INSERT statements (200 row
// events each) stream, then in the middle of one transaction of 40
// statements and 100,000 rows (35 MB of binlog, more than the socket
// buffers hold, so MariaDB is still sending it). trackerd reconnects from
// the end of the last transaction it handed over and sends the interrupted
// one again from its start with the same ids (JetStream drops them; the
// test requires some for the large transaction, as the proof that it was
// cut), and the stream holds every row once per phase. KILL of one's own
// connection is not a server fault: the host's MariaDB serves.
func TestMariaDBKillBinlogMidTransaction(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(400)"})
	db := mysqlAdmin(t)
	user := readerUser(t, db, b)
	p, _ := startMy(t, bs, b, "t")
	tbl := "`" + b.dbs[0] + "`.t"
	dsn := myDSN(t, strings.TrimSuffix(server(t, "TRACKERD_TEST_MYSQL_URL"), "/test")+"/"+b.dbs[0])

	n := scale(20000)
	w := startRowWriter(t, 200, n, 0, myTxWriter(t, dsn, tbl))
	kills := 0
	for _, at := range killPoints(2*n, 8) {
		bs.waitCount(t, uint64(at), 2*time.Minute)
		killDumpThread(t, db, user)
		kills++
	}
	<-w.done
	if w.failures.Load() > 0 {
		t.Fatalf("the writer failed %d times", w.failures.Load())
	}
	bs.waitCount(t, uint64(2*n), 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	again := resent(t, p, bs, b.key)

	// One transaction of 40 statements and 100,000 rows, killed while
	// trackerd publishes its before_commit events.
	stmts, per := 40, scale(2500)
	big := stmts * per
	tx := []string{"BEGIN"}
	for k := range stmts {
		from := n + 1 + k*per
		tx = append(tx, fmt.Sprintf("INSERT INTO %s SELECT seq, REPEAT('x', 300) FROM `%s`.seq_%d_to_%d", tbl, b.dbs[0], from, from+per-1))
	}
	tx = append(tx, "COMMIT")
	conn, err := db.Conn(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, q := range tx {
		if _, err := conn.ExecContext(ctxT(t, 2*time.Minute), q); err != nil {
			t.Fatalf("statement %d of the large transaction: %v", i, err)
		}
	}
	bs.waitCount(t, uint64(2*n+big/4), 3*time.Minute)
	at := bs.count(t)
	killDumpThread(t, db, user)
	kills++

	ids := myIDs(t, db, tbl)
	if len(ids) != n+big {
		t.Fatalf("table holds %d rows, want %d", len(ids), n+big)
	}
	ms := settleRows(t, bs, ids, 3*time.Minute)
	checkRowsExactlyOnce(t, ms, ids)
	stillRunning(t, p, "after its binlog connection was killed")
	againBig := resent(t, p, bs, b.key) - again
	if againBig <= 0 {
		t.Errorf("no event of the large transaction was sent again: the binlog connection was killed (at %d events) "+
			"after trackerd had read all of it, so the test did not cut the transaction", at)
	}
	t.Logf("binlog dump thread killed %d times: %d events sent again after the kills in a stream of %d transactions of 200 rows; "+
		"the last at %d of %d events, inside the transaction of %d statements and %d rows: %d of its events sent again; %d events checked",
		kills, again, n/200, at, 2*(n+big), stmts, big, againBig, len(ms))
}

// TestMariaDBServerRestartsWhileStreaming restarts MariaDB while a writer
// commits transactions of 10 rows: a clean stop (SIGTERM) and start, then
// SIGKILL and start (crash recovery). trackerd keeps running (its /readyz
// says not ready while the server is down, ready once it is back), reconnects,
// resumes from the last transaction it handed over (by GTID), and the
// stream holds every row that committed once per phase.
func TestMariaDBServerRestartsWhileStreaming(t *testing.T) {
	m := startMariaBox(t)
	bs := newBus(t)
	b := m.bind(map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(100)"})
	p, _ := startMy(t, bs, b, "t")
	tbl := "`" + b.dbs[0] + "`.t"
	w := startRowWriter(t, 10, 0, 2*time.Millisecond, myTxWriter(t, myDSN(t, b.uri), tbl))

	restartsWhileStreaming(t, p, bs, w, "MariaDB", func() []int { return myIDs(t, m.db(), tbl) },
		serverFault{"clean stop", downAndBack(t, p, b.key, func() { m.stop(30 * time.Second) }, m.start)},
		serverFault{"SIGKILL", func() { m.kill(); m.start() }},
	)
}

// TestMariaDBBinlogsPurgedWhileStopped stops trackerd, commits more rows
// over several binlog files, and purges those files: the checkpoint's
// position is gone. trackerd must refuse to start from anywhere else: it
// exits non-zero saying that a re-snapshot is required and which position
// is gone, and publishes nothing.
func TestMariaDBBinlogsPurgedWhileStopped(t *testing.T) {
	m := startMariaBox(t)
	bs := newBus(t)
	b := m.bind(map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(100)"})
	p, env := startMy(t, bs, b, "t")
	tbl := "`" + b.dbs[0] + "`.t"
	db := m.db()
	write := myTxWriter(t, myDSN(t, b.uri), tbl)
	for id := 1; id <= 100; id += 10 {
		if err := write(ctxT(t, time.Minute), id, id+10); err != nil {
			t.Fatal(err)
		}
	}
	bs.waitCount(t, 200, time.Minute)
	time.Sleep(500 * time.Millisecond) // a checkpoint interval and more
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("trackerd exit code %d after SIGTERM, want 0", code)
	}
	checkpoint := checkpointPosition(t, bs)

	for i := 0; i < 3; i++ {
		if err := write(ctxT(t, time.Minute), 101+10*i, 111+10*i); err != nil {
			t.Fatal(err)
		}
		myExec(t, db, "FLUSH BINARY LOGS")
	}
	var lastFile string
	var pos int64
	var skip1, skip2 sql.NullString
	if err := db.QueryRowContext(ctxT(t, 10*time.Second), "SHOW MASTER STATUS").Scan(&lastFile, &pos, &skip1, &skip2); err != nil {
		t.Fatal(err)
	}
	// MariaDB keeps a binlog until its binlog checkpoint has passed it
	// (PURGE then leaves it, with a note): purge until the checkpoint's
	// file is gone.
	var cp struct {
		GTID string `json:"gtid"`
		File string `json:"file"`
	}
	if err := json.Unmarshal([]byte(checkpoint), &cp); err != nil || cp.File == "" {
		t.Fatalf("checkpoint position %q: %v", checkpoint, err)
	}
	eventually(t, 30*time.Second, "PURGE BINARY LOGS to remove "+cp.File, func() bool {
		myExec(t, db, "PURGE BINARY LOGS TO '"+lastFile+"'")
		rows, err := db.QueryContext(ctxT(t, 10*time.Second), "SHOW BINARY LOGS")
		if err != nil {
			return false
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var size int64
			if rows.Scan(&name, &size) == nil && name == cp.File {
				time.Sleep(200 * time.Millisecond)
				return false
			}
		}
		return true
	})

	second := start(t, env, "run")
	code := second.exitCode(2 * time.Minute)
	out := second.out.String()
	if code == 0 {
		t.Fatalf("trackerd exited 0 with its binlogs purged:\n%s", out)
	}
	if !strings.Contains(out, "re-snapshot required") {
		t.Errorf("trackerd exited %d without saying that a re-snapshot is required:\n%s", code, out)
	}
	if n := bs.count(t); n != 200 {
		t.Fatalf("the stream holds %d events after the refused start, want the first run's 200", n)
	}
	// The error itself (not only the log line that said where trackerd
	// resumed from) names the position that is gone: its GTID or file.
	line := lastLineWith(out, "re-snapshot required")
	if !(cp.GTID != "" && strings.Contains(line, cp.GTID)) && !strings.Contains(line, cp.File) {
		t.Errorf("the error names neither the checkpoint's GTID %q nor its binlog file %q: %s", cp.GTID, cp.File, line)
	}
	t.Logf("exit code %d; trackerd said: %s", code, lastLineWith(out, "re-snapshot"))
}

// lastLineWith returns the last line of out that contains s.
func lastLineWith(out, s string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}

// TestMariaDBSecondInstanceIsFencedOut starts a second trackerd on the
// bind a first one is streaming, while rows are written, and once more when
// the bind is idle. With the same server_id, the second must exit 1 saying
// that another binlog reader holds it; with another server_id but the same
// checkpoint, the bind's lease must stop it (exit 1, "another trackerd"),
// even on an idle bind, where no checkpoint write would meet a conflict.
// The first keeps going untouched: its stream holds every row exactly once
// per phase. The server is a container of the test's own, so that "idle"
// means idle: no other test's binlog traffic.
func TestMariaDBSecondInstanceIsFencedOut(t *testing.T) {
	m := startMariaBox(t)
	bs := newBus(t)
	b := m.bind(map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(100)"})
	first, env := startMy(t, bs, b, "t")
	tbl := "`" + b.dbs[0] + "`.t"
	w := startRowWriter(t, 10, 0, 5*time.Millisecond, myTxWriter(t, myDSN(t, b.uri), tbl))
	bs.waitCount(t, 500, time.Minute)

	other := *b
	other.serverID = b.serverID + 1
	for _, tc := range []struct {
		name  string
		binds string
		want  []string
	}{
		{"same server_id", env["TRACKER_BINDS"], []string{"server_id", "another"}},
		{"same checkpoint, another server_id", other.bindsJSON("t"), []string{"another trackerd"}},
	} {
		env2 := bs.env(t) // its own data dir; same stream, bucket and bind
		env2["TRACKER_BINDS"] = tc.binds
		from := bs.count(t)
		second := start(t, env2, "run")
		code := second.exitCode(2 * time.Minute)
		if code != 1 {
			t.Errorf("%s: the second trackerd exited %d, want 1:\n%s", tc.name, code, second.out.String())
		}
		for _, s := range tc.want {
			if !strings.Contains(second.out.String(), s) {
				t.Errorf("%s: the second trackerd's output lacks %q:\n%s", tc.name, s, second.out.String())
			}
		}
		stillRunning(t, first, "after a second instance ("+tc.name+") started")
		eventually(t, time.Minute, "the first trackerd to go on", func() bool { return bs.count(t) >= from+500 })
		t.Logf("%s: the second trackerd exited %d: %s", tc.name, code, lastLineWith(second.out.String(), "trackerd:"))
	}
	w.halt()
	ids := myIDs(t, m.db(), tbl)
	ms := settleRows(t, bs, ids, 2*time.Minute)
	checkRowsExactlyOnce(t, ms, ids)
	stillRunning(t, first, "at the end")

	// On an idle bind the first writes no checkpoint, so compare-and-set
	// alone could not tell the newcomer that the bind is held: the lease
	// must.
	t.Run("idle bind, another server_id", func(t *testing.T) {
		env2 := bs.env(t)
		env2["TRACKER_BINDS"] = other.bindsJSON("t")
		second := start(t, env2, "run")
		select {
		case <-second.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("the second trackerd still runs on the idle bind after 15 s:\n%s", second.out.String())
		}
		if code := second.exitCode(time.Second); code != 1 {
			t.Errorf("the second trackerd exited %d, want 1", code)
		}
		stillRunning(t, first, "after a second instance started on the idle bind")
	})

	first.signal(syscall.SIGTERM)
	if code := first.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("the first trackerd exited %d after SIGTERM, want 0", code)
	}
}
