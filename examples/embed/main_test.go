package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/tracker/trackertest"
)

// TestEmbedPostgres runs the example against a real PostgreSQL server
// (TRACKERD_TEST_POSTGRES_URL): it prints the committed changes and
// transactions, and resumes from its checkpoint file after a restart.
func TestEmbedPostgres(t *testing.T) {
	uri := os.Getenv("TRACKERD_TEST_POSTGRES_URL")
	if uri == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("TRACKERD_TEST_POSTGRES_URL is not set: CI runs the examples against a real server")
		}
		t.Skip("set TRACKERD_TEST_POSTGRES_URL to a PostgreSQL server with wal_level=logical to run the example")
	}
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	ctx := t.Context()
	db, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) }) // after the cleanup below: cleanups run last first
	name := fmt.Sprintf("ex_embed_%d_%04x", time.Now().UnixNano()%1e6, rand.IntN(1<<16))
	exec := func(sql string) {
		t.Helper()
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(fmt.Sprintf(`CREATE SCHEMA %q; CREATE TABLE %q.orders (id int PRIMARY KEY, note text)`, name, name))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name); err != nil {
			t.Errorf("drop slot %s: %v", name, err)
		}
		db.Exec(ctx, fmt.Sprintf(`DROP PUBLICATION IF EXISTS %q`, name))
		db.Exec(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %q CASCADE`, name))
	})
	dataDir := t.TempDir()
	args := []string{"-uri", uri, "-tables", name + ".orders", "-data-dir", dataDir, "-slot", name, "-publication", name}

	// start runs the example until the returned stop is called.
	start := func() (stdout *trackertest.Buffer, stop func()) {
		stdout, stderr := &trackertest.Buffer{}, &trackertest.Buffer{}
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(ctx, args, func(string) string { return "" }, stdout, stderr) }()
		trackertest.Eventually(t, 60*time.Second, "the example to stream", func() bool {
			select {
			case err := <-done:
				t.Fatalf("the example stopped: %v\n%s", err, stderr.String())
			default:
			}
			return strings.Contains(stderr.String(), "msg=streaming")
		})
		return stdout, func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("the example returned %v\n%s", err, stderr.String())
			}
		}
	}
	txids := regexp.MustCompile(`commit tx \d+:`)
	lines := func(out string) string { return strings.TrimSpace(txids.ReplaceAllString(out, "commit tx N:")) }

	out, stop := start()
	exec(fmt.Sprintf(`BEGIN; INSERT INTO %[1]q.orders VALUES (1, 'first'); INSERT INTO %[1]q.orders VALUES (2, NULL); COMMIT`, name))
	exec(fmt.Sprintf(`UPDATE %q.orders SET note = 'second' WHERE id = 1`, name))
	want := strings.Join([]string{
		`insert ` + name + `.orders key={"id":1} after={"id":1,"note":"first"}`,
		`insert ` + name + `.orders key={"id":2} after={"id":2,"note":null}`,
		`commit tx N: 2 change(s)`,
		`update ` + name + `.orders key={"id":1} after={"id":1,"note":"second"}`,
		`commit tx N: 1 change(s)`,
	}, "\n")
	trackertest.Eventually(t, 30*time.Second, "the changes printed", func() bool { return strings.Count(out.String(), "commit tx") >= 2 })
	stop()
	if got := lines(out.String()); got != want {
		t.Fatalf("printed:\n%s\nwant:\n%s", got, want)
	}

	// A restart resumes from the checkpoint file: only what is new.
	exec(fmt.Sprintf(`DELETE FROM %q.orders WHERE id = 2`, name))
	out, stop = start()
	trackertest.Eventually(t, 30*time.Second, "the delete printed", func() bool { return strings.Contains(out.String(), "commit tx") })
	stop()
	want = `delete ` + name + `.orders key={"id":2} after=null` + "\ncommit tx N: 1 change(s)"
	if got := lines(out.String()); got != want {
		t.Fatalf("after a restart, printed:\n%s\nwant:\n%s", got, want)
	}
}
