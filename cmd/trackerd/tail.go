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

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// tailKeys are the configuration keys tail's help shows (it accepts them
// all).
var tailKeys = []string{"NATS_URL", "DATA_DIR", "SUBJECT_PREFIX", "NAMING_CONVENTION", "STREAM_NAME",
	"NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY", "NATS_TLS_CERT", "NATS_TLS_KEY", "NATS_TLS_CA"}

const tailAbout = `Print trackerd's events: each event's CloudEvent exactly as published, one
JSON line each, or with --pretty one line an operator reads. Without --from,
new events on core NATS; with --from, the JetStream stream from that
position, and with --until-end only up to the stream's last event when tail
started. Filters are exact names, as in the database; PATTERN is a raw NATS
subject pattern (the filters still apply). NATS is NATS_URL, else the
embedded server of a running "trackerd run" with the same DATA_DIR, with the
credentials it keeps there (run tail as the same user).

Examples:
  trackerd tail --table orders --signal after_commit --pretty
  trackerd tail --bind default --op delete --from start --until-end
  trackerd tail --op snapshot --pretty          (rows snapshots read)
  trackerd tail --control --from start --pretty (started ... completed)
  trackerd tail --from 2026-05-01T12:00:00Z 'trackerd.after_commit.>' | jq .`

// cmdTail prints trackerd's events: each event's CloudEvent exactly as
// published (structured mode), one JSON line each, or with --pretty a
// one-line summary, in the order they arrive, until interrupted, -n events
// are printed, or with --until-end the stream's last event at the start
// is read. Without --from it subscribes to new events on core NATS; with
// --from (or --until-end) it reads the JetStream stream from that
// position. Filters select by bind, schema, table, op and signal, applied
// to the subject (escaped as trackerd escapes tokens) and checked on every
// decoded event; a PATTERN argument subscribes to a raw subject pattern
// instead, the filters still applying. It is built on the changefeed
// package.
func cmdTail(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var (
		from, op, signal          string
		count                     int
		verbose, pretty, untilEnd bool
		control                   bool
		flt                       changefeed.Filter
	)
	cfg, rest, err := loadConfig("tail", args, lookup, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&flt.Bind, "bind", "", "Only events of the bind `KEY` (\"default\" for DATABASE_URI).")
		fs.StringVar(&flt.Schema, "schema", "", "Only events of `SCHEMA` (the database of a MySQL/MariaDB bind).")
		fs.StringVar(&flt.Table, "table", "", "Only events of `TABLE`.")
		fs.StringVar(&op, "op", "", "Only events of `OP`: insert, update, delete, truncate or snapshot.")
		fs.BoolVar(&control, "control", false, "Print snapshot lifecycle events (started, table_done, completed, cancelled, failed, on <SUBJECT_PREFIX>.control.<bind>.snapshot) instead of changes; --bind and --table (schema.table) still apply.")
		fs.StringVar(&signal, "signal", "", "Only events of `PHASE`: before_commit, after_commit or rollback.")
		fs.StringVar(&from, "from", "", "Read the JetStream stream from `POS`: start, new, a stream sequence number, an RFC 3339 time, or a duration ago (10m). Without it: new events on core NATS.")
		fs.BoolVar(&untilEnd, "until-end", false, "Stop, with status 0, at the stream's last event when tail started. Reads the stream: from start unless --from says otherwise.")
		fs.IntVar(&count, "n", 0, "Exit after `N` events (0: no limit).")
		fs.BoolVar(&pretty, "pretty", false, "One line per event: commit time, phase, bind, schema.table, op, key, the columns it set (an update's changed ones as old->new), stream sequence. For indented JSON, pipe the JSON lines to jq.")
		fs.BoolVar(&verbose, "v", false, "Say on stderr what is read, once subscribed.")
	})
	if err != nil {
		return err
	}
	switch len(rest) {
	case 0:
	case 1:
		flt.Pattern = rest[0]
	default:
		return usageError{fmt.Sprintf("tail takes at most one subject PATTERN, got %q", rest)}
	}
	if count < 0 {
		return usageError{fmt.Sprintf("-n %d: want 0 or more events", count)}
	}
	flt.Op, flt.Phase, flt.Control = tracker.Op(op), tracker.Phase(signal), control
	if control && (op != "" || signal != "" || flt.Schema != "") {
		return usageError{"--control prints snapshot lifecycle events: --op, --signal and --schema do not apply (give --table schema.table)"}
	}
	if err := flt.Validate(); err != nil {
		return usageError{strings.TrimPrefix(err.Error(), "changefeed: ")}
	}
	if untilEnd && from == "" {
		from = "start"
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
	subject, err := feed.Subject(flt)
	if err != nil {
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
		if pretty {
			out.WriteString(prettyLine(&m))
		} else {
			out.Write(m.Raw)
		}
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
	switch {
	case start == nil:
		sub, err = feed.Subscribe(ctx, flt, emit)
	case untilEnd:
		sub, err = feed.Follow(ctx, flt, emit, start, changefeed.UntilEnd())
	default:
		sub, err = feed.Follow(ctx, flt, emit, start)
	}
	if err != nil {
		return streamError(ctx, nc, feed.Stream(), subject, err)
	}
	switch {
	case !verbose:
	case start == nil:
		fmt.Fprintf(stderr, "trackerd tail: subscribed to %s on core NATS (new events only)\n", sub.Subject())
	case untilEnd:
		fmt.Fprintf(stderr, "trackerd tail: reading %s from stream %s, from %s to its current end\n", sub.Subject(), feed.Stream(), from)
	default:
		fmt.Fprintf(stderr, "trackerd tail: reading %s from stream %s, from %s\n", sub.Subject(), feed.Stream(), from)
	}
	<-sub.Closed()
	if writeErr != nil {
		return fmt.Errorf("writing events: %w", writeErr)
	}
	return sub.Err()
}

// streamError explains an error reading the stream: JetStream's refusal of
// a subject outside the stream's (err_code 10093) names the stream's
// subjects; a missing stream says which keys name it.
func streamError(ctx context.Context, nc *natsgo.Conn, stream, subject string, err error) error {
	var api *jetstream.APIError
	switch {
	case errors.As(err, &api) && api.ErrorCode == jsErrFilterNotSubset:
		subjects := "?"
		if js, jerr := jetstream.New(nc); jerr == nil {
			if s, serr := js.Stream(ctx, stream); serr == nil {
				subjects = strings.Join(s.CachedInfo().Config.Subjects, "', '")
			}
		}
		return usageError{fmt.Sprintf("'%s' is outside stream %s's subjects '%s': give a PATTERN under them, or set STREAM_NAME and SUBJECT_PREFIX to the trackerd's you read", subject, stream, subjects)}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return usageError{fmt.Sprintf("stream %s does not exist: trackerd creates it when it starts; set STREAM_NAME to the stream of the trackerd you read (%v)", stream, err)}
	}
	return err
}

// jsErrFilterNotSubset is JetStream's err_code for a consumer filter
// subject the stream does not capture ("consumer filter subject is not a
// valid subset of the interest subjects").
const jsErrFilterNotSubset = 10093

// prettyLine is --pretty's summary of an event, one line: commit time (UTC,
// "-" when unknown), phase, bind, schema.table, op, the key, the columns
// set (an insert's or snapshot's after image, an update's changed columns
// as old->new when the old image is known), and the stream sequence. Long
// values are cut.
func prettyLine(m *changefeed.Message) string {
	var b strings.Builder
	if m.Time.IsZero() {
		b.WriteString("-")
	} else {
		b.WriteString(m.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	c := &m.Change
	if l := m.Lifecycle; l != nil {
		fmt.Fprintf(&b, " %-13s %s snapshot %s %s", "snapshot", l.Bind, l.Snapshot, l.Type)
		if l.Kind != "" {
			fmt.Fprintf(&b, " (%s)", l.Kind)
		}
		if l.Table != "" {
			fmt.Fprintf(&b, " %s", l.Table)
		}
		if l.Type != tracker.LifecycleStarted {
			fmt.Fprintf(&b, " rows=%d", l.Rows)
		}
		if len(l.Tables) > 0 {
			fmt.Fprintf(&b, " tables=%s", strings.Join(l.Tables, ","))
		}
		if len(l.Skipped) > 0 {
			fmt.Fprintf(&b, " skipped=%s", strings.Join(l.Skipped, ","))
		}
		if l.Error != "" {
			fmt.Fprintf(&b, " error=%q", l.Error)
		}
		if m.Stream > 0 {
			fmt.Fprintf(&b, " #%d", m.Stream)
		}
		return b.String()
	}
	fmt.Fprintf(&b, " %-13s %s", m.Phase, c.Bind)
	if m.Retract != nil {
		fmt.Fprintf(&b, " rollback tx %s", m.Retract.TxKey)
		for _, r := range m.Retract.Ranges {
			fmt.Fprintf(&b, " txseq %d-%d", r.From, r.To)
		}
	} else {
		fmt.Fprintf(&b, " %s.%s %s", c.Schema, c.Table, c.Op)
		if m.Snapshot != "" {
			fmt.Fprintf(&b, " (snapshot %s)", m.Snapshot)
		}
		if !c.Key.IsZero() {
			b.WriteString(" ")
			writeColumns(&b, c.Key, tracker.Row{})
		}
		switch c.Op {
		case tracker.OpInsert, tracker.OpSnapshot:
			b.WriteString(": ")
			writeColumns(&b, c.After, tracker.Row{})
		case tracker.OpUpdate:
			b.WriteString(": ")
			writeColumns(&b, c.After, c.Before)
		}
	}
	if m.Stream > 0 {
		fmt.Fprintf(&b, " #%d", m.Stream)
	}
	return b.String()
}

// writeColumns writes row's columns as name=value; with a before image,
// only the columns whose value changed, as name=old->new.
func writeColumns(b *strings.Builder, row, before tracker.Row) {
	const maxValue = 40
	cut := func(v []byte) string {
		s := string(v)
		if len(s) > maxValue {
			s = s[:maxValue] + "..."
		}
		return s
	}
	first := true
	for i, name := range row.Names {
		v := row.Values[i]
		if v == nil {
			continue // not sent (an unchanged TOAST value)
		}
		old, hasOld := before.Get(name)
		if hasOld && string(old) == string(v) {
			continue
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(name)
		b.WriteByte('=')
		if hasOld {
			b.WriteString(cut(old))
			b.WriteString("->")
		}
		b.WriteString(cut(v))
	}
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
