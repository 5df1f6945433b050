package changefeed_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
)

// offlineFeed returns a feed on a connection that never connected: New and
// Subject do no I/O.
func offlineFeed(t *testing.T, opts ...changefeed.Option) *changefeed.Feed {
	t.Helper()
	nc, err := nats.Connect("nats://127.0.0.1:1", nats.RetryOnFailedConnect(true), nats.MaxReconnects(0), nats.NoCallbacksAfterClientClose())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	f, err := changefeed.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSubject(t *testing.T) {
	custom := changefeed.WithNamingConvention(map[string]string{
		"subject":  "%(prefix)s.%(signal)s.%(schema)s_%(table)s.%(op)s.%(key_0)s",
		"rollback": "%(prefix)s.%(signal)s.%(bind)s.%(region)s",
		"region":   "eu west",
	})
	cfg := config.Default()
	cfg.SubjectPrefix = "acme.cdc"
	cfg.StreamName = "ACME"
	tests := []struct {
		name string
		opts []changefeed.Option
		flt  changefeed.Filter
		want string
	}{
		{"ok - everything", nil, changefeed.Filter{}, "trackerd.*.*.*.*.*"},
		{"ok - one table", nil, changefeed.Filter{Phase: tracker.PhaseAfterCommit, Bind: "default", Schema: "public", Table: "orders"},
			"trackerd.after_commit.default.public.orders.*"},
		{"ok - names escaped", nil, changefeed.Filter{Schema: "my.schema", Table: "order items", Op: tracker.OpDelete},
			"trackerd.*.*.my=2Eschema.order=20items.delete"},
		{"ok - empty name is =", nil, changefeed.Filter{Bind: "*", Table: "t=1"}, "trackerd.*.*.*.t=3D1.*"},
		{"ok - prefix from config", []changefeed.Option{changefeed.WithConfig(&cfg)}, changefeed.Filter{Op: tracker.OpInsert},
			"acme.cdc.*.*.*.*.insert"},
		{"ok - later option wins", []changefeed.Option{changefeed.WithConfig(&cfg), changefeed.WithPrefix("x")}, changefeed.Filter{Op: tracker.OpInsert},
			"x.*.*.*.*.insert"},
		{"ok - mixed token becomes *", []changefeed.Option{custom}, changefeed.Filter{Phase: tracker.PhaseAfterCommit, Schema: "public"},
			"trackerd.after_commit.*.*.*"},
		{"ok - mixed token with every field", []changefeed.Option{custom}, changefeed.Filter{Phase: tracker.PhaseAfterCommit, Schema: "public", Table: "t"},
			"trackerd.after_commit.public_t.*.*"},
		{"ok - user token in rollback template", []changefeed.Option{custom}, changefeed.Filter{Phase: tracker.PhaseRollback, Bind: "b"},
			"trackerd.rollback.b.eu=20west"},
		{"ok - snapshot rows", nil, changefeed.Filter{Bind: "default", Op: tracker.OpSnapshot}, "trackerd.*.default.*.*.snapshot"},
		{"ok - lifecycle events of a bind", nil, changefeed.Filter{Control: true, Bind: "shop eu"}, "trackerd.control.shop=20eu.snapshot"},
		{"ok - lifecycle events of every bind, custom template", []changefeed.Option{custom, changefeed.WithPrefix("acme.cdc")}, changefeed.Filter{Control: true, Table: "public.orders"},
			"acme.cdc.control.*.snapshot"},
		{"ok - raw pattern as it is", nil, changefeed.Filter{Pattern: "trackerd.after_commit.>", Table: "orders"}, "trackerd.after_commit.>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := offlineFeed(t, tc.opts...)
			got, err := f.Subject(tc.flt)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Subject(%+v) = %q, want %q", tc.flt, got, tc.want)
			}
		})
	}
}

func TestSubjectErrors(t *testing.T) {
	custom := changefeed.WithNamingConvention(map[string]string{"rollback": "%(prefix)s.%(signal)s.%(bind)s"})
	tests := []struct {
		name string
		opts []changefeed.Option
		flt  changefeed.Filter
		want string
	}{
		{"error - unknown phase", nil, changefeed.Filter{Phase: "committed"}, "phase"},
		{"error - unknown op", nil, changefeed.Filter{Op: "upsert"}, "op"},
		{"error - rollback op", nil, changefeed.Filter{Op: "rollback"}, "PhaseRollback"},
		{"error - pattern with empty token", nil, changefeed.Filter{Pattern: "trackerd..x"}, "empty token"},
		{"error - pattern with > inside", nil, changefeed.Filter{Pattern: "trackerd.>.x"}, "last token"},
		{"error - pattern with space", nil, changefeed.Filter{Pattern: "trackerd.a b"}, "white space"},
		{"error - pattern with partial wildcard", nil, changefeed.Filter{Pattern: "trackerd.a*"}, "whole token"},
		{"error - control with an op", nil, changefeed.Filter{Control: true, Op: tracker.OpSnapshot}, "Control filter"},
		{"error - control with a phase", nil, changefeed.Filter{Control: true, Phase: tracker.PhaseAfterCommit}, "Control filter"},
		{"error - phases of different shapes", []changefeed.Option{custom}, changefeed.Filter{}, "one phase at a time"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := offlineFeed(t, tc.opts...)
			_, err := f.Subject(tc.flt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Subject(%+v) = %v, want an error about %q", tc.flt, err, tc.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := changefeed.New(nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
	nc, err := nats.Connect("nats://127.0.0.1:1", nats.RetryOnFailedConnect(true), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for name, opt := range map[string]changefeed.Option{
		"bad prefix":             changefeed.WithPrefix("a..b"),
		"unknown template token": changefeed.WithNamingConvention(map[string]string{"subject": "%(prefix)s.%(nope)s"}),
		"nil logger":             changefeed.WithLogger(nil),
		"nil config":             changefeed.WithConfig(nil),
	} {
		if _, err := changefeed.New(nc, opt); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestFilterMatch(t *testing.T) {
	ins := changefeed.Message{Phase: tracker.PhaseAfterCommit, Change: tracker.Change{Bind: "b", Schema: "public", Table: "orders", Op: tracker.OpInsert}}
	rb := changefeed.Message{Phase: tracker.PhaseRollback, Change: tracker.Change{Bind: "b"}, Retract: &tracker.Retraction{}}
	snap := changefeed.Message{Phase: tracker.PhaseAfterCommit, Change: tracker.Change{Bind: "b", Schema: "public", Table: "orders", Op: tracker.OpSnapshot}, Snapshot: "s1"}
	lc := changefeed.Message{Phase: tracker.PhaseAfterCommit, Change: tracker.Change{Bind: "b", Schema: "public", Table: "orders"}, Snapshot: "s1",
		Lifecycle: &tracker.Lifecycle{Type: tracker.LifecycleTableDone, Bind: "b", Snapshot: "s1", Table: "public.orders"}}
	tests := []struct {
		name string
		flt  changefeed.Filter
		m    changefeed.Message
		want bool
	}{
		{"ok - zero filter matches all", changefeed.Filter{}, ins, true},
		{"ok - zero filter matches rollback", changefeed.Filter{}, rb, true},
		{"ok - * matches", changefeed.Filter{Bind: "*", Table: "*", Op: "*"}, ins, true},
		{"ok - exact", changefeed.Filter{Phase: tracker.PhaseAfterCommit, Bind: "b", Schema: "public", Table: "orders", Op: tracker.OpInsert}, ins, true},
		{"no - phase", changefeed.Filter{Phase: tracker.PhaseBeforeCommit}, ins, false},
		{"no - bind", changefeed.Filter{Bind: "c"}, ins, false},
		{"no - schema", changefeed.Filter{Schema: "x"}, ins, false},
		{"no - table", changefeed.Filter{Table: "order"}, ins, false},
		{"no - op", changefeed.Filter{Op: tracker.OpDelete}, ins, false},
		{"no - op never matches rollback", changefeed.Filter{Op: tracker.OpInsert}, rb, false},
		{"ok - rollback by phase", changefeed.Filter{Phase: tracker.PhaseRollback, Bind: "b"}, rb, true},
		{"ok - snapshot row by op", changefeed.Filter{Bind: "b", Op: tracker.OpSnapshot}, snap, true},
		{"no - snapshot row is no insert", changefeed.Filter{Op: tracker.OpInsert}, snap, false},
		{"no - insert is no snapshot row", changefeed.Filter{Op: tracker.OpSnapshot}, ins, false},
		{"no - zero filter never matches lifecycle", changefeed.Filter{}, lc, false},
		{"no - pattern filter never matches lifecycle", changefeed.Filter{Pattern: "trackerd.>"}, lc, false},
		{"ok - control matches lifecycle", changefeed.Filter{Control: true}, lc, true},
		{"ok - control by bind and table", changefeed.Filter{Control: true, Bind: "b", Table: "public.orders"}, lc, true},
		{"no - control by other bind", changefeed.Filter{Control: true, Bind: "c"}, lc, false},
		{"no - control by other table", changefeed.Filter{Control: true, Table: "public.users"}, lc, false},
		{"no - control never matches changes", changefeed.Filter{Control: true}, snap, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.flt.Match(&tc.m); got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestOptionsApply: an option given to a subscription it does not apply
// to is an error, found before any I/O.
func TestOptionsApply(t *testing.T) {
	f := offlineFeed(t)
	handle := func(context.Context, changefeed.Message) error { return nil }
	handleTx := func(context.Context, changefeed.Tx) error { return nil }
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"error - FromStart on core", func() error {
			_, err := f.Subscribe(t.Context(), changefeed.Filter{}, handle, changefeed.FromStart())
			return err
		}, "JetStream"},
		{"error - AckWait on Follow", func() error {
			_, err := f.Follow(t.Context(), changefeed.Filter{}, handle, changefeed.AckWait(time.Minute))
			return err
		}, "durable"},
		{"error - MaxTxChanges on Consume", func() error {
			_, err := f.Consume(t.Context(), "d", changefeed.Filter{}, handle, changefeed.MaxTxChanges(5))
			return err
		}, "ConsumeTx"},
		{"error - FromSequence(0)", func() error {
			_, err := f.Follow(t.Context(), changefeed.Filter{}, handle, changefeed.FromSequence(0))
			return err
		}, "start at 1"},
		{"error - ConsumeTx on before_commit", func() error {
			_, err := f.ConsumeTx(t.Context(), "d", changefeed.Filter{Phase: tracker.PhaseBeforeCommit}, handleTx)
			return err
		}, "after_commit"},
		{"error - ConsumeTx on lifecycle events", func() error {
			_, err := f.ConsumeTx(t.Context(), "d", changefeed.Filter{Control: true}, handleTx)
			return err
		}, "lifecycle"},
		{"error - durable name", func() error {
			_, err := f.Consume(t.Context(), "a.b", changefeed.Filter{}, handle)
			return err
		}, "durable name"},
		{"error - no durable name", func() error {
			_, err := f.Consume(t.Context(), "", changefeed.Filter{}, handle)
			return err
		}, "needs a name"},
		{"error - bad RetryBackoff", func() error {
			_, err := f.Subscribe(t.Context(), changefeed.Filter{}, handle, changefeed.RetryBackoff(time.Second, time.Millisecond))
			return err
		}, "RetryBackoff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one about %q", err, tc.want)
			}
		})
	}
}
