package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// scale multiplies a workload size by TRACKERD_E2E_SCALE (default 1), for
// longer local soaks.
func scale(n int) int {
	if f, err := strconv.ParseFloat(os.Getenv("TRACKERD_E2E_SCALE"), 64); err == nil && f > 0 {
		return int(float64(n) * f)
	}
	return n
}

// checkExactlyOnce asserts that the stream holds, for every id in 1..n,
// exactly one before_commit and one after_commit event of its insert, and
// nothing else.
func checkExactlyOnce(t *testing.T, ms []msg, n int) {
	t.Helper()
	checkExactlyOnceRows(t, ms, n)
}

// checkExactlyOnceRows is checkExactlyOnce for rows whose only column may be
// the id.
func checkExactlyOnceRows(t *testing.T, ms []msg, n int) {
	t.Helper()
	seen := make(map[string]int)
	for _, m := range ms {
		id := string(m.Change.After["id"])
		seen[m.Event.Type()+" "+id]++
	}
	missing, dup := 0, 0
	for i := 1; i <= n; i++ {
		for _, ph := range []string{"trackerd.before_commit", "trackerd.after_commit"} {
			switch c := seen[ph+" "+strconv.Itoa(i)]; {
			case c == 0:
				missing++
			case c > 1:
				dup++
			}
		}
	}
	if missing > 0 || dup > 0 || len(ms) != 2*n {
		t.Fatalf("%d messages for %d changes: %d events missing, %d duplicated", len(ms), n, missing, dup)
	}
}

func TestPostgresKill9ExactlyOnce(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, payload text"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	tbl := fmt.Sprintf("%q.t", b.schema)
	conn := pgAdmin(t)
	kill9During20kTransactions(t, bs, env, func(from, to int) error {
		// One round trip, each INSERT a transaction of its own: a simple
		// query with explicit BEGIN/COMMIT (a pgx batch would run them all
		// in one implicit transaction).
		var sb strings.Builder
		for j := from; j <= to; j++ {
			fmt.Fprintf(&sb, "BEGIN; INSERT INTO %s VALUES (%d, '%s'); COMMIT;", tbl, j, strings.Repeat("x", 64))
		}
		_, err := conn.Exec(context.Background(), sb.String(), pgx.QueryExecModeSimpleProtocol)
		return err
	})
}

// kill9During20kTransactions starts trackerd with env, commits 20,000
// single-row transactions with write (ids from..to per call, 100 at a
// time), kills trackerd with SIGKILL at random points of the stream and
// restarts it each time, then checks that every change is in the stream
// exactly once per phase.
func kill9During20kTransactions(t *testing.T, bs *bus, env map[string]string, write func(from, to int) error) {
	t.Helper()
	p := start(t, env, "run")
	p.waitLog(`msg=streaming`, 60*time.Second)
	n := scale(20000)
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= n && writeErr == nil; i += 100 {
			writeErr = write(i, min(i+99, n))
		}
	}()
	for k, at := range killPoints(2*n, scale(3)) {
		eventually(t, 3*time.Minute, fmt.Sprintf("%d messages before kill #%d", at, k+1), func() bool { return bs.count(t) >= uint64(at) })
		p.signal(syscall.SIGKILL)
		p.exitCode(10 * time.Second)
		t.Logf("kill -9 #%d at %d messages (aimed at %d)", k+1, bs.count(t), at)
		p = start(t, env, "run")
		p.waitLog(`msg=streaming`, 60*time.Second)
	}
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}
	bs.waitCount(t, uint64(2*n), 3*time.Minute)
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, bs.read(t), n)
}

// killPoints returns k stream sizes in (5%, 95%) of total, sorted, at which
// to kill trackerd.
func killPoints(total, k int) []int {
	pts := make([]int, k)
	for i := range pts {
		pts[i] = total/20 + rand.IntN(total*9/10)
	}
	slices.Sort(pts)
	return pts
}
