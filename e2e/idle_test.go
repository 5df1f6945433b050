package e2e

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Idle databases: a PostgreSQL bind whose tables see no writes, while
// another database of the same server writes a lot of WAL. The slot's
// confirmed_flush_lsn must follow the server (trackerd acknowledges
// keepalive positions when nothing is pending, and writes heartbeat
// messages), or the slot would pin all that WAL. /metrics and `trackerd
// check` report the lag.

// idleWALBytes is about how much WAL the other database writes:
// 64 MiB times TRACKERD_E2E_SCALE.
func idleWALBytes() int64 { return int64(scale(64 << 20)) }

// otherDatabase creates a database of the test's own on the test server and
// returns a connection to it; cleanup drops it.
func otherDatabase(t *testing.T) *pgx.Conn {
	t.Helper()
	admin := pgAdmin(t)
	name := uniq("e2e_idle")
	pgExec(t, admin, fmt.Sprintf(`CREATE DATABASE %q`, name))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, server(t, "TRACKERD_TEST_POSTGRES_URL"))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		c.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %q WITH (FORCE)`, name))
	})
	u, err := url.Parse(server(t, "TRACKERD_TEST_POSTGRES_URL"))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	conn, err := pgx.Connect(ctxT(t, 30*time.Second), u.String())
	if err != nil {
		t.Fatalf("connect to %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgLSN returns a query's single pg_lsn result as text.
func pgLSN(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctxT(t, time.Minute), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// lsnDiff returns a - b in bytes.
func lsnDiff(t *testing.T, conn *pgx.Conn, a, b string) int64 {
	t.Helper()
	var d int64
	if err := conn.QueryRow(ctxT(t, time.Minute), `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::int8`, a, b).Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPostgresIdleSlotFollowsTheServer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		heartbeat string
	}{
		// Keepalive acknowledgements alone must keep the slot moving.
		{"keepalives, heartbeat off", "-1"},
		// With heartbeat messages too, every second (the default is 10s).
		{"keepalives and heartbeat", "1s"},
	} {
		t.Run(tc.name, func(t *testing.T) { testIdleSlot(t, tc.heartbeat) })
	}
}

func testIdleSlot(t *testing.T, heartbeat string) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"quiet": "id int PRIMARY KEY"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = pgBindsWith(t, b, nil, map[string]any{"heartbeat": heartbeat}, "quiet")
	p := startGraceful(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	base := httpBase(p)
	admin := pgAdmin(t)
	other := otherDatabase(t)
	confirmed := func() string {
		return pgLSN(t, admin, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, b.slot)
	}

	// The other database writes at least idleWALBytes of WAL, in chunks,
	// for at least 5 seconds; the slot's position is sampled after each.
	pgExec(t, other, `CREATE TABLE w (id int, pad text)`)
	from := pgLSN(t, admin, `SELECT pg_current_wal_lsn()::text`)
	before := confirmed()
	moved := 0 // samples during the writes that found the slot further on
	last := before
	chunks := 0
	for began := time.Now(); time.Since(began) < 5*time.Second ||
		lsnDiff(t, admin, pgLSN(t, admin, `SELECT pg_current_wal_lsn()::text`), from) < idleWALBytes(); chunks++ {
		pgExec(t, other, fmt.Sprintf(`INSERT INTO w SELECT g, repeat(md5(g::text), 32) FROM generate_series(%d, %d) g`, chunks*4000+1, chunks*4000+4000))
		if c := confirmed(); lsnDiff(t, admin, c, last) > 0 {
			moved++
			last = c
		}
		time.Sleep(200 * time.Millisecond)
	}
	end := pgLSN(t, admin, `SELECT pg_current_wal_lsn()::text`)
	written := lsnDiff(t, admin, end, from)
	t0 := time.Now()
	eventually(t, 2*time.Minute, fmt.Sprintf("slot %s's confirmed_flush_lsn to pass %s (%d bytes of WAL written by another database)", b.slot, end, written), func() bool {
		return lsnDiff(t, admin, confirmed(), end) >= 0
	})
	caughtUp := time.Since(t0)
	after := confirmed()
	t.Logf("another database wrote %.1f MiB of WAL in %d chunks; the slot's confirmed_flush_lsn went %s -> %s, moving on %d times during the writes and past their end %v after them",
		float64(written)/(1<<20), chunks, before, after, moved, caughtUp.Round(time.Millisecond))
	if moved == 0 {
		t.Errorf("the slot's confirmed_flush_lsn stayed at %s during %d chunks of writes: it only moved after them", before, chunks)
	}
	if n := bs.count(t); n != 0 {
		t.Errorf("%d events for a bind whose tables saw no write", n)
	}

	// /metrics reports the lag, in bytes and seconds: small once caught
	// up (other tests may be writing WAL meanwhile, hence eventually).
	var lagBytes, lagSeconds float64
	eventually(t, time.Minute, "trackerd_replication_lag_bytes under 4 MiB", func() bool {
		v, ok := metricValue(base, "trackerd_replication_lag_bytes", b.key)
		lagBytes = v
		return ok && v >= 0 && v < 4<<20
	})
	lagSeconds, ok := metricValue(base, "trackerd_replication_lag_seconds", b.key)
	if !ok || lagSeconds < 0 {
		t.Errorf("/metrics has no trackerd_replication_lag_seconds for bind %s (got %v, %v)", b.key, lagSeconds, ok)
	}
	t.Logf("/metrics: trackerd_replication_lag_bytes %.0f, trackerd_replication_lag_seconds %g", lagBytes, lagSeconds)

	// `trackerd check` beside the running trackerd: the bind's checkpoint
	// and who holds its lease (the slot in use is then the holder's: ok).
	cpLine := regexp.MustCompile(`(?m)^ok\s+nats\s+checkpoint of ` + b.key + `: at (\S+) of pg/\d+/\S+, written (\d+)s ago(; held by a running trackerd \(.+, pid \d+\))?$`)
	running := start(t, env, "check")
	running.exitCode(2 * time.Minute)
	if m := cpLine.FindStringSubmatch(running.out.String()); m == nil || m[3] == "" {
		t.Fatalf("trackerd check beside trackerd: no checkpoint line naming the lease holder for bind %s:\n%s", b.key, running.out.String())
	}

	p.signal(syscall.SIGTERM)
	if code := p.exitCode(60 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}

	// `trackerd check` prints the slot's lag.
	chk := start(t, env, "check")
	code := chk.exitCode(2 * time.Minute)
	out := chk.out.String()
	m := regexp.MustCompile(`(?m)^ok\s+` + b.key + `\s+slot lag: (\d+) bytes of WAL behind the server`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("trackerd check (exit %d) prints no slot lag line for bind %s:\n%s", code, b.key, out)
	}
	if code != 0 {
		t.Errorf("trackerd check: exit code %d, want 0:\n%s", code, out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	// Stopped: the checkpoint it resumes from, and no lease holder.
	cp := cpLine.FindStringSubmatch(out)
	if cp == nil || cp[3] != "" {
		t.Fatalf("trackerd check after the stop: want the checkpoint of bind %s without a lease holder:\n%s", b.key, out)
	}
	t.Logf("trackerd check: slot lag %d bytes; checkpoint %s written %ss before", n, cp[1], cp[2])
}
