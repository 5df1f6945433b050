package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A value bigger than NATS's max_payload (1 MiB on the test server): with
// OVERSIZE_POLICY=fail trackerd stops at once with an error naming the event
// and the sizes (loud, not a stall), and publishes nothing of it; restarted
// with the default OVERSIZE_POLICY=truncate it resumes from its checkpoint,
// publishes the change with the large column left out and named in
// "truncated", and goes on with the next change.

// oversizeCase is one source's oversized value.
type oversizeCase struct {
	col    string // the large column
	idRe   string // the id of the oversized change's before_commit event
	start  func(env map[string]string) *proc
	warmUp func() // writes row 0 with a small value in col
	big    func() // writes row 1 with the large value in col and title 'big title'
	small  func() // writes row 2 with a small value in col and title 'next'
	update func() // changes row 1's title to 'retitled', not col
	// checkUpdate checks the events of update (before_commit, after_commit).
	checkUpdate func(ms []msg)
	size        int  // bytes of the large value
	bus         *bus // where the events go
	env         func() map[string]string
}

func runOversize(t *testing.T, c oversizeCase) {
	// 1. OVERSIZE_POLICY=fail: a loud stop, nothing of the change published.
	env := c.env()
	env["TRACKER_OVERSIZE_POLICY"] = "fail"
	p := c.start(env)
	// A bind that has been running: it has published a change and written
	// a checkpoint (a first start that fails before any checkpoint is
	// TestKillBeforeFirstCheckpoint's case).
	c.warmUp()
	c.bus.waitCount(t, 2, time.Minute)
	eventually(t, time.Minute, "the bind's first checkpoint", func() bool { return hasCheckpoint(c.bus) })
	t0 := time.Now()
	c.big()
	code := p.exitCode(2 * time.Minute)
	stopped := time.Since(t0)
	out := p.out.String()
	if code != 1 {
		t.Fatalf("OVERSIZE_POLICY=fail: exit code %d, want 1; output:\n%s", code, out)
	}
	rx := regexp.MustCompile(`event ` + c.idRe + ` \(\S+\) is (\d+) bytes with its headers, over the limit of (\d+) bytes`)
	m := rx.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("OVERSIZE_POLICY=fail: the error does not name the event and its size (%s); output:\n%s", rx, out)
	}
	if !strings.Contains(out, "max_payload") {
		t.Errorf("OVERSIZE_POLICY=fail: the error does not name max_payload:\n%s", out)
	}
	if n := c.bus.count(t); n != 2 {
		t.Errorf("OVERSIZE_POLICY=fail: %d events in the stream, want row 0's 2", n)
	}
	t.Logf("OVERSIZE_POLICY=fail: exit 1 %v after the write: event of %s bytes over the limit of %s bytes", stopped.Round(time.Millisecond), m[1], m[2])

	// 2. The default policy, truncate: the same change comes out without
	// the large value, and the bind goes on.
	p = c.start(c.env())
	c.small()
	c.update()
	deadline := time.Now().Add(time.Minute)
	for c.bus.count(t) < 8 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	ms := c.bus.read(t)
	if len(ms) != 8 {
		t.Fatalf("after the restart with OVERSIZE_POLICY=truncate: %d events, want 8 (the inserts of rows 0, 1 and 2 and row 1's update, each in both phases):\n%s",
			len(ms), strings.Join(summary(ms), "\n"))
	}
	ms = ms[2:]
	for i, want := range []string{"1 before_commit insert", "1 after_commit insert", "2 before_commit insert", "2 after_commit insert", "1 before_commit update", "1 after_commit update"} {
		m := ms[i]
		got := fmt.Sprintf("%s %s %s", m.Change.After["id"], strings.TrimPrefix(m.Event.Type(), "trackerd."), m.Change.Op)
		if got != want {
			t.Fatalf("event %d is %q, want %q:\n%s", i, got, want, strings.Join(summary(ms), "\n"))
		}
	}
	for _, m := range ms[:2] {
		ch := m.Change
		if len(ch.Truncated) != 1 || ch.Truncated[0] != c.col {
			t.Errorf("%s: truncated = %v, want [%s]", m.Event.ID(), ch.Truncated, c.col)
		}
		if _, ok := ch.After[c.col]; ok || string(ch.After["title"]) != `"big title"` {
			t.Errorf("%s: after has %v, want title and no %s", m.Event.ID(), sortedKeys(ch.After), c.col)
		}
		if len(m.Data) >= 1<<20 {
			t.Errorf("%s: %d bytes, over max_payload", m.Event.ID(), len(m.Data))
		}
	}
	if got := string(ms[3].Change.After[c.col]); got == "" || len(ms[3].Change.Truncated) != 0 {
		t.Errorf("the row after the oversized one: %s = %s, truncated %v", c.col, got, ms[3].Change.Truncated)
	}
	for _, m := range ms[4:] {
		if string(m.Change.After["title"]) != `"retitled"` {
			t.Errorf("%s: title %s, want \"retitled\"", m.Event.ID(), m.Change.After["title"])
		}
	}
	c.checkUpdate(ms[4:])
	if !strings.Contains(p.out.String(), "event too large: column values left out") {
		t.Errorf("no warning about the truncated event in the log:\n%s", p.out.String())
	}
	t.Logf("OVERSIZE_POLICY=truncate: the %d-byte value's change arrived as %d and %d bytes with truncated=%v; the bind went on",
		c.size, len(ms[0].Data), len(ms[1].Data), ms[0].Change.Truncated)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(60 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestPostgresOversizedTOASTValue(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"docs": "id int PRIMARY KEY, title text, body text"})
	db := pgAdmin(t)
	tbl := fmt.Sprintf("%q.docs", b.schema)
	const size = 10 << 20 // 10 MiB of hex digits: stored out of line (TOAST)
	runOversize(t, oversizeCase{
		col: "body", idRe: `pg/[0-9a-f]{16}/lsn-[0-9A-F]{16}/0/before_commit`, bus: bs, size: size,
		env: func() map[string]string {
			env := bs.env(t)
			env["TRACKER_BINDS"] = b.bindsJSON(t, "docs")
			return env
		},
		start: func(env map[string]string) *proc {
			p := startGraceful(t, env, "run")
			p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
			return p
		},
		big: func() {
			pgExec(t, db, fmt.Sprintf(`INSERT INTO %s SELECT 1, 'big title', string_agg(md5(g::text), '') FROM generate_series(1, %d) g`, tbl, size/32))
			var stored, toasted int64
			if err := db.QueryRow(ctxT(t, time.Minute), fmt.Sprintf(`SELECT octet_length(body), pg_column_size(body) FROM %s WHERE id = 1`, tbl)).Scan(&stored, &toasted); err != nil {
				t.Fatal(err)
			}
			t.Logf("PostgreSQL: body is %d bytes, %d bytes as stored (TOAST)", stored, toasted)
		},
		small:  func() { pgExec(t, db, fmt.Sprintf(`INSERT INTO %s VALUES (2, 'next', 'fits')`, tbl)) },
		warmUp: func() { pgExec(t, db, fmt.Sprintf(`INSERT INTO %s VALUES (0, 'first', 'small')`, tbl)) },
		update: func() { pgExec(t, db, fmt.Sprintf(`UPDATE %s SET title = 'retitled' WHERE id = 1`, tbl)) },
		checkUpdate: func(ms []msg) {
			// The TOASTed body did not change: PostgreSQL does not send it,
			// so the update fits and names it unchanged.
			for _, m := range ms {
				if !slices.Equal(m.Change.Unchanged, []string{"body"}) || len(m.Change.Truncated) != 0 {
					t.Errorf("%s: unchanged %v, truncated %v; want [body] and none", m.Event.ID(), m.Change.Unchanged, m.Change.Truncated)
				}
			}
		},
	})
}

func TestMariaDBOversizedLongblob(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"blobs": "id INT PRIMARY KEY, title VARCHAR(50), b LONGBLOB"})
	db := mysqlAdmin(t)
	tbl := "`" + b.dbs[0] + "`.blobs"
	// 20 MiB, built on the server (REPEAT). REPEAT's result is bounded by
	// max_allowed_packet (16 MiB by default), which scripts/setup-servers.sh
	// raises to 64 MiB; against a server left at less, the largest value it
	// allows.
	var maxPacket int
	if err := db.QueryRowContext(ctxT(t, time.Minute), "SELECT @@max_allowed_packet").Scan(&maxPacket); err != nil {
		t.Fatal(err)
	}
	size := 20 << 20
	if size > maxPacket-1024 {
		t.Logf("MariaDB: max_allowed_packet is %d bytes: REPEAT cannot build 20 MiB, using %d bytes", maxPacket, maxPacket-1024)
		size = maxPacket - 1024
	}
	runOversize(t, oversizeCase{
		col: "b", idRe: `my/[0-9a-f]{16}/gtid-\d+-\d+-\d+/0/before_commit`, bus: bs, size: size,
		env: func() map[string]string {
			env := bs.env(t)
			env["TRACKER_BINDS"] = b.bindsJSON("blobs")
			return env
		},
		start: func(env map[string]string) *proc {
			p := startGraceful(t, env, "run")
			p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
			return p
		},
		big: func() {
			myExec(t, db, fmt.Sprintf("INSERT INTO %s VALUES (1, 'big title', REPEAT('x', %d))", tbl, size))
			var n int
			if err := db.QueryRowContext(ctxT(t, time.Minute), "SELECT LENGTH(b) FROM "+tbl+" WHERE id = 1").Scan(&n); err != nil || n != size {
				t.Fatalf("the LONGBLOB is %d bytes (%v), want %d", n, err, size)
			}
		},
		small:  func() { myExec(t, db, "INSERT INTO "+tbl+" VALUES (2, 'next', 'fits')") },
		warmUp: func() { myExec(t, db, "INSERT INTO "+tbl+" VALUES (0, 'first', 'small')") },
		update: func() { myExec(t, db, "UPDATE "+tbl+" SET title = 'retitled' WHERE id = 1") },
		checkUpdate: func(ms []msg) {
			// The full row images carry the LONGBLOB twice: truncated too.
			for _, m := range ms {
				if !slices.Equal(m.Change.Truncated, []string{"b"}) || string(m.Change.Before["title"]) != `"big title"` {
					t.Errorf("%s: truncated %v, before title %s; want [b] and \"big title\"", m.Event.ID(), m.Change.Truncated, m.Change.Before["title"])
				}
			}
		},
	})
}
