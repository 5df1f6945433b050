package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/sources/mysql"
	"github.com/trackerd/trackerd/sources/postgres"
	"github.com/trackerd/trackerd/tracker"
)

const teardownAbout = `Remove what trackerd made for one bind: its replication slot and the
publication trackerd created (PostgreSQL; a publication trackerd did not
make is left alone), its event trigger if there is one, and its
checkpoints and lease in the checkpoint store (CHECKPOINT_BUCKET, or the
checkpoint file with PUBLISH_MODE=core). It reads the same configuration
as run. Without --yes it only lists what it would remove; with --yes it
removes exactly that, and the bind's next run starts afresh at the
server's current position. It refuses (exit 1), removing nothing, while a
running trackerd holds the bind.`

const resetAbout = `Move a bind whose checkpoint cannot be resumed (binlogs purged,
replication slot dropped or invalidated: "re-snapshot required") to its
server's current position, so that its next run streams again. The
changes between the checkpoint and that position are never published:
reset says which. PostgreSQL: a missing or invalidated slot is created
anew, an existing one advanced with pg_replication_slot_advance.
MySQL/MariaDB: the checkpoint is set at the end of the binlog. The
checkpoint keeps its event-id origin. --to snapshot does the same and
then has the bind's next run read every row of its tables (an initial
snapshot, as the bind option snapshot = "initial" does), so that what the
skipped changes left is published after all. It refuses (exit 1) while a
running trackerd holds the bind.`

// A bind's server, as teardown and reset see it.
type serverOps struct {
	footprint func(ctx context.Context, b binds.Bind) (tracker.Footprint, error)
	remove    func(ctx context.Context, b binds.Bind, fp tracker.Footprint) ([]string, error)
	reset     func(ctx context.Context, b binds.Bind, from string, log *slog.Logger) (tracker.Reset, error)
}

var ops = map[binds.Kind]serverOps{
	binds.Postgres: {
		footprint: postgres.Footprint,
		remove:    postgres.RemoveFootprint,
		reset: func(ctx context.Context, b binds.Bind, from string, log *slog.Logger) (tracker.Reset, error) {
			return postgres.Reset(ctx, b, from, tracker.SourceOptions{Logger: log})
		},
	},
	binds.MySQL: {
		footprint: mysql.Footprint,
		remove: func(context.Context, binds.Bind, tracker.Footprint) ([]string, error) {
			return nil, nil // a binlog reader makes nothing on the server
		},
		reset: func(ctx context.Context, b binds.Bind, from string, _ *slog.Logger) (tracker.Reset, error) {
			return mysql.Reset(ctx, b, from)
		},
	},
}

// bindFlag adds --bind to a command's flags.
func bindFlag(key *string) func(*flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		fs.StringVar(key, "bind", "", "the bind `KEY` (a BINDS key; DATABASE_URI's is default)")
	}
}

// findBind returns the bind called key in cfg.
func findBind(cfg *config.Config, cmd, key string) (binds.Bind, error) {
	bs, err := binds.FromConfig(cfg)
	if err != nil {
		return binds.Bind{}, err
	}
	var keys []string
	for _, b := range bs {
		if b.Key == key {
			return b, nil
		}
		keys = append(keys, b.Key)
	}
	list := "no bind is configured (set DATABASE_URI or BINDS)"
	if len(keys) > 0 {
		list = "the binds are " + strings.Join(keys, ", ")
	}
	if key == "" {
		return binds.Bind{}, usageError{fmt.Sprintf("%s needs --bind KEY: %s", cmd, list)}
	}
	return binds.Bind{}, usageError{fmt.Sprintf("%s --bind %s: no such bind; %s", cmd, key, list)}
}

// leaseOwner names teardown and reset in the leases they take: never the
// name of a `trackerd run` (host and DATA_DIR), whose lease must fence
// them out.
func leaseOwner(cmd string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("trackerd %s on %s", cmd, host)
}

// bindCheckpoints splits a bind's stored checkpoints into those of its
// source (fp's identity, or the same server under a former identity),
// newest first, and the others.
func bindCheckpoints(b binds.Bind, fp tracker.Footprint, all []tracker.StoredCheckpoint) (mine, others []tracker.StoredCheckpoint) {
	key := tracker.CheckpointKey(b.Key, fp.Identity)
	for _, sc := range all {
		if sc.Key == key || sc.Source != "" && fp.SameServer != nil && fp.SameServer(sc.Source) {
			mine = append(mine, sc)
		} else {
			others = append(others, sc)
		}
	}
	sort.SliceStable(mine, func(i, j int) bool {
		if (mine[i].Key == key) != (mine[j].Key == key) {
			return mine[i].Key == key
		}
		return mine[i].Time.After(mine[j].Time)
	})
	return mine, others
}

// refuseHeld returns the error of a command refused because a running
// trackerd holds the bind, or nil.
// surveyBind is what teardown and reset (cmd) learn before they change
// anything: what trackerd made on the bind's server, the checkpoint store
// (the caller closes it), and the bind's checkpoints, this server's and
// others'. It refuses while a running trackerd holds the bind.
func surveyBind(ctx context.Context, cfg *config.Config, cmd string, b binds.Bind) (fp tracker.Footprint, st *cmdStore, mine, others []tracker.StoredCheckpoint, err error) {
	fp, err = ops[b.Kind].footprint(ctx, b)
	if err != nil {
		return fp, nil, nil, nil, fmt.Errorf("bind %s: %w", b.Key, err)
	}
	st, err = openCmdStore(ctx, cfg, cmd)
	if err != nil {
		return fp, nil, nil, nil, fmt.Errorf("bind %s: %w", b.Key, err)
	}
	all, err := st.list(ctx, b.Key)
	if err != nil {
		st.close()
		return fp, nil, nil, nil, fmt.Errorf("bind %s: %w", b.Key, err)
	}
	mine, others = bindCheckpoints(b, fp, all)
	if err := refuseHeld(cmd, b, mine); err != nil {
		st.close()
		return fp, nil, nil, nil, err
	}
	return fp, st, mine, others, nil
}

func refuseHeld(cmd string, b binds.Bind, mine []tracker.StoredCheckpoint) error {
	for _, sc := range mine {
		if sc.Holder != "" {
			return fmt.Errorf("%s of bind %s refused: a running trackerd holds it (%s); stop that trackerd first (a lease outlives a killed trackerd by up to 15 s); nothing was changed",
				cmd, b.Key, sc.Holder)
		}
	}
	return nil
}

// takeLease holds the bind's lease while cmd changes it, so that a
// trackerd starting meanwhile is fenced out; nil when the store has none.
func takeLease(ctx context.Context, st *cmdStore, cmd string, b binds.Bind, key string) (tracker.Lease, error) {
	if st.store == nil {
		return nil, nil
	}
	l, err := st.store.Lease(ctx, key, leaseOwner(cmd))
	if errors.Is(err, tracker.ErrFenced) {
		return nil, fmt.Errorf("%s of bind %s refused: %w; nothing was changed", cmd, b.Key, err)
	}
	return l, err
}

func cmdTeardown(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var key string
	var yes bool
	cfg, rest, err := loadConfig("teardown", args, lookup, stdout, stderr, func(fs *flag.FlagSet) {
		bindFlag(&key)(fs)
		fs.BoolVar(&yes, "yes", false, "remove what is listed; without it, teardown only lists")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("teardown takes no arguments, got %q", rest)}
	}
	b, err := findBind(cfg, "teardown", key)
	if err != nil {
		return err
	}
	op := ops[b.Kind]
	fp, st, mine, others, err := surveyBind(ctx, cfg, "teardown", b)
	if err != nil {
		return err
	}
	defer st.close()

	now := time.Now()
	fmt.Fprintf(stdout, "bind %s (%s), source %s:\n", b.Key, b.URI.String(), fp.Identity)
	line := func(action, kind, text string) {
		fmt.Fprintf(stdout, "  %-6s  %-16s  %s\n", action, kind, text)
	}
	var busy []string
	for _, o := range fp.Objects {
		switch {
		case o.Missing && o.Name == "":
			line("none", o.Kind, o.Detail)
		case o.Missing:
			line("none", o.Kind, o.Name+": "+o.Detail)
		case o.Keep != "":
			line("keep", o.Kind, o.Name+": "+o.Keep)
		default:
			line("remove", o.Kind, o.Name+": "+o.Detail)
			if o.Busy != "" {
				busy = append(busy, fmt.Sprintf("%s %s is %s", o.Kind, o.Name, o.Busy))
			}
		}
	}
	if len(fp.Objects) == 0 {
		line("none", "server objects", "a binlog reader makes nothing on the server")
	}
	for _, sc := range mine {
		line("remove", "checkpoint", fmt.Sprintf("%s and its lease: %s (%s)", sc.Key, describeCheckpoint(sc, now), st.where))
	}
	if len(mine) == 0 {
		line("none", "checkpoint", "none in "+st.where)
	}
	for _, sc := range others {
		line("keep", "checkpoint", fmt.Sprintf("%s: %s, of another source (%s)", sc.Key, describeCheckpoint(sc, now), orUnknown(sc.Source)))
	}
	if len(busy) > 0 {
		return fmt.Errorf("teardown of bind %s refused: %s, which no trackerd in this configuration's checkpoint store holds: stop what uses it first; nothing was removed",
			b.Key, strings.Join(busy, "; "))
	}
	removable := len(mine)
	for _, o := range fp.Objects {
		if o.Removable() {
			removable++
		}
	}
	if removable == 0 {
		fmt.Fprintf(stdout, "nothing to remove: bind %s leaves nothing behind\n", b.Key)
		return nil
	}
	if !yes {
		fmt.Fprintf(stdout, "nothing was removed: run trackerd teardown --bind %s --yes (with the same configuration) to remove what is marked remove\n", b.Key)
		return nil
	}

	cpKey := tracker.CheckpointKey(b.Key, fp.Identity)
	lease, err := takeLease(ctx, st, "teardown", b, cpKey)
	if err != nil {
		return err
	}
	release := func() {
		if lease != nil {
			lease.Release(context.WithoutCancel(ctx))
			lease = nil
		}
	}
	defer release()
	done, err := op.remove(ctx, b, fp)
	for _, d := range done {
		fmt.Fprintln(stdout, d)
	}
	if err != nil {
		return fmt.Errorf("bind %s: %w", b.Key, err)
	}
	for _, sc := range mine {
		if err := st.store.Remove(ctx, sc.Key, sc.Revision); err != nil {
			if errors.Is(err, tracker.ErrCheckpointConflict) {
				return fmt.Errorf("bind %s: checkpoint %s changed since it was listed (did a trackerd run the bind meanwhile?): list it again: %w", b.Key, sc.Key, err)
			}
			return fmt.Errorf("bind %s: %w", b.Key, err)
		}
		fmt.Fprintf(stdout, "removed checkpoint %s\n", sc.Key)
	}
	release()
	if st.store != nil {
		// The record of the lease just released (the checkpoint file's
		// lock file; JetStream's goes with the release).
		if err := st.store.Remove(ctx, cpKey, 0); err != nil && !errors.Is(err, tracker.ErrCheckpointConflict) {
			return fmt.Errorf("bind %s: %w", b.Key, err)
		}
	}
	fmt.Fprintf(stdout, "bind %s is torn down: its next run starts afresh at the server's current position\n", b.Key)
	return nil
}

func cmdReset(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var key, to string
	cfg, rest, err := loadConfig("reset", args, lookup, stdout, stderr, func(fs *flag.FlagSet) {
		bindFlag(&key)(fs)
		fs.StringVar(&to, "to", "", "where to move the bind: `current` (the server's current position) or snapshot (that, then read the tables' rows)")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("reset takes no arguments, got %q", rest)}
	}
	switch to {
	case "current", "snapshot":
	case "":
		return usageError{"reset needs --to current or --to snapshot: the bind moves to the server's current position, and the changes since its checkpoint are never published (with snapshot, the tables' rows are then read and published)"}
	default:
		return usageError{fmt.Sprintf("reset --to %q: want current or snapshot", to)}
	}
	b, err := findBind(cfg, "reset", key)
	if err != nil {
		return err
	}
	// The source's notes on what it makes are the reset's own lines here:
	// only its warnings go to the log, unless LOG_LEVEL is debug.
	quieter := *cfg
	if quieter.LogLevel != "debug" {
		quieter.LogLevel = "warn"
	}
	log := newLogger(&quieter, stderr)
	op := ops[b.Kind]
	fp, st, mine, _, err := surveyBind(ctx, cfg, "reset", b)
	if err != nil {
		return err
	}
	defer st.close()
	cpKey := tracker.CheckpointKey(b.Key, fp.Identity)
	var lease tracker.Lease
	if len(mine) > 0 {
		if lease, err = takeLease(ctx, st, "reset", b, cpKey); err != nil {
			return err
		}
		defer func() {
			if lease != nil {
				lease.Release(context.WithoutCancel(ctx))
			}
		}()
	}
	var cp tracker.StoredCheckpoint
	if len(mine) > 0 {
		cp = mine[0] // its own, else the newest of a former identity
	}
	r, err := op.reset(ctx, b, cp.Position, log)
	if err != nil {
		return fmt.Errorf("bind %s: %w", b.Key, err)
	}
	if r.Identity != fp.Identity {
		return fmt.Errorf("bind %s: the server's identity changed from %s to %s meanwhile: run reset again", b.Key, fp.Identity, r.Identity)
	}
	fmt.Fprintf(stdout, "bind %s (%s), source %s: at the server's current position\n", b.Key, b.URI.String(), r.Identity)
	for _, d := range r.Done {
		fmt.Fprintf(stdout, "  server   %s\n", d)
	}
	if len(mine) == 0 {
		fmt.Fprintf(stdout, "  now      %s\n", r.Position)
		fmt.Fprintf(stdout, "no checkpoint in %s: the bind's next run starts at the server's current position\n", st.where)
		if to == "snapshot" {
			fmt.Fprintf(stdout, "to read its tables' rows then, set the bind option snapshot = \"initial\" (or run trackerd backfill --bind %s once it runs)\n", b.Key)
		}
		return nil
	}
	fmt.Fprintf(stdout, "  was      %s (checkpoint %s, written %s)\n", orUnknown(cp.Position), cp.Key, cp.Time.Format(time.RFC3339))
	fmt.Fprintf(stdout, "  now      %s\n", r.Position)
	if r.Skipped != "" {
		fmt.Fprintf(stdout, "  skipped  %s\n", r.Skipped)
	}
	next := cp.Checkpoint
	if cp.Key != cpKey {
		// A former identity's: the new one takes it over, with the origin
		// of the ids it published.
		if next.Origin == "" {
			next.Origin = tracker.Origin(cp.Source)
		}
		next.Source, next.Revision = fp.Identity, 0 // none under cpKey: mine[0] would be it
	}
	next.Position, next.Time, next.Owner = r.Position, time.Now().UTC(), leaseOwner("reset")
	if to == "snapshot" {
		// A whole snapshot: it covers what unfinished ones would read.
		next.Snapshots = []tracker.SnapshotProgress{tracker.InitialSnapshot()}
		fmt.Fprintf(stdout, "  snapshot %s: the bind's next run reads every row of its tables\n", next.Snapshots[0].ID)
	}
	if _, err := st.store.Save(ctx, cpKey, next); err != nil {
		return fmt.Errorf("bind %s: write checkpoint %s: %w", b.Key, cpKey, err)
	}
	for _, sc := range mine {
		if sc.Key == cpKey {
			continue
		}
		if err := st.store.Remove(ctx, sc.Key, sc.Revision); err != nil {
			return fmt.Errorf("bind %s: remove the former identity's checkpoint %s: %w", b.Key, sc.Key, err)
		}
		fmt.Fprintf(stdout, "  removed  checkpoint %s of the former identity %s\n", sc.Key, sc.Source)
	}
	fmt.Fprintf(stdout, "checkpoint %s is at %s: the bind's next run streams from there\n", cpKey, r.Position)
	return nil
}

// describeCheckpoint says where a checkpoint is and how old it is.
func describeCheckpoint(sc tracker.StoredCheckpoint, now time.Time) string {
	if sc.Source == "" {
		return "not a checkpoint"
	}
	pos := "no position yet"
	if sc.Position != "" {
		pos = "at " + sc.Position
	}
	return fmt.Sprintf("%s, written %s ago", pos, now.Sub(sc.Time).Round(time.Second))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
