package mysql

import (
	"context"
	"strings"
	"testing"
)

// TestIntegrationFootprintAndReset: Footprint names the bind's source as
// Open does and lists nothing on the server; a checkpoint of the same
// server under another host name is the same server's, another
// database's is not; Reset reads the binlog's end, as Open's start, and
// says what it skips.
func TestIntegrationFootprintAndReset(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	b := e.bind()
	s := e.open(b, nil, false)
	ctx := context.Background()
	fp, err := Footprint(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if fp.Identity != s.Identity() || len(fp.Objects) != 0 || fp.SameServer == nil {
		t.Fatalf("footprint %+v, Open's identity %s", fp, s.Identity())
	}
	if !fp.SameServer(s.Identity()) || fp.SameServer(strings.TrimSuffix(s.Identity(), e.db)+"other") {
		t.Errorf("SameServer: its own identity or another database's")
	}
	if s.info.mariadb {
		parts := strings.Split(s.Identity(), "/")
		parts[2] = "recreated-container:3306"
		if !fp.SameServer(strings.Join(parts, "/")) {
			t.Errorf("SameServer: a former host name of the same server")
		}
	}

	from := s.StartPosition()
	e.exec("INSERT INTO t VALUES (1), (2)")
	end, _ := parsePosition(currentPos(t, s))
	// The server is shared: others may write too, so the end is at or
	// after what was read.
	atEnd := func(pos string) bool {
		rp, err := parsePosition(pos)
		return err == nil && rp.File != "" && !before(rp, end) && (rp.GTID != "") == (end.GTID != "")
	}
	r, err := Reset(ctx, b, from)
	if err != nil {
		t.Fatal(err)
	}
	if r.Identity != s.Identity() || !atEnd(r.Position) || len(r.Done) != 0 {
		t.Fatalf("reset %+v, want a position at or after %s", r, end)
	}
	p, _ := parsePosition(from)
	q, _ := parsePosition(r.Position)
	if want := "changes committed after " + describe(p) + " up to " + describe(q) + " are never published"; r.Skipped != want {
		t.Errorf("skipped %q, want %q", r.Skipped, want)
	}
	if r, err := Reset(ctx, b, ""); err != nil || r.Skipped != "" || !atEnd(r.Position) {
		t.Errorf("reset without a checkpoint: %+v, %v", r, err)
	}
}
