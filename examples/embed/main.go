// Command embed follows a PostgreSQL database from inside a Go program with
// trackerd's tracker package: no daemon and no NATS, only in-process
// receivers, and a checkpoint file so that a restart resumes where it
// stopped. It prints every committed change, then a line per transaction.
//
//	go run ./examples/embed -uri postgresql://app:secret@localhost/shop -tables public.orders
//
// The database needs wal_level=logical, and the user the REPLICATION
// attribute (`trackerd check` says what is missing). The URI may also come
// from DATABASE_URI.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/sources/postgres"
	"github.com/trackerd/trackerd/tracker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

// run is the whole program, with its inputs passed in so that a test can
// drive it. It returns nil once ctx ends and the tracker has stopped cleanly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("embed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	uri := fs.String("uri", getenv("DATABASE_URI"), "PostgreSQL `URI` to follow (default $DATABASE_URI)")
	tables := fs.String("tables", "", "comma-separated `schema.table` names to follow (default: every table)")
	dataDir := fs.String("data-dir", "embed-data", "`directory` of the checkpoint file")
	slot := fs.String("slot", "", "replication slot `name` (default trackerd_<database>_default)")
	publication := fs.String("publication", "", "publication `name` (default as the slot)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *uri == "" {
		return fmt.Errorf("no database: set -uri or DATABASE_URI")
	}

	// The configuration, built in code: the keys trackerd reads from its
	// config file and environment (config.Load would read those instead).
	cfg := config.Default()
	track := true
	cfg.TrackModifications = &track // track, and no start-up warning
	bind := config.BindConfig{URI: *uri, Slot: *slot, Publication: *publication}
	if *tables != "" {
		bind.Tables = strings.Split(*tables, ",")
	}
	cfg.Binds = map[string]config.BindConfig{"default": bind}
	cfg.DataDir = *dataDir

	t, err := tracker.New(&cfg,
		tracker.WithLogger(slog.New(slog.NewTextHandler(stderr, nil))),
		tracker.WithSource(binds.Postgres, postgres.Open),
		tracker.WithCheckpointStore(tracker.NewFileStore(cfg.CheckpointPath())),
	)
	if err != nil {
		return err
	}

	// Receivers run in the order they were connected, for each change of a
	// committed transaction. An error holds the pipeline and is retried: a
	// change is never dropped. Nothing here returns one.
	t.AfterCommit.Connect(func(ctx context.Context, c tracker.Change) error {
		key, _ := c.Key.MarshalJSON()
		after, _ := c.After.MarshalJSON()
		_, err := fmt.Fprintf(stdout, "%s %s.%s key=%s after=%s\n", c.Op, c.Schema, c.Table, key, after)
		return err
	})
	// A transaction receiver sees the whole transaction after its changes.
	t.AfterCommit.ConnectTx(func(ctx context.Context, tx tracker.Tx) error {
		_, err := fmt.Fprintf(stdout, "commit tx %s: %d change(s)\n", tx.TxID, tx.Total)
		return err
	})

	return t.Run(ctx) // until ctx ends: then it checkpoints and returns nil
}
