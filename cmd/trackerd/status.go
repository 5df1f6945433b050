package main

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// The status document: what GET /status.json serves, what the NATS service
// endpoint "status" answers, what the page at / shows, and what `trackerd
// status --json` prints, merged over the instances that answered. One
// instance's document lists itself and its binds; a merged one lists every
// instance that answered and each bind once, as its lease holder sees it.

// statusDoc is trackerd's status.
type statusDoc struct {
	Time time.Time `json:"time"`
	// OK is set when there is at least one bind and every bind streams:
	// `trackerd status` exits 0 then.
	OK        bool             `json:"ok"`
	Instances []instanceStatus `json:"instances"`
	Binds     []bindStatus     `json:"binds"`
}

// instanceStatus describes one running trackerd.
type instanceStatus struct {
	// Owner is the name the instance takes leases under: host and DATA_DIR.
	Owner     string    `json:"owner"`
	PID       int       `json:"pid"`
	Version   string    `json:"version"`
	Revision  string    `json:"revision,omitempty"`
	GoVersion string    `json:"go_version"`
	StartedAt time.Time `json:"started_at"`
	// HTTP is the URL of its HTTP endpoints, when it serves them.
	HTTP string `json:"http,omitempty"`
	// NATS is the connection's status (CONNECTED, RECONNECTING, ...), and
	// NATSURL the server, without credentials ("embedded" for the
	// embedded server).
	NATS          string `json:"nats,omitempty"`
	NATSURL       string `json:"nats_url,omitempty"`
	Stream        string `json:"stream,omitempty"`
	SubjectPrefix string `json:"subject_prefix,omitempty"`
	// InflightLimit is MAX_INFLIGHT: each bind's most unacknowledged events.
	InflightLimit int `json:"inflight_limit,omitempty"`
}

// bindStatus is one bind as one instance sees it.
type bindStatus struct {
	Bind string `json:"bind"`
	// Instance is the owner name of the instance that reported the bind.
	Instance        string    `json:"instance"`
	State           string    `json:"state"`
	StateDetail     string    `json:"state_detail,omitempty"`
	StateSince      time.Time `json:"state_since"`
	SourceConnected bool      `json:"source_connected"`
	// Position is the position of the bind's last checkpoint: everything
	// before it is published and acknowledged.
	Position     string     `json:"position,omitempty"`
	CheckpointAt *time.Time `json:"checkpoint_at,omitempty"`
	// LagBytes is the server's WAL or binlog end minus the checkpointed
	// position; LagSeconds the age of the oldest commit read and not yet
	// checkpointed. Each is left out while unknown.
	LagBytes   *int64   `json:"lag_bytes,omitempty"`
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// EventsPerSecond is over the last minute.
	EventsPerSecond  float64    `json:"events_per_second"`
	LastEventAt      *time.Time `json:"last_event_at,omitempty"`
	Changes          uint64     `json:"changes"`
	Transactions     uint64     `json:"transactions"`
	EventsPublished  uint64     `json:"events_published"`
	EventsAcked      uint64     `json:"events_acked"`
	Checkpoints      uint64     `json:"checkpoints"`
	OpenTransactions int        `json:"open_transactions"`
	SpilledBytes     int64      `json:"spilled_bytes"`
	Reconnects       uint64     `json:"reconnects"`
	LastError        string     `json:"last_error,omitempty"`
	LastErrorAt      *time.Time `json:"last_error_at,omitempty"`
	// LeaseHolder is the instance that holds the bind's lease, as "owner,
	// pid N"; Standby lists the other instances that answered with the
	// bind (merged documents only).
	LeaseHolder string         `json:"lease_holder,omitempty"`
	Standby     []string       `json:"standby,omitempty"`
	CommitToAck *latencyStatus `json:"commit_to_ack,omitempty"`
	Sink        *sinkStatus    `json:"sink,omitempty"`
	// Snapshots are the bind's snapshots and backfills: those running and
	// those that ended since the bind started, oldest first.
	Snapshots []snapshotStatus `json:"snapshots,omitempty"`
}

// latencyStatus summarises the commit-to-ack histogram since the start.
type latencyStatus struct {
	Count      uint64  `json:"count"`
	P50Seconds float64 `json:"p50_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
}

// sinkStatus are the sink's counters of one bind.
type sinkStatus struct {
	Published  uint64 `json:"published"`
	Acked      uint64 `json:"acked"`
	Retried    uint64 `json:"retried"`
	Duplicates uint64 `json:"duplicates"`
	Truncated  uint64 `json:"truncated"`
	InFlight   uint64 `json:"inflight"`
}

// snapshotStatus is a snapshot or backfill of a bind, running or ended
// (the README, "Snapshots and backfills").
type snapshotStatus struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// State is running, completed, cancelled or failed.
	State string `json:"state"`
	// Table is the table being read, while it runs.
	Table      string `json:"table,omitempty"`
	TablesDone int    `json:"tables_done"`
	Tables     int    `json:"tables"`
	Where      string `json:"where,omitempty"`
	// Rows are the rows published, by this instance and those that ran
	// the snapshot before it; Estimated is the server's estimate of the
	// snapshot's rows, left out while unknown.
	Rows      int64  `json:"rows"`
	Estimated *int64 `json:"estimated,omitempty"`
	// RowsPerSecond is this instance's rate since it began the snapshot;
	// ETASeconds the time left at that rate for the rows the tables not
	// yet read whole are estimated to hold, left out when unknown.
	RowsPerSecond float64    `json:"rows_per_second"`
	ETASeconds    *float64   `json:"eta_seconds,omitempty"`
	StartedAt     time.Time  `json:"started_at"`
	EndedAt       *time.Time `json:"ended_at,omitempty"`
	Error         string     `json:"error,omitempty"`
}

// snapshotFromInfo turns a tracker's snapshot into its status.
func snapshotFromInfo(si tracker.SnapshotInfo) snapshotStatus {
	s := snapshotStatus{ID: si.ID, Kind: string(si.Kind), State: si.State, Table: si.Table, TablesDone: len(si.Done),
		Tables: len(si.Tables), Where: si.Where, Rows: si.Rows, RowsPerSecond: round(si.RowsPerSecond, 1),
		StartedAt: si.Started, EndedAt: timePtr(si.Ended), Error: si.Error}
	if si.Estimated >= 0 {
		v := si.Estimated
		s.Estimated = &v
	}
	if eta, ok := snapshotETA(si); ok {
		v := round(eta, 0)
		s.ETASeconds = &v
	}
	return s
}

// snapshotETA estimates the seconds a running snapshot still needs: the
// rows its tables not yet read whole are estimated to hold, less those
// this instance read of them, at its rate. ok is false when a table's
// estimate is unknown or nothing was read yet.
func snapshotETA(si tracker.SnapshotInfo) (float64, bool) {
	if si.State != tracker.SnapshotRunning || si.RowsPerSecond <= 0 || len(si.TableEstimated) == 0 {
		return 0, false
	}
	var left int64
	for table, est := range si.TableEstimated {
		if slices.Contains(si.Done, table) {
			continue
		}
		if est < 0 {
			return 0, false
		}
		left += max(est-si.TableRows[table], 0)
	}
	return float64(left) / si.RowsPerSecond, true
}

// stateNotRunning is the state of a configured bind that no instance that
// answered reports.
const stateNotRunning = "not_running"

// daemon is what a running `trackerd run` shows of itself.
type daemon struct {
	cfg     *config.Config
	tr      *tracker.Tracker
	bus     *bus
	started time.Time
	build   buildInfo
	pid     int
	// http is the URL of the HTTP endpoints, set before they serve.
	http string
}

func newDaemon(cfg *config.Config, tr *tracker.Tracker, b *bus) *daemon {
	return &daemon{cfg: cfg, tr: tr, bus: b, started: time.Now(), build: currentBuild(), pid: os.Getpid()}
}

// holderName is how a lease holder is shown: as sinks/nats lists them.
func holderName(owner string, pid int) string { return fmt.Sprintf("%s, pid %d", owner, pid) }

// status returns the instance's status document at now. For a bind whose
// lease another instance holds, it asks the checkpoint store who (at most
// a second).
func (d *daemon) status(ctx context.Context, now time.Time) statusDoc {
	inst := instanceStatus{Owner: d.tr.Owner(), PID: d.pid, Version: d.build.Version, Revision: d.build.Revision,
		GoVersion: d.build.GoVersion, StartedAt: d.started, HTTP: d.http}
	if d.cfg != nil {
		inst.Stream, inst.SubjectPrefix = d.cfg.StreamName, d.cfg.SubjectPrefix
		inst.NATSURL = "embedded"
		if d.cfg.NATSURL != "" {
			inst.NATSURL = redactURL(d.cfg.NATSURL)
		}
	}
	var sinkStats map[string]sinkStatus
	if d.bus != nil {
		if d.bus.nc != nil {
			inst.NATS = d.bus.nc.Status().String()
		}
		if d.bus.sink != nil {
			sinkStats = bindSinkStats(d.bus.sink)
			inst.InflightLimit = d.bus.sink.InflightLimit()
		}
	}
	doc := statusDoc{Time: now, Instances: []instanceStatus{inst}}
	for _, s := range d.tr.Stats() {
		b := bindFromStats(s, now)
		b.Instance = inst.Owner
		if s.LeaseHolder != "" {
			b.LeaseHolder = holderName(s.LeaseHolder, d.pid)
		} else if d.bus != nil {
			b.LeaseHolder = d.otherHolder(ctx, s.Bind)
		}
		if st, ok := sinkStats[s.Bind]; ok {
			b.Sink = &st
		}
		doc.Binds = append(doc.Binds, b)
	}
	doc.OK = allStreaming(doc.Binds)
	return doc
}

// otherHolder returns the holder of a live lease of bind in the store, ""
// when none or the store does not say.
func (d *daemon) otherHolder(ctx context.Context, bind string) string {
	lister, ok := d.bus.store.(tracker.CheckpointLister)
	if !ok {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	cps, err := lister.ListCheckpoints(ctx, bind)
	if err != nil {
		return ""
	}
	for _, cp := range cps {
		if cp.Holder != "" {
			return cp.Holder
		}
	}
	return ""
}

// bindFromStats turns a bind's tracker stats into its status.
func bindFromStats(s tracker.BindStats, now time.Time) bindStatus {
	b := bindStatus{
		Bind: s.Bind, State: s.State, StateDetail: s.StateDetail, StateSince: s.StateSince,
		SourceConnected: s.SourceConnected, Position: s.Checkpoint, CheckpointAt: timePtr(s.CheckpointAt),
		EventsPerSecond: round(s.EventsPerSecond, 3), LastEventAt: timePtr(s.LastEventAt),
		Changes: s.Changes, Transactions: s.Transactions, EventsPublished: s.Published, EventsAcked: s.Acked,
		Checkpoints: s.Checkpoints, OpenTransactions: s.OpenTx, SpilledBytes: s.SpilledBytes, Reconnects: s.Reconnects,
		LastError: s.LastError, LastErrorAt: timePtr(s.LastErrorAt),
	}
	if s.Lag.Bytes >= 0 {
		v := s.Lag.Bytes
		b.LagBytes = &v
	}
	if s.LagKnown {
		v := round(s.Lag.Behind.Seconds(), 3)
		b.LagSeconds = &v
	}
	if h := s.CommitToAck; h.Count > 0 {
		b.CommitToAck = &latencyStatus{Count: h.Count, P50Seconds: round(h.Quantile(0.5), 4), P99Seconds: round(h.Quantile(0.99), 4)}
	}
	for _, si := range s.Snapshots {
		b.Snapshots = append(b.Snapshots, snapshotFromInfo(si))
	}
	return b
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func round(v float64, digits int) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// allStreaming reports whether there is a bind and every bind streams.
func allStreaming(bs []bindStatus) bool {
	for _, b := range bs {
		if b.State != tracker.StateStreaming {
			return false
		}
	}
	return len(bs) > 0
}

// stateRank orders states from the most to the least useful to show when
// several instances report one bind and none holds its lease.
func stateRank(s string) int {
	switch s {
	case tracker.StateStreaming:
		return 0
	case tracker.StateSnapshotting:
		return 1
	case tracker.StateWaitingForNATS, tracker.StateReconnecting:
		return 2
	case tracker.StateCreatingSlot:
		return 3
	case tracker.StateStopping:
		return 4
	case tracker.StateFailed:
		return 5
	case tracker.StateStarting:
		return 6
	}
	return 7
}

// mergeStatus merges the documents of several instances: every instance,
// and each bind once, as the instance that holds its lease reports it
// (else the one whose state says most), with the other instances that
// report it as standby. A bind of expect that no document reports is
// not_running, with the holder of its lease from holders (the checkpoint
// store, for instances that do not answer). Binds are sorted by key,
// instances by owner.
func mergeStatus(docs []statusDoc, expect []string, holders map[string]string, now time.Time) statusDoc {
	out := statusDoc{Time: now, Instances: []instanceStatus{}, Binds: []bindStatus{}}
	byBind := map[string][]bindStatus{}
	for _, d := range docs {
		out.Instances = append(out.Instances, d.Instances...)
		for _, b := range d.Binds {
			byBind[b.Bind] = append(byBind[b.Bind], b)
		}
	}
	for _, key := range expect {
		if _, ok := byBind[key]; !ok {
			byBind[key] = []bindStatus{{Bind: key, State: stateNotRunning, LeaseHolder: holders[key]}}
		}
	}
	for _, rows := range byBind {
		best := 0
		for i, r := range rows {
			if holds(r) && !holds(rows[best]) || holds(r) == holds(rows[best]) && stateRank(r.State) < stateRank(rows[best].State) {
				best = i
			}
		}
		b := rows[best]
		for i, r := range rows {
			if i != best && r.Instance != "" {
				b.Standby = append(b.Standby, r.Instance)
			}
		}
		slices.Sort(b.Standby)
		out.Binds = append(out.Binds, b)
	}
	slices.SortFunc(out.Binds, func(a, b bindStatus) int { return cmp.Compare(a.Bind, b.Bind) })
	slices.SortFunc(out.Instances, func(a, b instanceStatus) int {
		return cmp.Or(cmp.Compare(a.Owner, b.Owner), cmp.Compare(a.PID, b.PID))
	})
	out.OK = allStreaming(out.Binds)
	return out
}

// holds reports whether the instance that reported b holds its lease.
func holds(b bindStatus) bool {
	return b.Instance != "" && strings.HasPrefix(b.LeaseHolder, b.Instance+", pid ")
}

// bindSinkStats returns the sink's counters of each bind.
func bindSinkStats(s *natssink.Sink) map[string]sinkStatus {
	out := map[string]sinkStatus{}
	for bind, st := range s.BindStats() {
		out[bind] = sinkStatus{Published: st.Published, Acked: st.Acked, Retried: st.Retried,
			Duplicates: st.Duplicates, Truncated: st.Truncated, InFlight: st.InFlight}
	}
	return out
}
