package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event identity (DESIGN section 4): no two different changes share an
// id, whatever other deployments publish to the stream. Each test has two
// deployments that once would have published the same ids, and JetStream
// would have dropped one deployment's events as duplicates of the other's.

// byOrigin groups a stream's events by their CloudEvent source, which
// names the bind and the origin of their ids, and returns, per source, the
// event count and the txkeys.
func byOrigin(t testing.TB, ms []msg) (count map[string]int, keys map[string]map[string]bool) {
	t.Helper()
	count, keys = map[string]int{}, map[string]map[string]bool{}
	for _, m := range ms {
		src := m.Event.Source()
		count[src]++
		if keys[src] == nil {
			keys[src] = map[string]bool{}
		}
		keys[src][m.Change.Source.TxKey] = true
	}
	return count, keys
}

// Two PostgreSQL clusters given the same statements write them at the same
// LSNs, so their transactions have the same keys (txkey is the first
// change's LSN). Each is followed by a trackerd whose bind has the same key
// (default), database name and slot name, and both publish to one stream:
// every event of both is stored, since the ids' origin holds each
// cluster's system identifier.
func TestPostgresClustersWithTheSameLSNs(t *testing.T) {
	a, b := startPGBoxWith(t, true, "autovacuum=off"), startPGBoxWith(t, true, "autovacuum=off")
	var sysA, sysB string
	a.conn().QueryRow(ctxT(t, 10*time.Second), `SELECT system_identifier::text FROM pg_control_system()`).Scan(&sysA)
	b.conn().QueryRow(ctxT(t, 10*time.Second), `SELECT system_identifier::text FROM pg_control_system()`).Scan(&sysB)
	if sysA == sysB {
		t.Fatalf("both clusters have system identifier %s", sysA)
	}
	// The same statements on both, in step.
	shop := map[*pgBox]*pgx.Conn{}
	both := func(sql string) {
		t.Helper()
		for _, p := range []*pgBox{a, b} {
			pgExec(t, shop[p], sql)
		}
	}
	for _, p := range []*pgBox{a, b} {
		pgExec(t, p.conn(), `CREATE DATABASE shop`)
		c, err := pgx.Connect(ctxT(t, 30*time.Second), strings.Replace(p.url(), "/postgres?", "/shop?", 1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		shop[p] = c
	}
	both(`CREATE TABLE orders (id int PRIMARY KEY, note text)`)

	bs := newBus(t)
	procs := map[*pgBox]*proc{}
	for _, p := range []*pgBox{a, b} {
		env := bs.env(t)
		data, _ := json.Marshal(map[string]any{"default": map[string]any{"uri": strings.Replace(p.url(), "/postgres?", "/shop?", 1)}})
		env["TRACKER_BINDS"] = string(data)
		procs[p] = startGraceful(t, env, "run")
		procs[p].waitLog(`msg=streaming bind=default`, 60*time.Second)
	}
	const txs = 5
	for i := 1; i <= txs; i++ {
		both(fmt.Sprintf(`INSERT INTO orders VALUES (%d, 'one')`, i))
	}
	both(`BEGIN; INSERT INTO orders VALUES (100, 'two'); INSERT INTO orders VALUES (101, 'two'); COMMIT`)
	const perCluster = 2 * (txs + 2)
	bs.waitCount(t, 2*perCluster, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	ms := bs.read(t)
	count, keys := byOrigin(t, ms)
	if len(count) != 2 || len(ms) != 2*perCluster {
		t.Fatalf("%d events of %d origins (%v), want %d of each of 2", len(ms), len(count), count, perCluster)
	}
	var origins []string
	for o, n := range count {
		origins = append(origins, o)
		if n != perCluster {
			t.Fatalf("origin %s: %d events, want %d", o, n, perCluster)
		}
	}
	shared := 0
	for k := range keys[origins[0]] {
		if keys[origins[1]][k] {
			shared++
		}
	}
	t.Logf("clusters %s and %s: %d of %d transaction keys the same", sysA, sysB, shared, len(keys[origins[0]]))
	if shared == 0 {
		t.Fatalf("the clusters wrote at different LSNs (keys %v and %v): nothing shows that their ids differ by origin", keys[origins[0]], keys[origins[1]])
	}
	for p, pr := range procs {
		if d := trackerdMetric(t, pr, "trackerd_sink_duplicates_total"); d != 0 {
			t.Fatalf("trackerd of %s: %d events dropped as duplicates", p.url(), d)
		}
	}

	for _, pr := range procs {
		pr.signal(syscall.SIGTERM)
		pr.exitCode(30 * time.Second)
	}
	// With the slot free, trackerd check on a server without
	// max_prepared_transactions warns that prepared transactions are
	// impossible there, and passes.
	env := bs.env(t)
	env["TRACKER_DATABASE_URI"] = strings.Replace(a.url(), "/postgres?", "/shop?", 1)
	c := start(t, env, "check")
	if code := c.exitCode(60 * time.Second); code != 0 {
		t.Fatalf("trackerd check: exit %d:\n%s", code, c.out.String())
	}
	out := c.out.String()
	if !strings.Contains(out, "warn  default      max_prepared_transactions: max_prepared_transactions is 0") ||
		!strings.Contains(out, "fix: only if applications are to use two-phase commit") ||
		!strings.Contains(out, "two-phase decoding: slot trackerd_shop_default decodes prepared transactions at PREPARE TRANSACTION") {
		t.Fatalf("trackerd check:\n%s", out)
	}
}

// Two deployments of bind key default on one database follow disjoint
// tables through slots of their own and one publication of both tables,
// and publish to one stream. A transaction writing to both tables has one
// key for both (its first change's LSN), and each deployment publishes one
// change of it: its first after the deployment's table filter, which is
// what the ids of a7e103f counted (<bind>/<txkey>/<seq>/<phase>), so both
// had the same ids. Now every event of both is stored: the ids' origin
// holds the slot (and the index counts before the filters).
func TestPostgresDeploymentsWithDisjointTables(t *testing.T) {
	bs := newBus(t)
	tb := newPGBind(t, map[string]string{"a": "id int PRIMARY KEY", "b": "id int PRIMARY KEY"})
	db := pgAdmin(t)
	pgExec(t, db, fmt.Sprintf(`CREATE PUBLICATION %q FOR TABLE %q.a, %q.b`, tb.pub, tb.schema, tb.schema))
	var procs []*proc
	for i, table := range []string{"a", "b"} {
		slot := fmt.Sprintf("%s_%d", tb.slot, i)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			dropSlot(ctx, t, db, slot)
		})
		env := bs.env(t)
		data, _ := json.Marshal(map[string]any{"default": map[string]any{
			"uri": tb.uri, "slot": slot, "publication": tb.pub, "tables": []string{tb.schema + "." + table}}})
		env["TRACKER_BINDS"] = string(data)
		p := startGraceful(t, env, "run")
		p.waitLog(`msg=streaming bind=default`, 60*time.Second)
		procs = append(procs, p)
	}
	for i := 1; i <= 3; i++ {
		pgExec(t, db, fmt.Sprintf(`BEGIN; INSERT INTO %q.b VALUES (%d); INSERT INTO %q.a VALUES (%d); COMMIT`, tb.schema, i, tb.schema, i))
	}
	bs.waitCount(t, 12, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	ms := bs.read(t)
	count, keys := byOrigin(t, ms)
	if len(ms) != 12 || len(count) != 2 {
		t.Fatalf("%d events of origins %v, want 6 of each of 2", len(ms), count)
	}
	var origins []string
	for o := range keys {
		origins = append(origins, o)
	}
	for k := range keys[origins[0]] {
		if !keys[origins[1]][k] {
			t.Fatalf("transaction %s of one deployment is not the other's: keys %v and %v", k, keys[origins[0]], keys[origins[1]])
		}
	}
	for _, p := range procs {
		if d := trackerdMetric(t, p, "trackerd_sink_duplicates_total"); d != 0 {
			t.Fatalf("%d events dropped as duplicates", d)
		}
		p.signal(syscall.SIGTERM)
		p.exitCode(30 * time.Second)
	}
}
