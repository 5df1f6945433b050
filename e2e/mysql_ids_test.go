package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Deployments that share a stream and the bind key "default" (every
// deployment's key unless configured) must never publish the same event
// id for different changes: JetStream would keep the first and drop the
// other as a duplicate, without a word.

// deployment is one trackerd configuration on a shared stream: its own
// checkpoint bucket (unless shared), data directory and binds.
func deployment(t *testing.T, bs *bus, bucket string, binds map[string]any) map[string]string {
	t.Helper()
	env := bs.env(t)
	if bucket != "" && bucket != bs.bucket {
		env["TRACKER_CHECKPOINT_BUCKET"] = bucket
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			bs.js.DeleteKeyValue(ctx, bucket)
		})
	}
	data, _ := json.Marshal(binds)
	env["TRACKER_BINDS"] = string(data)
	return env
}

// myBindConf is a bind's configuration of a MySQL URI.
func myBindConf(uri string, tables []string) map[string]any {
	m := map[string]any{"uri": uri, "server_id": 2_000_000 + rand.Uint32N(1_000_000_000)}
	if len(tables) > 0 {
		m["tables"] = tables
	}
	return m
}

// startDeployment runs trackerd and waits until its bind default streams.
func startDeployment(t *testing.T, env map[string]string) *proc {
	t.Helper()
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=default`, 60*time.Second)
	return p
}

// settle waits for n events in the stream, then a moment for more, and
// returns them.
func settle(t *testing.T, bs *bus, n int) []msg {
	t.Helper()
	bs.waitCount(t, uint64(n), time.Minute)
	time.Sleep(time.Second)
	return bs.read(t)
}

// distinctIDs fails the test unless every message has an id of its own.
func distinctIDs(t *testing.T, ms []msg) {
	t.Helper()
	seen := map[string]uint64{}
	for _, m := range ms {
		if s, dup := seen[m.Event.ID()]; dup {
			t.Errorf("messages %d and %d share id %s", s, m.Seq, m.Event.ID())
		}
		seen[m.Event.ID()] = m.Seq
	}
}

// stopAll stops trackerd processes with SIGTERM and checks they exit 0.
func stopAll(t *testing.T, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		p.signal(syscall.SIGTERM)
	}
	for _, p := range ps {
		if code := p.exitCode(30 * time.Second); code != 0 {
			t.Errorf("trackerd exited %d", code)
		}
	}
}

// TestMariaDBDisjointTablesOneBindKey: two deployments with bind key
// default follow disjoint tables of one database (so their sources have
// the same identity and origin), each with its own checkpoint bucket and
// server_id, publishing to one stream. One transaction writes both tables:
// its two rows are different changes at different places in it
// (Change.Index counts every row, tracked or not), so all four events are
// stored. With the index counted after the table filters, both rows were
// index 0 and one deployment's events were dropped as duplicates.
func TestMariaDBDisjointTablesOneBindKey(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t1": "id INT PRIMARY KEY", "t2": "id INT PRIMARY KEY"})
	envA := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(b.uri, []string{"t1"})})
	envB := deployment(t, bs, bs.bucket+"_b", map[string]any{"default": myBindConf(b.uri, []string{"t2"})})
	pa, pb := startDeployment(t, envA), startDeployment(t, envB)
	db := mysqlAdmin(t)
	d := "`" + b.dbs[0] + "`"
	myExec(t, db, "BEGIN; INSERT INTO "+d+".t1 VALUES (1); INSERT INTO "+d+".t2 VALUES (2); COMMIT")
	ms := settle(t, bs, 4)
	if len(ms) != 4 {
		t.Fatalf("stream holds %d events, want 4:\n%s", len(ms), strings.Join(summary(ms), "\n"))
	}
	distinctIDs(t, ms)
	var got []string
	for _, m := range ms {
		got = append(got, strings.TrimPrefix(m.Event.Type(), "trackerd.")+" "+m.Event.Subject()+" "+regexp.MustCompile(`/(\d+)/[a-z_]+$`).FindStringSubmatch(m.Event.ID())[1])
	}
	sort.Strings(got)
	want := []string{
		"after_commit " + b.dbs[0] + ".t1 0", "after_commit " + b.dbs[0] + ".t2 1",
		"before_commit " + b.dbs[0] + ".t1 0", "before_commit " + b.dbs[0] + ".t2 1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events (phase, subject, index):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	stopAll(t, pa, pb)
}

// TestMariaDBTwoDatabasesOneBindKey: two deployments with bind key default
// follow two databases of one server, publishing to one stream; a
// transaction writing both databases gives each deployment a change at
// index 0 of the same GTID. The origin in the id (server and database)
// tells them apart: all four events are stored. Before the ids carried the
// origin (a7e103f: <bind>/<txkey>/<seq>/<phase>) both deployments published
// default/gtid-0-1-N/0/before_commit and .../after_commit, and two of the
// four events were dropped.
func TestMariaDBTwoDatabasesOneBindKey(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 2, map[string]string{"t": "id INT PRIMARY KEY"})
	uri2 := strings.TrimSuffix(b.uri, "/"+b.dbs[0]) + "/" + b.dbs[1]
	envA := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(b.uri, nil)})
	envB := deployment(t, bs, bs.bucket+"_b", map[string]any{"default": myBindConf(uri2, nil)})
	pa, pb := startDeployment(t, envA), startDeployment(t, envB)
	db := mysqlAdmin(t)
	myExec(t, db, fmt.Sprintf("BEGIN; INSERT INTO `%s`.t VALUES (1); INSERT INTO `%s`.t VALUES (2); COMMIT", b.dbs[0], b.dbs[1]))
	ms := settle(t, bs, 4)
	if len(ms) != 4 {
		t.Fatalf("stream holds %d events, want 4:\n%s", len(ms), strings.Join(summary(ms), "\n"))
	}
	distinctIDs(t, ms)
	subjects := map[string]int{}
	for _, m := range ms {
		subjects[m.Event.Subject()]++
	}
	if subjects[b.dbs[0]+".t"] != 2 || subjects[b.dbs[1]+".t"] != 2 {
		t.Errorf("events per table %v, want two of each", subjects)
	}
	stopAll(t, pa, pb)
}

// TestMariaDBTablesChangedAcrossCrash: the same change published twice is a
// true duplicate, also when the bind's tables change in between. trackerd,
// following t1, is killed while it publishes a large transaction that
// first writes a row of t2 and then rows of t1; it restarts following t1
// and t2, reads the transaction again from its start, and publishes the
// t2 row too. Its index (its place among all rows of the transaction, 0)
// is not one a t1 row had in the first run, so nothing is dropped as a
// duplicate; the t1 rows sent again have their first ids and are. With
// indexes counted after the table filters, the t2 row took the first t1
// row's index, and JetStream dropped it.
func TestMariaDBTablesChangedAcrossCrash(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t1": "id INT PRIMARY KEY, payload VARCHAR(200)", "t2": "id INT PRIMARY KEY"})
	conf := myBindConf(b.uri, []string{"t1"})
	env := deployment(t, bs, bs.bucket, map[string]any{"default": conf})
	p := startDeployment(t, env)
	n := scale(50000)
	const t2ID = 10_000_000
	db := mysqlAdmin(t)
	d := "`" + b.dbs[0] + "`"
	done := make(chan error, 1)
	go func() {
		_, err := db.ExecContext(context.Background(), fmt.Sprintf("BEGIN; INSERT INTO %s.t2 VALUES (%d); INSERT INTO %s.t1 SELECT seq, REPEAT('x', 150) FROM %s.seq_1_to_%d; COMMIT",
			d, t2ID, d, d, n))
		done <- err
	}()
	bs.waitCount(t, 1000, time.Minute)
	p.cmd.Process.Kill()
	p.exitCode(30 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cut := bs.count(t)
	if cut >= uint64(2*n) {
		t.Fatalf("trackerd published the whole transaction (%d events) before it was killed: nothing to read again", cut)
	}
	conf["tables"] = []string{"t1", "t2"}
	data, _ := json.Marshal(map[string]any{"default": conf})
	env["TRACKER_BINDS"] = string(data)
	p2 := startDeployment(t, env)
	ids := make([]int, 0, n+1)
	for id := 1; id <= n; id++ {
		ids = append(ids, id)
	}
	ids = append(ids, t2ID)
	ms := settleRows(t, bs, ids, 2*time.Minute)
	t.Logf("killed after %d events; %d in the stream now", cut, len(ms))
	checkRowsExactlyOnce(t, ms, ids)
	stopAll(t, p2)
}
