package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// tailFlags are tail's own flags; tailConfigFlags the configuration flags
// its usage shows (it accepts them all).
var (
	tailFlags       = []string{"bind", "schema", "table", "op", "signal", "from", "n", "v"}
	tailConfigFlags = []string{"config", "nats-url", "data-dir", "subject-prefix", "naming-convention", "stream-name",
		"nats-user", "nats-password", "nats-token", "nats-creds", "nats-nkey", "nats-tls-cert", "nats-tls-key", "nats-tls-ca"}
)

// cmdTail prints trackerd's events as JSON lines: each event's CloudEvent
// exactly as published (structured mode), one per line, in the order they
// arrive, until interrupted or -n events are printed. Without --from it
// subscribes to new events on core NATS; with --from it reads the
// JetStream stream from that position. Filters select by bind, schema,
// table, op and signal, applied to the subject (escaped as trackerd
// escapes tokens) and checked on every decoded event; a PATTERN argument
// subscribes to a raw subject pattern instead, the filters still applying.
// It is built on the changefeed package.
func cmdTail(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var (
		from, op, signal string
		count            int
		verbose          bool
		flt              changefeed.Filter
	)
	cfg, fs, err := loadConfig("tail", args, lookup, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&flt.Bind, "bind", "", "only events of the bind `KEY` (\"default\" for DATABASE_URI)")
		fs.StringVar(&flt.Schema, "schema", "", "only events of `SCHEMA` (the database of a MySQL/MariaDB bind)")
		fs.StringVar(&flt.Table, "table", "", "only events of `TABLE`")
		fs.StringVar(&op, "op", "", "only events of `OP`: insert, update, delete, truncate or snapshot")
		fs.StringVar(&signal, "signal", "", "only events of `PHASE`: before_commit, after_commit or rollback")
		fs.StringVar(&from, "from", "", "read the JetStream stream from `POS`: \"start\", \"new\", a stream sequence number, an RFC 3339 time, or a duration ago (\"10m\"); default: new events on core NATS")
		fs.IntVar(&count, "n", 0, "exit after `N` events (0: run until interrupted)")
		fs.BoolVar(&verbose, "v", false, "say on stderr what is read, once subscribed")
		fs.Usage = func() { tailUsage(fs) }
	})
	if err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
	case 1:
		flt.Pattern = fs.Arg(0)
	default:
		return usageError{"tail takes at most one subject PATTERN"}
	}
	if count < 0 {
		return usageError{fmt.Sprintf("-n %d: want 0 or more events", count)}
	}
	flt.Op, flt.Phase = tracker.Op(op), tracker.Phase(signal)
	if err := flt.Validate(); err != nil {
		return usageError{strings.TrimPrefix(err.Error(), "changefeed: ")}
	}
	var start changefeed.ConsumeOption
	if from != "" {
		if start, err = parseFrom(from, time.Now()); err != nil {
			return err
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	url, co, err := tailTarget(cfg, log)
	if err != nil {
		return err
	}
	nc, err := natssink.Connect(ctx, url, co)
	if err != nil {
		return err
	}
	defer nc.Close()
	feed, err := changefeed.New(nc, changefeed.WithConfig(cfg), changefeed.WithLogger(log))
	if err != nil {
		return err
	}
	if _, err := feed.Subject(flt); err != nil {
		return usageError{strings.TrimPrefix(err.Error(), "changefeed: ")}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := bufio.NewWriter(stdout)
	printed := 0
	var writeErr error
	emit := func(_ context.Context, m changefeed.Message) error {
		if count > 0 && printed >= count {
			return nil
		}
		out.Write(m.Raw)
		out.WriteByte('\n')
		if err := out.Flush(); err != nil {
			writeErr = err
			cancel()
			return nil
		}
		if printed++; count > 0 && printed == count {
			cancel()
		}
		return nil
	}
	var sub *changefeed.Subscription
	if start == nil {
		sub, err = feed.Subscribe(ctx, flt, emit)
	} else {
		sub, err = feed.Follow(ctx, flt, emit, start)
	}
	if err != nil {
		return err
	}
	switch {
	case !verbose:
	case start == nil:
		fmt.Fprintf(stderr, "trackerd tail: subscribed to %s on core NATS (new events only)\n", sub.Subject())
	default:
		fmt.Fprintf(stderr, "trackerd tail: reading %s from stream %s, from %s\n", sub.Subject(), feed.Stream(), from)
	}
	<-sub.Closed()
	if writeErr != nil {
		return fmt.Errorf("writing events: %w", writeErr)
	}
	return sub.Err()
}

// parseFrom reads --from: start, new, a stream sequence, an RFC 3339 time,
// or a duration before now.
func parseFrom(from string, now time.Time) (changefeed.ConsumeOption, error) {
	switch {
	case from == "start":
		return changefeed.FromStart(), nil
	case from == "new":
		return changefeed.FromNew(), nil
	case isDigits(from):
		seq, err := strconv.ParseUint(from, 10, 64)
		if err != nil || seq == 0 {
			return nil, usageError{fmt.Sprintf("--from %s: stream sequences start at 1", from)}
		}
		return changefeed.FromSequence(seq), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, from); err == nil {
		return changefeed.FromTime(t), nil
	}
	if d, err := time.ParseDuration(from); err == nil && d > 0 {
		return changefeed.FromTime(now.Add(-d)), nil
	}
	return nil, usageError{fmt.Sprintf("--from %q: want start, new, a stream sequence number, an RFC 3339 time or a duration such as 10m", from)}
}

func tailUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, `Usage: trackerd tail [flags] [PATTERN]

Print trackerd's events as JSON lines: each event's CloudEvent exactly as
published, one per line. Without --from, new events on core NATS; with
--from, the JetStream stream from that position. Filters are exact names, as
in the database; PATTERN is a raw NATS subject pattern (the filters still
apply). NATS is NATS_URL, else the embedded server of a running
"trackerd run" with the same DATA_DIR, with the credentials it keeps there
(run tail as the same user).

Examples:
  trackerd tail --table orders --signal after_commit
  trackerd tail --bind default --op delete --from start -n 10
  trackerd tail --from 2026-05-01T12:00:00Z 'trackerd.after_commit.>'

Flags:
`)
	printFlags(fs, w, tailFlags)
	fmt.Fprint(w, "\nConfiguration (trackerd run -h lists every key; all are accepted):\n")
	printFlags(fs, w, tailConfigFlags)
}

// printFlags prints the usage of the named flags of fs.
func printFlags(fs *flag.FlagSet, w io.Writer, names []string) {
	sub := flag.NewFlagSet("", flag.ContinueOnError)
	sub.SetOutput(w)
	for _, n := range names {
		if f := fs.Lookup(n); f != nil {
			sub.Var(f.Value, f.Name, f.Usage)
		}
	}
	sub.PrintDefaults()
}

// tailTarget is NATS_URL with the NATS_* credentials, or the embedded
// server of a running `trackerd run` with the same DATA_DIR (nats.url),
// with its credentials (nats.auth).
func tailTarget(cfg *config.Config, log *slog.Logger) (string, natssink.ConnectOptions, error) {
	if cfg.NATSURL != "" {
		co := connectOptions(cfg, log)
		co.Name = "trackerd tail"
		return cfg.NATSURL, co, nil
	}
	url, co, err := embeddedTarget(cfg, "trackerd tail", log)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", co, usageError{fmt.Sprintf("NATS_URL is not set (looked at %s) and no embedded server is running (%v); set NATS_URL, or start `trackerd run` with the same DATA_DIR", cfg.LookedFor("NATS_URL"), err)}
	case err != nil:
		return "", co, usageError{fmt.Sprintf("NATS_URL is not set (looked at %s), and the embedded server of DATA_DIR %s cannot be used: %v; run tail as the user that runs `trackerd run`, or set NATS_URL", cfg.LookedFor("NATS_URL"), cfg.DataDir, err)}
	}
	return url, co, nil
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
