package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

const backfillAbout = `Ask the running trackerd to read the rows its bind's tables already hold
(all it follows, or each --table), while the stream goes on, and print the
snapshot's id. The rows are published as events of op snapshot; lifecycle
events go to <SUBJECT_PREFIX>.control.<bind>.snapshot (trackerd tail
--control). --wait follows its progress until it ends: exit 0 completed, 1
failed or cancelled. --list shows the snapshots of every instance, --cancel
ID stops one. It asks over NATS (NATS_URL, else the embedded server of a
running "trackerd run" with the same DATA_DIR), the control service's
endpoints $TRACKERD.<STREAM_NAME>.backfill, .snapshots and .cancel.

Examples:
  trackerd backfill --bind shop --table public.orders --where "id > 1000" --wait
  trackerd backfill --list
  trackerd backfill --cancel 01JF3Q8Z`

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("empty")
	}
	*l = append(*l, v)
	return nil
}

// backfillArgs are backfill's flags.
type backfillArgs struct {
	bind, where, cancel string
	tables              stringList
	list, wait, asJSON  bool
	timeout             time.Duration
}

// check refuses combinations of flags that do not go together.
func (a *backfillArgs) check(rest []string) error {
	switch {
	case len(rest) > 0:
		return usageError{fmt.Sprintf("backfill takes no arguments, got %q (tables are --table schema.table)", rest)}
	case a.timeout <= 0:
		return usageError{fmt.Sprintf("--timeout %v: want a duration above 0", a.timeout)}
	case a.list && a.cancel != "":
		return usageError{"--list and --cancel: give one"}
	case (a.list || a.cancel != "") && (len(a.tables) > 0 || a.where != ""):
		return usageError{"--table and --where start a backfill: they do not go with --list or --cancel"}
	case a.list && a.wait:
		return usageError{"--wait follows a backfill it starts or cancels: not with --list"}
	}
	return nil
}

// cmdBackfill starts, lists or cancels snapshots of the running trackerd.
func cmdBackfill(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var a backfillArgs
	cfg, rest, err := loadConfig("backfill", args, lookup, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&a.bind, "bind", "", "The bind `KEY`; default the only bind the daemon runs, or \"default\".")
		fs.Var(&a.tables, "table", "Read `SCHEMA.TABLE` (or TABLE, in the bind's default schema); repeat for several. Default: every table the bind follows.")
		fs.StringVar(&a.where, "where", "", "Only the rows that meet the SQL `CONDITION` (run in a read-only transaction).")
		fs.BoolVar(&a.wait, "wait", false, "Follow the snapshot until it ends: exit 0 completed, 1 failed or cancelled.")
		fs.BoolVar(&a.list, "list", false, "List the snapshots and backfills of the running instances, running and ended.")
		fs.StringVar(&a.cancel, "cancel", "", "Cancel the snapshot `ID`.")
		fs.BoolVar(&a.asJSON, "json", false, "Print the snapshots as JSON.")
		fs.DurationVar(&a.timeout, "timeout", 5*time.Second, "Give up on an answer after `DURATION`.")
	})
	if err != nil {
		return err
	}
	if err := a.check(rest); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	url, co, err := tailTarget(cfg, log)
	if err != nil {
		return err
	}
	co.Name = "trackerd backfill"
	nc, err := natssink.Connect(ctx, url, co)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := &controlClient{nc: nc, prefix: controlGroup(cfg), timeout: a.timeout}
	var info tracker.SnapshotInfo
	switch {
	case a.list:
		infos, err := c.snapshots(ctx, a.bind)
		if err != nil {
			return err
		}
		return writeSnapshots(stdout, infos, a.asJSON, time.Now())
	case a.cancel != "":
		if info, err = c.cancel(ctx, a.bind, a.cancel); err != nil {
			return err
		}
	default:
		if info, err = c.backfill(ctx, backfillRequest{Bind: a.bind, Tables: a.tables, Where: a.where}); err != nil {
			return err
		}
		if !a.wait {
			if a.asJSON {
				return writeSnapshots(stdout, []tracker.SnapshotInfo{info}, true, time.Now())
			}
			fmt.Fprintln(stdout, info.ID)
			return nil
		}
		fmt.Fprintf(stderr, "trackerd backfill: snapshot %s of bind %s started: %s\n", info.ID, info.Bind, strings.Join(info.Tables, ", "))
		if info, err = c.follow(ctx, info, stderr, time.Second); err != nil {
			return err
		}
	}
	if a.asJSON {
		if err := writeSnapshots(stdout, []tracker.SnapshotInfo{info}, true, time.Now()); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, snapshotLine(info, time.Now()))
	}
	if info.State == tracker.SnapshotCompleted || (a.cancel != "" && !a.wait) {
		return nil
	}
	if info.State == tracker.SnapshotRunning { // --cancel --wait: wait for it to end
		if info, err = c.follow(ctx, info, stderr, time.Second); err != nil {
			return err
		}
	}
	if info.State == tracker.SnapshotCompleted {
		return nil
	}
	return silentError{exitFailure}
}

// controlClient asks the control service's snapshot endpoints.
type controlClient struct {
	nc      *natsgo.Conn
	prefix  string // $TRACKERD.<STREAM_NAME>
	timeout time.Duration
}

// request sends req to endpoint and reads the first answer into out.
func (c *controlClient) request(ctx context.Context, endpoint string, req, out any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	subject := c.prefix + "." + endpoint
	m, err := c.nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, natsgo.ErrNoResponders):
		return fmt.Errorf("no trackerd serves %s: is trackerd run running, with this STREAM_NAME?", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, natsgo.ErrTimeout):
		return fmt.Errorf("no answer on %s within %v: no running trackerd runs that bind (give --bind; trackerd status --nats lists them)", subject, c.timeout)
	case err != nil:
		return fmt.Errorf("%s: %w", subject, err)
	}
	return replyError(m, out)
}

// replyError reads an endpoint's answer: its micro error as an error
// (codeBadRequest and codeNotFound are usage errors, exit 2), else the
// JSON into out.
func replyError(m *natsgo.Msg, out any) error {
	if e := m.Header.Get(micro.ErrorHeader); e != "" {
		switch m.Header.Get(micro.ErrorCodeHeader) {
		case codeBadRequest, codeNotFound:
			return usageError{e}
		}
		return errors.New(e)
	}
	if err := json.Unmarshal(m.Data, out); err != nil {
		return fmt.Errorf("answer of %s: %w", m.Subject, err)
	}
	return nil
}

func (c *controlClient) backfill(ctx context.Context, req backfillRequest) (tracker.SnapshotInfo, error) {
	var info tracker.SnapshotInfo
	return info, c.request(ctx, "backfill", req, &info)
}

func (c *controlClient) cancel(ctx context.Context, bind, id string) (tracker.SnapshotInfo, error) {
	var info tracker.SnapshotInfo
	return info, c.request(ctx, "cancel", cancelRequest{Bind: bind, ID: id}, &info)
}

// snapshots gathers every instance's snapshots: it waits up to the timeout
// for the first answer, then until no other comes for half a second.
func (c *controlClient) snapshots(ctx context.Context, bind string) ([]tracker.SnapshotInfo, error) {
	data, _ := json.Marshal(snapshotsRequest{Bind: bind})
	subject := c.prefix + ".snapshots"
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishRequest(subject, inbox, data); err != nil {
		return nil, err
	}
	var out []tracker.SnapshotInfo
	answered := false
	deadline := time.Now().Add(c.timeout)
	for {
		wait := time.Until(deadline)
		if answered {
			wait = 500 * time.Millisecond
		}
		if wait <= 0 {
			break
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			wait = time.Until(dl)
		}
		m, err := sub.NextMsg(wait)
		if err != nil || m.Header.Get("Status") == "503" {
			break
		}
		var infos []tracker.SnapshotInfo
		if err := replyError(m, &infos); err != nil {
			return out, err
		}
		answered = true
		out = append(out, infos...)
	}
	if !answered {
		return nil, fmt.Errorf("no trackerd answers on %s: is trackerd run running, with this STREAM_NAME?", subject)
	}
	return out, nil
}

// follow polls the snapshots of info's bind until info's ends, printing a
// progress line to w at most every 10 s.
func (c *controlClient) follow(ctx context.Context, info tracker.SnapshotInfo, w io.Writer, every time.Duration) (tracker.SnapshotInfo, error) {
	var printed time.Time
	for info.State == tracker.SnapshotRunning {
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("stopped waiting for snapshot %s (it goes on; trackerd backfill --cancel %s stops it): %w", info.ID, info.ID, ctx.Err())
		case <-time.After(every):
		}
		infos, err := c.snapshots(ctx, info.Bind)
		if err != nil {
			return info, err
		}
		found := false
		for _, si := range infos {
			if si.ID == info.ID && si.Bind == info.Bind {
				info, found = si, true
			}
		}
		if !found {
			return info, fmt.Errorf("snapshot %s of bind %s is no longer listed: the instance running it stopped", info.ID, info.Bind)
		}
		if now := time.Now(); info.State == tracker.SnapshotRunning && now.Sub(printed) >= 10*time.Second {
			fmt.Fprintln(w, "trackerd backfill: "+snapshotLine(info, now))
			printed = now
		}
	}
	return info, nil
}

// snapshotLine is one line about a snapshot.
func snapshotLine(si tracker.SnapshotInfo, now time.Time) string {
	s := fmt.Sprintf("snapshot %s of bind %s (%s) %s: %s rows", si.ID, si.Bind, si.Kind, si.State, groupDigits(fmt.Sprint(si.Rows)))
	if si.Estimated > 0 {
		s += " of about " + groupDigits(fmt.Sprint(si.Estimated))
	}
	if si.State == tracker.SnapshotRunning {
		if si.Table != "" {
			s += ", reading " + si.Table
		}
		s += fmt.Sprintf(", %d of %d tables, %s rows/s", len(si.Done), len(si.Tables), formatRate(si.RowsPerSecond))
	} else if !si.Ended.IsZero() {
		s += " in " + roughDuration(si.Ended.Sub(si.Started))
	}
	if si.Error != "" {
		s += ": " + si.Error
	}
	return s
}

// writeSnapshots prints snapshots as a table, or as JSON.
func writeSnapshots(w io.Writer, infos []tracker.SnapshotInfo, asJSON bool, now time.Time) error {
	if infos == nil {
		infos = []tracker.SnapshotInfo{}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(infos)
	}
	if len(infos) == 0 {
		fmt.Fprintln(w, "no snapshot since the instances started")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BIND\tID\tKIND\tSTATE\tTABLE\tTABLES\tROWS\tESTIMATED\tROWS/S\tSTARTED\tERROR")
	for _, si := range infos {
		est := "-"
		if si.Estimated >= 0 {
			est = groupDigits(fmt.Sprint(si.Estimated))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\n", si.Bind, si.ID, si.Kind, si.State, dash(si.Table),
			len(si.Done), len(si.Tables), groupDigits(fmt.Sprint(si.Rows)), est, formatRate(si.RowsPerSecond), ago(now, si.Started), dash(si.Error))
	}
	return tw.Flush()
}
