package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tailEvents returns the JSON lines a `trackerd tail` printed (its stderr,
// merged into the same output, holds only log lines).
func tailEvents(p *proc) []string {
	var out []string
	for _, l := range p.lines() {
		if strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return out
}

// tailLine summarizes one printed event: phase, subject (schema.table), op
// and the row's id.
func tailLine(t *testing.T, line string) string {
	t.Helper()
	var ev struct {
		Type    string `json:"type"`
		Subject string `json:"subject"`
		Op      string `json:"trackerdop"`
		Data    change `json:"data"`
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("tail printed a line that is not a CloudEvent: %v\n%s", err, line)
	}
	id, ok := ev.Data.After["id"]
	if !ok {
		id = ev.Data.Key["id"]
	}
	return fmt.Sprintf("%s %s %s id=%s", strings.TrimPrefix(ev.Type, "trackerd."), ev.Subject, ev.Op, id)
}

// runTail runs `trackerd tail` with args to completion (it must exit 0 within
// 30s) and returns the events it printed, summarized.
func runTail(t *testing.T, env map[string]string, args ...string) (lines, raw []string) {
	t.Helper()
	p := start(t, env, append([]string{"tail"}, args...)...)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("tail %v: exit %d\n%s", args, code, p.out.String())
	}
	raw = tailEvents(p)
	for _, l := range raw {
		lines = append(lines, tailLine(t, l))
	}
	return lines, raw
}

// TestTailFilters runs trackerd over PostgreSQL, then `trackerd tail` with
// each filter and start position: it prints exactly the selected events,
// byte for byte as stored.
func TestTailFilters(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"orders": "id int PRIMARY KEY, note text", "order.lines": "id int PRIMARY KEY, qty int"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "orders", "order.lines")
	p := start(t, env, "run")
	p.waitLog(`msg=streaming`, 60*time.Second)
	db := pgAdmin(t)
	orders, lines := fmt.Sprintf("%q.orders", b.schema), fmt.Sprintf(`%q."order.lines"`, b.schema)
	pgExec(t, db, "INSERT INTO "+orders+" VALUES (1, 'first')")
	pgExec(t, db, "INSERT INTO "+lines+" VALUES (10, 3)")
	bs.waitCount(t, 4, 30*time.Second)
	mid := time.Now()
	time.Sleep(10 * time.Millisecond) // the stream's clock and ours may round alike
	pgExec(t, db, "UPDATE "+orders+" SET note = 'second' WHERE id = 1")
	pgExec(t, db, "DELETE FROM "+lines+" WHERE id = 10")
	bs.waitCount(t, 8, 30*time.Second)
	stored := bs.read(t)

	tenv := map[string]string{"TRACKER_NATS_URL": bs.url, "TRACKER_SUBJECT_PREFIX": bs.prefix, "TRACKER_STREAM_NAME": bs.stream}
	s := b.schema
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"table and signal", []string{"--table", "orders", "--signal", "after_commit", "--from", "start", "-n", "2"},
			[]string{"after_commit " + s + ".orders insert id=1", "after_commit " + s + ".orders update id=1"}},
		{"escaped table and op", []string{"--table", "order.lines", "--op", "delete", "--from", "start", "-n", "1"},
			[]string{"before_commit " + s + ".order.lines delete id=10"}},
		{"schema, bind and op", []string{"--schema", s, "--bind", b.key, "--op", "update", "--from", "start", "-n", "2"},
			[]string{"before_commit " + s + ".orders update id=1", "after_commit " + s + ".orders update id=1"}},
		{"raw pattern and op", []string{"--op", "insert", "--from", "start", "-n", "2", bs.prefix + ".after_commit.>"},
			[]string{"after_commit " + s + ".orders insert id=1", "after_commit " + s + ".order.lines insert id=10"}},
		{"from a sequence", []string{"--from", "5", "-n", "2"},
			[]string{"before_commit " + s + ".orders update id=1", "after_commit " + s + ".orders update id=1"}},
		{"from a time", []string{"--from", mid.UTC().Format(time.RFC3339Nano), "-n", "1"},
			[]string{"before_commit " + s + ".orders update id=1"}},
		{"from a duration ago", []string{"--from", "1h", "-n", "1"},
			[]string{"before_commit " + s + ".orders insert id=1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, raw := runTail(t, tenv, tc.args...)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("tail %v printed:\n%s\nwant:\n%s", tc.args, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			// Each line is the CloudEvent as stored, byte for byte.
			for _, l := range raw {
				found := false
				for _, m := range stored {
					found = found || string(m.Data) == l
				}
				if !found {
					t.Fatalf("tail printed an event that is not byte for byte in the stream:\n%s", l)
				}
			}
		})
	}

	// Without --from: core NATS, new events only.
	live := start(t, tenv, "tail", "-v", "--table", "orders", "--op", "insert", "-n", "2")
	live.waitLog(`trackerd tail: subscribed to `+bs.prefix+`\.\*\.\*\.\*\.orders\.insert`, 30*time.Second)
	pgExec(t, db, "INSERT INTO "+lines+" VALUES (11, 1)")
	pgExec(t, db, "INSERT INTO "+orders+" VALUES (2, 'live')")
	if code := live.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("live tail: exit %d\n%s", code, live.out.String())
	}
	var got []string
	for _, l := range tailEvents(live) {
		got = append(got, tailLine(t, l))
	}
	want := []string{"before_commit " + s + ".orders insert id=2", "after_commit " + s + ".orders insert id=2"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("live tail printed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A tail without -n runs until interrupted, and exits 0.
	idle := start(t, tenv, "tail", "-v", "--bind", "nothing-here")
	idle.waitLog(`trackerd tail: subscribed to `, 30*time.Second)
	idle.signal(syscall.SIGINT)
	if code := idle.exitCode(10 * time.Second); code != 0 || len(tailEvents(idle)) != 0 {
		t.Fatalf("interrupted tail: exit %d\n%s", code, idle.out.String())
	}
	p.signal(syscall.SIGINT)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("trackerd run: exit %d after SIGINT", code)
	}
}

// TestTailUsage: bad filters and positions are usage errors (exit 2),
// found before connecting to anything.
func TestTailUsage(t *testing.T) {
	env := map[string]string{"TRACKER_NATS_URL": "nats://127.0.0.1:1"}
	for _, args := range [][]string{
		{"--op", "upsert"},
		{"--op", "rollback"},
		{"--signal", "committed"},
		{"--from", "yesterday"},
		{"--from", "0"},
		{"-n", "-1"},
		{"a.>", "b.>"},
		{"trackerd..x"},
	} {
		p := start(t, env, append([]string{"tail"}, args...)...)
		if code := p.exitCode(10 * time.Second); code != 2 {
			t.Errorf("tail %v: exit %d, want 2\n%s", args, code, p.out.String())
		}
	}
}
