package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
)

// cmdTail prints events as JSON lines (the CloudEvent as published) until
// interrupted. Without --from it subscribes to new events on core NATS;
// with --from it reads the JetStream stream from that point.
func cmdTail(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var from string
	var count int
	cfg, fs, err := loadConfig("tail", args, lookup, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&from, "from", "", "read the stream from `POS`: \"start\", a stream sequence number, or an RFC 3339 time (default: new events only)")
		fs.IntVar(&count, "n", 0, "exit after `N` events (0: run until interrupted)")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageError{"tail takes at most one subject PATTERN"}
	}
	pattern := cfg.SubjectPrefix + ".>"
	if fs.NArg() == 1 {
		pattern = fs.Arg(0)
	}
	url, err := tailURL(cfg)
	if err != nil {
		return err
	}
	co := connectOptions(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	co.Name = "trackerd tail"
	nc, err := natssink.Connect(ctx, url, co)
	if err != nil {
		return err
	}
	defer nc.Close()

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	seen := 0
	emit := func(data []byte) bool {
		out.Write(data)
		out.WriteByte('\n')
		out.Flush()
		seen++
		return count == 0 || seen < count
	}

	if from == "" {
		msgs := make(chan *natsgo.Msg, 1024)
		sub, err := nc.ChanSubscribe(pattern, msgs)
		if err != nil {
			return usageError{fmt.Sprintf("subscribe to %q: %v", pattern, err)}
		}
		defer sub.Unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return nil
			case m := <-msgs:
				if !emit(m.Data) {
					return nil
				}
			}
		}
	}

	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{pattern}}
	switch {
	case from == "start":
		cc.DeliverPolicy = jetstream.DeliverAllPolicy
	case isDigits(from):
		seq, _ := strconv.ParseUint(from, 10, 64)
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
	default:
		t, err := time.Parse(time.RFC3339Nano, from)
		if err != nil {
			return usageError{fmt.Sprintf("--from %q: want start, a sequence number or an RFC 3339 time", from)}
		}
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, cfg.StreamName, cc)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", cfg.StreamName, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		}
		if !emit(m.Data()) {
			return nil
		}
	}
}

// tailURL is NATS_URL, or the URL a running `trackerd run` with an embedded
// server wrote to DATA_DIR/nats.url.
func tailURL(cfg *config.Config) (string, error) {
	if cfg.NATSURL != "" {
		return cfg.NATSURL, nil
	}
	file := filepath.Join(cfg.DataDir, "nats.url")
	data, err := os.ReadFile(file)
	if err != nil {
		return "", usageError{fmt.Sprintf("NATS_URL is not set and no embedded server is running (%s: %v); set NATS_URL, or start `trackerd run` with the same DATA_DIR", file, err)}
	}
	return strings.TrimSpace(string(data)), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
