// Command subscribe reads the changes a running trackerd publishes, with
// the changefeed package and two durable JetStream consumers: one prints
// every selected change as it comes, the other every committed transaction
// that touches the selection, whole. Both resume where they stopped.
//
//	go run ./examples/subscribe -table orders
//	go run ./examples/subscribe -durable billing -bind default -op insert
//
// NATS_URL, SUBJECT_PREFIX, NAMING_CONVENTION and STREAM_NAME are read as
// trackerd reads them (TRACKER_* or SQLALCHEMY_* variables, or --config's
// file), so the example follows the same deployment; without NATS_URL it
// connects to nats://127.0.0.1:4222.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		os.Exit(1)
	}
}

// run is the whole program, with its inputs passed in so that a test can
// drive it. It returns nil once ctx ends and both consumers have stopped.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("subscribe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "trackerd's TOML configuration `file`")
	durable := fs.String("durable", "example", "durable consumer `name`: NAME-changes and NAME-tx")
	var flt changefeed.Filter
	fs.StringVar(&flt.Bind, "bind", "", "only the bind `KEY`")
	fs.StringVar(&flt.Schema, "schema", "", "only `SCHEMA`")
	fs.StringVar(&flt.Table, "table", "", "only `TABLE`")
	op := fs.String("op", "", "only `OP` (insert, update, delete, truncate, snapshot)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	flt.Op = tracker.Op(*op)

	cfg, err := config.Load(config.Options{File: *file, LookupEnv: lookupEnv})
	if err != nil {
		return err
	}
	url := cfg.NATSURL
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url, nats.Name("trackerd example subscriber"))
	if err != nil {
		return err
	}
	defer nc.Close()
	feed, err := changefeed.New(nc, changefeed.WithConfig(cfg))
	if err != nil {
		return err
	}

	// Every selected change once committed, one at a time. Returning an
	// error would retry it; returning nil acknowledges it.
	changes := flt
	changes.Phase = tracker.PhaseAfterCommit
	subChanges, err := feed.Consume(ctx, *durable+"-changes", changes, func(ctx context.Context, m changefeed.Message) error {
		key, _ := m.Change.Key.MarshalJSON()
		_, err := fmt.Fprintf(stdout, "change %s %s.%s key=%s (tx %s, %d/%d, stream #%d)\n",
			m.Change.Op, m.Change.Schema, m.Change.Table, key, m.Change.TxID, m.Change.Seq+1, m.TxTotal, m.Stream)
		return err
	})
	if err != nil {
		return err
	}
	// Whole transactions that touch the selection, with all their changes.
	subTx, err := feed.ConsumeTx(ctx, *durable+"-tx", flt, func(ctx context.Context, tx changefeed.Tx) error {
		if _, err := fmt.Fprintf(stdout, "tx %s of %s: %d change(s)\n", tx.TxID, tx.Bind, len(tx.Changes)); err != nil {
			return err
		}
		for _, m := range tx.Changes {
			if _, err := fmt.Fprintf(stdout, "  %s %s.%s\n", m.Change.Op, m.Change.Schema, m.Change.Table); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		subChanges.Stop()
		return err
	}
	fmt.Fprintf(stderr, "reading %s and %s from stream %s\n", subChanges.Subject(), subTx.Subject(), feed.Stream())

	select {
	case <-ctx.Done():
	case <-subChanges.Closed(): // stopped by itself: Err says why
	case <-subTx.Closed():
	}
	subChanges.Stop()
	subTx.Stop()
	<-subChanges.Closed()
	<-subTx.Closed()
	return errors.Join(subChanges.Err(), subTx.Err())
}
