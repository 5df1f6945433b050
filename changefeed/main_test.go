package changefeed_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
)

// What the examples read: a NATS server (TRACKERD_TEST_NATS_URL, or an
// embedded one), and a stream of sample events under a prefix of their
// own, published by TestMain through the real tracker and NATS sink.
var (
	natsURL string
	prefix  string
	stream  string
)

// exampleTxs are the sample transactions: bind "default", ids from 1000.
var exampleTxs = []txSpec{
	{bind: "default", tables: []string{"orders", "items", "items"}},
	{bind: "default", tables: []string{"users"}},
	{bind: "default", tables: []string{"orders"}},
}

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if slices.ContainsFunc(os.Args, func(a string) bool { return strings.HasPrefix(a, "-test.fuzzworker") }) {
		return m.Run() // a fuzzing worker runs no example
	}
	dir, err := os.MkdirTemp("", "changefeed-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	natsURL = os.Getenv(envNATS)
	if natsURL == "" {
		e, err := natsserver.Start(ctx, natsserver.Options{Addr: "127.0.0.1:0", StoreDir: dir})
		if err != nil {
			fmt.Fprintln(os.Stderr, "changefeed tests: embedded NATS:", err)
			return 1
		}
		defer e.Shutdown(context.Background())
		natsURL = e.ClientURL()
	}
	prefix = uniq("cfex")
	stream = strings.ToUpper(prefix)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "changefeed tests:", err)
		return 1
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	defer js.DeleteStream(context.Background(), stream)
	sink, err := natssink.New(ctx, nc, natssink.Options{Prefix: prefix, Stream: natssink.StreamConfig{Name: stream}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "changefeed tests:", err)
		return 1
	}
	var want uint64
	for _, s := range exampleTxs {
		want += s.events()
	}
	stored := func() bool {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= want
	}
	if err := publishSpecs(ctx, sink, exampleTxs, 1, dir, stored); err != nil {
		fmt.Fprintln(os.Stderr, "changefeed tests: publishing the sample events:", err)
		return 1
	}
	return m.Run()
}
