package changefeed_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
)

// The examples read a stream of sample events: an insert into orders and
// two into items in one transaction, then one insert into users, then one
// into orders, all of bind "default". natsURL, prefix and stream are
// what a deployment configures: nats.DefaultURL, "trackerd" and "TRACKERD"
// by default.

// Consume reads a durable JetStream consumer: every committed insert into
// orders, at least once, acknowledged after the handler returns.
func ExampleFeed_Consume() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	feed, err := changefeed.New(nc, changefeed.WithPrefix(prefix), changefeed.WithStream(stream))
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flt := changefeed.Filter{Phase: tracker.PhaseAfterCommit, Table: "orders", Op: tracker.OpInsert}
	n := 0
	sub, err := feed.Consume(ctx, "orders-mailer", flt, func(ctx context.Context, m changefeed.Message) error {
		id, _ := m.Change.After.Get("id")
		fmt.Printf("%s %s.%s id=%s (tx %s, change %d of %d)\n", m.Change.Op, m.Change.Schema, m.Change.Table, id, m.Change.TxID, m.Change.Seq+1, m.TxTotal)
		if n++; n == 2 {
			cancel() // enough for the example; a service runs until it is stopped
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	<-sub.Closed()
	// Output:
	// insert public.orders id=1000 (tx 701, change 1 of 3)
	// insert public.orders id=3000 (tx 703, change 1 of 1)
}

// ConsumeTx hands over whole committed transactions, reassembled from
// their after_commit events.
func ExampleFeed_ConsumeTx() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	feed, err := changefeed.New(nc, changefeed.WithPrefix(prefix), changefeed.WithStream(stream))
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	sub, err := feed.ConsumeTx(ctx, "tx-auditor", changefeed.Filter{Bind: "default"}, func(ctx context.Context, tx changefeed.Tx) error {
		fmt.Printf("tx %s committed %s:", tx.TxID, tx.CommitTime.Format("15:04:05.000000"))
		for _, m := range tx.Changes {
			fmt.Printf(" %s %s", m.Change.Op, m.Change.Table)
		}
		fmt.Println()
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	<-sub.Closed()
	// Output:
	// tx 701 committed 03:04:05.000001: insert orders insert items insert items
	// tx 702 committed 03:04:05.000002: insert users
	// tx 703 committed 03:04:05.000003: insert orders
}

// Follow reads the stream from a position without a durable consumer, as
// `trackerd tail --from` does: here every before_commit event of items.
func ExampleFeed_Follow() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	feed, err := changefeed.New(nc, changefeed.WithPrefix(prefix), changefeed.WithStream(stream))
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	flt := changefeed.Filter{Phase: tracker.PhaseBeforeCommit, Table: "items"}
	sub, err := feed.Follow(ctx, flt, func(ctx context.Context, m changefeed.Message) error {
		fmt.Printf("#%d %s %s\n", m.Stream, m.ID, m.Subject[len(prefix):])
		if n++; n == 2 {
			cancel()
		}
		return nil
	}, changefeed.FromStart())
	if err != nil {
		log.Fatal(err)
	}
	<-sub.Closed()
	// Output:
	// #2 default/a1daa480958288f1/lsn-0000000000000001/1/before_commit .before_commit.default.public.items.insert
	// #3 default/a1daa480958288f1/lsn-0000000000000001/2/before_commit .before_commit.default.public.items.insert
}

// Subject shows the subscription pattern of a filter: names are escaped as
// trackerd escapes subject tokens.
func ExampleFeed_Subject() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	feed, err := changefeed.New(nc) // SUBJECT_PREFIX "trackerd", the default naming convention
	if err != nil {
		log.Fatal(err)
	}
	for _, flt := range []changefeed.Filter{
		{Phase: tracker.PhaseAfterCommit, Bind: "default", Schema: "public", Table: "orders"},
		{Table: "order.lines", Op: tracker.OpDelete},
		{Phase: tracker.PhaseRollback},
	} {
		subject, err := feed.Subject(flt)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(subject)
	}
	// Output:
	// trackerd.after_commit.default.public.orders.*
	// trackerd.*.*.*.order=2Elines.delete
	// trackerd.rollback.*.*.*.*
}

// Subscribe listens on core NATS, with no stream: at most once, new events
// only. The feed takes trackerd's own configuration, so subjects follow
// its SUBJECT_PREFIX and NAMING_CONVENTION.
func ExampleFeed_Subscribe() {
	cfg, err := config.Load(config.Options{LookupEnv: os.LookupEnv}) // TRACKER_* and SQLALCHEMY_* variables
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(cfg.NATSURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	feed, err := changefeed.New(nc, changefeed.WithConfig(cfg))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	sub, err := feed.Subscribe(ctx, changefeed.Filter{Schema: "public", Table: "orders"}, func(ctx context.Context, m changefeed.Message) error {
		fmt.Println(m.Phase, m.Change.Op, m.Change.Key)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	<-sub.Closed()
}

// DecodeMsg reads trackerd events from a subscription of your own.
func ExampleDecodeMsg() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	_, err = nc.Subscribe("trackerd.after_commit.>", func(msg *nats.Msg) {
		m, err := changefeed.DecodeMsg(msg)
		if err != nil {
			log.Print(err) // not a trackerd event
			return
		}
		before, _ := m.Change.Before.Map()
		after, _ := m.Change.After.Map()
		fmt.Println(m.ID, m.Change.Table, before, "->", after)
	})
	if err != nil {
		log.Fatal(err)
	}
	select {}
}
