package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTailUntilEndAndPretty: `tail --until-end` prints what the stream
// holds and exits 0, even when fewer events match than -n asks for
// (operator review row 18); --pretty prints one line per event; a PATTERN
// outside the stream's subjects is one line saying so, exit 2.
func TestTailUntilEndAndPretty(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"notes": "id int PRIMARY KEY, body text"})
	p := startPG(t, bs, b, nil, "notes")
	db := pgAdmin(t)
	n := fmt.Sprintf("%q.notes", b.schema)
	pgExec(t, db, "INSERT INTO "+n+" VALUES (1, 'one'), (2, 'two'), (3, 'three')")
	pgExec(t, db, "UPDATE "+n+" SET body = 'uno' WHERE id = 1")
	pgExec(t, db, "DELETE FROM "+n+" WHERE id IN (2, 3)")
	bs.waitCount(t, 12, 30*time.Second)
	tenv := map[string]string{"TRACKER_NATS_URL": bs.url, "TRACKER_SUBJECT_PREFIX": bs.prefix, "TRACKER_STREAM_NAME": bs.stream}
	s := b.schema

	// Two deletes match, -n asks for 3: --until-end stops at the end.
	got, _ := runTail(t, tenv, "--from", "start", "-n", "3", "--table", "notes", "--op", "delete", "--signal", "after_commit", "--until-end")
	want := []string{"after_commit " + s + ".notes delete id=2", "after_commit " + s + ".notes delete id=3"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tail --until-end printed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Without --from it reads from the start; nothing matching: exit 0 at once.
	if got, _ := runTail(t, tenv, "--until-end", "--signal", "before_commit"); len(got) != 6 {
		t.Fatalf("tail --until-end --signal before_commit printed %d events, want 6:\n%s", len(got), strings.Join(got, "\n"))
	}
	if got, _ := runTail(t, tenv, "--until-end", "--table", "no_such_table"); len(got) != 0 {
		t.Fatalf("tail --until-end for a table without events printed %v", got)
	}

	// --pretty: one line per event, the update showing what changed.
	pretty := start(t, tenv, "tail", "--pretty", "--until-end", "--signal", "after_commit")
	if code := pretty.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("tail --pretty: exit %d\n%s", code, pretty.out.String())
	}
	lines := pretty.lines()
	stamp := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z after_commit  pg ` + regexp.QuoteMeta(s) + `\.notes `
	for i, re := range []string{
		stamp + `insert id=1: id=1 body="one" #\d+$`,
		stamp + `insert id=2: id=2 body="two" #\d+$`,
		stamp + `insert id=3: id=3 body="three" #\d+$`,
		stamp + `update id=1: id=1 body="uno" #\d+$`,
		stamp + `delete id=2 #\d+$`,
		stamp + `delete id=3 #\d+$`,
	} {
		if i >= len(lines) || !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Fatalf("tail --pretty line %d does not match %s:\n%s", i+1, re, pretty.out.String())
		}
	}
	if len(lines) != 6 {
		t.Fatalf("tail --pretty printed %d lines, want 6:\n%s", len(lines), pretty.out.String())
	}

	// A pattern outside the stream: JetStream's error 10093, translated.
	bad := start(t, tenv, "tail", "--from", "start", "other.>")
	if code := bad.exitCode(30 * time.Second); code != 2 {
		t.Fatalf("tail 'other.>': exit %d, want 2\n%s", code, bad.out.String())
	}
	wantLine := fmt.Sprintf("trackerd: 'other.>' is outside stream %s's subjects '%s.>': give a PATTERN under them, or set STREAM_NAME and SUBJECT_PREFIX to the trackerd's you read\n", bs.stream, bs.prefix)
	if bad.out.String() != wantLine {
		t.Fatalf("tail 'other.>' printed:\n%s\nwant:\n%s", bad.out.String(), wantLine)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("trackerd run: exit %d", code)
	}
}

// TestProbeRunningDaemon: `trackerd probe` exits 0, printing nothing,
// against a running trackerd that streams, and 1 once it has stopped.
func TestProbeRunningDaemon(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	p := startPG(t, bs, b, nil, "t")
	addr := p.waitLog(`HTTP endpoints listening" addr=http://(\S+)`, 10*time.Second)[1]

	// As a health check runs it: the same environment as run, HTTP_ADDR
	// given as the address run listens on.
	env := bs.env(t)
	env["TRACKER_HTTP_ADDR"] = addr
	eventually(t, 30*time.Second, "trackerd probe to exit 0", func() bool {
		pr := start(t, env, "probe")
		return pr.exitCode(10*time.Second) == 0 && pr.out.String() == ""
	})
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("trackerd run: exit %d", code)
	}
	pr := start(t, env, "probe", "--timeout", "2s")
	if code := pr.exitCode(10 * time.Second); code != 1 || !strings.HasPrefix(pr.out.String(), "trackerd: probe: not ready: ") ||
		strings.Count(pr.out.String(), "\n") != 1 {
		t.Fatalf("probe of a stopped trackerd: exit %d, output %q; want 1 and one line", code, pr.out.String())
	}
}

// TestMistypedFlag: the built binary reports a mistyped flag in one line
// with a suggestion, exit 2 (operator review row 17b).
func TestMistypedFlag(t *testing.T) {
	p := start(t, nil, "run", "--databse-uri", "postgresql://postgres@127.0.0.1:1/test")
	if code := p.exitCode(10 * time.Second); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if got := p.out.String(); got != "trackerd: unknown flag --databse-uri; did you mean --database-uri?\n" {
		t.Fatalf("output:\n%s", got)
	}
	h := start(t, nil, "help", "run")
	if code := h.exitCode(10 * time.Second); code != 0 || !strings.Contains(h.out.String(), "  --database-uri URI  [$TRACKER_DATABASE_URI]") {
		t.Fatalf("help run: exit %d\n%s", code, h.out.String())
	}
}
