package tracker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/sources/postgres"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// exampleSource stands in for a database: two transactions, one with two
// inserts into orders, one with an update. Real programs use
// tracker.WithSource(binds.Postgres, postgres.Open) (see Example_postgres).
func exampleSource() *trackertest.ScriptedSource {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	row := func(kv ...string) tracker.Row {
		var r tracker.Row
		for i := 0; i < len(kv); i += 2 {
			r.Names = append(r.Names, kv[i])
			r.Values = append(r.Values, json.RawMessage(kv[i+1]))
		}
		return r
	}
	change := func(tx string, op tracker.Op, id, before, after string) tracker.Record {
		c := &tracker.Change{Source: "postgresql", Op: op, Schema: "public", Table: "orders", TxKey: tx, Key: row("id", id)}
		if before != "" {
			c.Before = row("id", id, "status", before)
		}
		c.After = row("id", id, "status", after)
		return tracker.Record{Kind: tracker.RecordChange, Change: c}
	}
	return &trackertest.ScriptedSource{ID: "example", Records: []tracker.Record{
		{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: "lsn-A", TxID: "701", CommitTime: at}},
		change("lsn-A", tracker.OpInsert, "1", "", `"new"`),
		change("lsn-A", tracker.OpInsert, "2", "", `"new"`),
		{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: "lsn-A"}, Pos: "0/A0"},
		{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: "lsn-B", TxID: "702", CommitTime: at.Add(time.Second)}},
		change("lsn-B", tracker.OpUpdate, "1", `"new"`, `"paid"`),
		{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: "lsn-B"}, Pos: "0/B0"},
	}}
}

// New embeds the tracker with in-process receivers only: no NATS, and
// checkpoints in a local file. Receivers are called in the order they were
// connected; an error holds the pipeline and the same change is handed
// again, with back-off: a change is never dropped.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "tracker-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	cfg := config.Default() // or config.Load, from a file and the environment
	cfg.DatabaseURI = "postgresql://app@db.example/shop"
	track := true
	cfg.TrackModifications = &track
	cfg.DataDir = dir

	src := exampleSource()
	t, err := tracker.New(&cfg,
		tracker.WithSource(binds.Postgres, src.Open()),
		tracker.WithCheckpointStore(tracker.NewFileStore(filepath.Join(dir, "checkpoints.json"))),
	)
	if err != nil {
		log.Fatal(err)
	}
	t.BeforeCommit.Connect(func(ctx context.Context, c tracker.Change) error {
		fmt.Printf("before_commit %s %s.%s key=%s\n", c.Op, c.Schema, c.Table, c.Key.Values[0])
		return nil
	})
	failed := false
	t.AfterCommit.Connect(func(ctx context.Context, c tracker.Change) error {
		if c.Op == tracker.OpUpdate && !failed {
			failed = true
			fmt.Println("after_commit receiver: mail server down, try again")
			return errors.New("mail server down")
		}
		after, _ := c.After.Map()
		fmt.Printf("after_commit %s %s.%s %v (tx %s, change %d)\n", c.Op, c.Schema, c.Table, after, c.TxID, c.Seq)
		return nil
	})
	disconnect := t.AfterCommit.ConnectTx(func(ctx context.Context, tx tracker.Tx) error {
		fmt.Printf("committed tx %s at %s: %d change(s)\n", tx.TxID, tx.CommitTime.Format(time.TimeOnly), tx.Total)
		return nil
	})
	defer disconnect()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- t.Run(ctx) }()
	<-src.Done() // a real program runs until it is told to stop
	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// before_commit insert public.orders key=1
	// before_commit insert public.orders key=2
	// after_commit insert public.orders map[id:1 status:new] (tx 701, change 0)
	// after_commit insert public.orders map[id:2 status:new] (tx 701, change 1)
	// committed tx 701 at 12:00:00: 2 change(s)
	// before_commit update public.orders key=1
	// after_commit receiver: mail server down, try again
	// after_commit update public.orders map[id:1 status:paid] (tx 702, change 0)
	// committed tx 702 at 12:00:01: 1 change(s)
}

// Example_postgres follows a real PostgreSQL database (wal_level=logical,
// a user with the REPLICATION attribute) with the configuration built in
// code, until interrupted. TestExamplePostgres runs the same steps against
// TRACKERD_TEST_POSTGRES_URL.
func Example_postgres() {
	cfg := config.Default()
	track := true
	cfg.TrackModifications = &track
	cfg.Binds = map[string]config.BindConfig{
		"shop": {URI: os.Getenv("DATABASE_URI"), Tables: []string{"public.orders"}},
	}
	cfg.DataDir = "trackerd-data" // the checkpoint file and spill files

	t, err := tracker.New(&cfg, tracker.WithSource(binds.Postgres, postgres.Open))
	if err != nil {
		log.Fatal(err)
	}
	t.AfterCommit.Connect(func(ctx context.Context, c tracker.Change) error {
		key, err := c.Key.Map()
		fmt.Println(c.Op, c.Table, key)
		return err
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := t.Run(ctx); err != nil { // returns nil on a clean stop
		log.Fatal(err)
	}
}

// TestExamplePostgres runs Example_postgres's steps against a real server:
// a table of its own, its own slot and publication.
func TestExamplePostgres(t *testing.T) {
	uri := os.Getenv("TRACKERD_TEST_POSTGRES_URL")
	if uri == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("TRACKERD_TEST_POSTGRES_URL is not set: CI runs the embedding example against a real server")
		}
		t.Skip("set TRACKERD_TEST_POSTGRES_URL to a PostgreSQL server with wal_level=logical to run the embedding example")
	}
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	db, err := pgx.Connect(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) }) // after the cleanup below: cleanups run last first
	name := fmt.Sprintf("ex_tracker_%d_%04x", time.Now().UnixNano()%1e6, rand.IntN(1<<16))
	if _, err := db.Exec(t.Context(), fmt.Sprintf(`CREATE SCHEMA %q; CREATE TABLE %q.orders (id int PRIMARY KEY, status text)`, name, name)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name); err != nil {
			t.Errorf("drop slot %s: %v", name, err)
		}
		db.Exec(ctx, fmt.Sprintf(`DROP PUBLICATION IF EXISTS %q`, name))
		db.Exec(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %q CASCADE`, name))
	})

	// Example_postgres, with the test's names.
	cfg := config.Default()
	track := true
	cfg.TrackModifications = &track
	cfg.Binds = map[string]config.BindConfig{
		"shop": {URI: uri, Tables: []string{name + ".orders"}, Slot: name, Publication: name},
	}
	cfg.DataDir = t.TempDir()
	tr, err := tracker.New(&cfg, tracker.WithSource(binds.Postgres, postgres.Open))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got []string
	)
	tr.AfterCommit.Connect(func(ctx context.Context, c tracker.Change) error {
		key, err := c.Key.Map()
		mu.Lock()
		got = append(got, fmt.Sprintln(c.Op, c.Table, key))
		mu.Unlock()
		return err
	})
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	trackertest.Eventually(t, 60*time.Second, "the bind to stream", tr.Ready)
	if _, err := db.Exec(t.Context(), fmt.Sprintf(`INSERT INTO %[1]q.orders VALUES (1, 'new'); UPDATE %[1]q.orders SET status = 'paid'`, name)); err != nil {
		t.Fatal(err)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	trackertest.Eventually(t, 30*time.Second, "two changes", func() bool { return count() >= 2 })
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, "") != "insert orders map[id:1]\nupdate orders map[id:1]\n" {
		t.Fatalf("receiver got:\n%s", strings.Join(got, ""))
	}
	if tr.DebugEvents() != nil {
		t.Fatal("DebugEvents without RECORD_QUERIES, DEBUG or TESTING")
	}
}
