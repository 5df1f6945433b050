package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
)

// Tracker follows every tracked bind of a configuration and turns its
// changes into signals and sink events. Create it with [New], connect
// receivers to [Tracker.BeforeCommit] and [Tracker.AfterCommit], then call
// [Tracker.Run].
type Tracker struct {
	// BeforeCommit fires for each change as it is read, before its
	// transaction's commit is processed (Flask's before_models_committed).
	BeforeCommit *Signal
	// AfterCommit fires for each change of a transaction once its commit is
	// processed (Flask's models_committed).
	AfterCommit *Signal

	cfg     *config.Config
	binds   []binds.Bind
	log     *slog.Logger
	sources map[binds.Kind]OpenSourceFunc
	resets  map[binds.Kind]ResetFunc
	sink    Sink
	store   CheckpointStore
	phases  map[Phase]bool
	spill   string
	debug   *debugRing
	owner   string
	// cpDelay is how long after its events are acknowledged a position
	// may be checkpointed (WithCheckpointDelay).
	cpDelay time.Duration
	// snapChunk is the rows a snapshot reads at a time (WithSnapshotChunk).
	snapChunk int

	created time.Time

	mu        sync.Mutex
	pipelines map[string]*pipeline
	states    map[string]*bindState // every tracked bind's, from the start of Run
	running   bool
}

// Option configures a [Tracker].
type Option func(*Tracker) error

// WithLogger sets the logger; the default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(t *Tracker) error {
		if l == nil {
			return errors.New("tracker: WithLogger(nil)")
		}
		t.log = l
		return nil
	}
}

// WithSource chooses how binds of one kind are followed, e.g.
// WithSource(binds.Postgres, postgres.Open) with
// github.com/trackerd/trackerd/sources/postgres.
func WithSource(kind binds.Kind, open OpenSourceFunc) Option {
	return func(t *Tracker) error {
		if open == nil {
			return fmt.Errorf("tracker: WithSource(%q, nil)", kind)
		}
		t.sources[kind] = open
		return nil
	}
}

// WithSink publishes events through s (for example the NATS sink of
// github.com/trackerd/trackerd/sinks/nats). Without one, the tracker runs
// with in-process receivers only.
func WithSink(s Sink) Option {
	return func(t *Tracker) error {
		t.sink = s
		return nil
	}
}

// WithCheckpointStore stores checkpoints in s. The default is a file in
// CHECKPOINT_FILE (or DATA_DIR/checkpoints.json).
func WithCheckpointStore(s CheckpointStore) Option {
	return func(t *Tracker) error {
		t.store = s
		return nil
	}
}

// WithCheckpointDelay makes the checkpoint trail the acknowledgements by d:
// a position is saved (and confirmed to the source's server) only once
// every event up to it was acknowledged at least d ago. Give it the NATS
// server's JetStream sync interval (plus a margin) when that server may
// acknowledge events before they reach its disk: a power loss on its host
// then loses only events the checkpoint is not yet past, which are read
// and published again on restart. A clean stop writes the final checkpoint
// without waiting. The default is 0.
func WithCheckpointDelay(d time.Duration) Option {
	return func(t *Tracker) error {
		if d < 0 {
			return fmt.Errorf("tracker: WithCheckpointDelay(%v): want 0 or more", d)
		}
		t.cpDelay = d
		return nil
	}
}

// ResetFunc moves a bind whose checkpoint cannot be resumed to its
// server's current position (see `trackerd reset`); from is the
// checkpoint's position.
type ResetFunc func(ctx context.Context, b binds.Bind, from string, opts SourceOptions) (Reset, error)

// WithReset gives the tracker the reset of binds of one kind, which binds
// with snapshot = "when_needed" use when their checkpoint can no longer be
// resumed: they move to the server's current position and read their
// tables again, instead of stopping with ErrResnapshotRequired.
func WithReset(kind binds.Kind, reset ResetFunc) Option {
	return func(t *Tracker) error {
		if reset == nil {
			return fmt.Errorf("tracker: WithReset(%q, nil)", kind)
		}
		t.resets[kind] = reset
		return nil
	}
}

// WithSnapshotChunk sets how many rows a snapshot reads at a time
// (default DefaultSnapshotChunk): each chunk is held in memory until the
// stream reaches its position, and is read again at most once after a
// crash.
func WithSnapshotChunk(rows int) Option {
	return func(t *Tracker) error {
		if rows <= 0 {
			return fmt.Errorf("tracker: WithSnapshotChunk(%d): want a positive number of rows", rows)
		}
		t.snapChunk = rows
		return nil
	}
}

// WithOwner names this instance in the binds' leases (see [Leaser]). The
// default is the host name and DATA_DIR: a restart of the same deployment
// takes its leases back at once, another instance is fenced out.
func WithOwner(name string) Option {
	return func(t *Tracker) error {
		if name == "" {
			return errors.New("tracker: WithOwner(\"\")")
		}
		t.owner = name
		return nil
	}
}

// New checks cfg and prepares a tracker; nothing connects until Run. With
// TRACK_MODIFICATIONS unset it logs config.TrackModificationsWarning once.
func New(cfg *config.Config, opts ...Option) (*Tracker, error) {
	if cfg == nil {
		return nil, errors.New("tracker: nil config")
	}
	t := &Tracker{
		BeforeCommit: &Signal{},
		AfterCommit:  &Signal{},
		cfg:          cfg,
		log:          slog.New(slog.DiscardHandler),
		sources:      make(map[binds.Kind]OpenSourceFunc),
		resets:       make(map[binds.Kind]ResetFunc),
		phases:       make(map[Phase]bool),
		pipelines:    make(map[string]*pipeline),
		states:       make(map[string]*bindState),
		created:      time.Now(),
	}
	for _, o := range opts {
		if err := o(t); err != nil {
			return nil, err
		}
	}
	bs, err := binds.FromConfig(cfg)
	if err != nil {
		return nil, err
	}
	t.binds = bs
	for _, s := range cfg.Signals {
		p := Phase(s)
		if p != PhaseBeforeCommit && p != PhaseAfterCommit {
			return nil, ConfigError(fmt.Errorf("tracker: SIGNALS: unknown signal %q (want before_commit, after_commit)", s))
		}
		t.phases[p] = true
	}
	if t.phases[PhaseBeforeCommit] {
		t.phases[PhaseRollback] = true
	}
	if cfg.TrackModifications == nil {
		t.log.Warn(config.TrackModificationsWarning,
			slog.String("key", "TRACK_MODIFICATIONS"),
			slog.String("env", "TRACKER_TRACK_MODIFICATIONS,SQLALCHEMY_TRACK_MODIFICATIONS"))
	}
	if cfg.RecordQueriesEnabled() {
		t.debug = newDebugRing(debugRingSize)
	}
	if !cfg.Tracking() {
		return t, nil
	}
	var missing []string
	for _, b := range t.binds {
		if b.Track && t.sources[b.Kind] == nil {
			missing = append(missing, fmt.Sprintf("bind %q needs tracker.WithSource(binds.%s, %s.Open) from github.com/trackerd/trackerd/sources/%s",
				b.Key, kindConst(b.Kind), kindPkg(b.Kind), kindPkg(b.Kind)))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("tracker: no source for %s", strings.Join(missing, "; "))
	}
	t.spill = spillDir(cfg)
	if t.owner == "" {
		host, _ := os.Hostname()
		dir, _ := filepath.Abs(cfg.DataDir)
		t.owner = host + ":" + dir
	}
	if t.store == nil {
		t.store = NewFileStore(cfg.CheckpointPath())
	}
	return t, nil
}

func kindConst(k binds.Kind) string {
	if k == binds.MySQL {
		return "MySQL"
	}
	return "Postgres"
}

func kindPkg(k binds.Kind) string {
	if k == binds.MySQL {
		return "mysql"
	}
	return "postgres"
}

func spillDir(cfg *config.Config) string {
	if cfg.DataDir == "" {
		return os.TempDir()
	}
	return filepath.Join(cfg.DataDir, "spill")
}

// Owner returns the name this instance takes the binds' leases under (see
// WithOwner).
func (t *Tracker) Owner() string { return t.owner }

// Binds returns the configured binds, tracked or not, sorted by key.
func (t *Tracker) Binds() []binds.Bind { return append([]binds.Bind(nil), t.binds...) }

// Run follows every tracked bind until ctx ends or one bind fails, which
// stops them all (a supervisor restarts trackerd, which resumes from the
// checkpoints). On a clean stop it stops reading, waits for outstanding acks,
// writes the final checkpoints and returns nil. With TRACK_MODIFICATIONS
// false it returns nil at once.
func (t *Tracker) Run(ctx context.Context) error {
	t.mu.Lock()
	if t.running {
		t.mu.Unlock()
		return errors.New("tracker: Run called twice")
	}
	t.running = true
	t.mu.Unlock()

	if !t.cfg.Tracking() {
		t.log.Info("TRACK_MODIFICATIONS is false: no bind is followed")
		return nil
	}
	var tracked []binds.Bind
	for _, b := range t.binds {
		if b.Track {
			tracked = append(tracked, b)
		} else {
			t.log.Info("bind not tracked (track = false)", slog.String("bind", b.Key))
		}
	}
	if len(tracked) == 0 {
		t.log.Info("no bind is tracked")
		return nil
	}
	if err := os.MkdirAll(t.spill, 0o700); err != nil {
		return fmt.Errorf("tracker: spill directory: %w", err)
	}

	// Open every source before streaming any, so that a configuration or
	// server problem stops the start with nothing half-running.
	var opened []*pipeline
	closeAll := func() {
		for _, p := range opened {
			p.close(ctx)
		}
	}
	t.mu.Lock()
	for _, b := range tracked {
		t.states[b.Key] = newBindState(t.log.With(slog.String("bind", b.Key)))
	}
	t.mu.Unlock()
	for _, b := range tracked {
		p, err := t.openPipeline(ctx, b, t.states[b.Key])
		if t.resnapshots(b, err) {
			if err = t.resnapshot(ctx, b, t.states[b.Key], err); err == nil {
				p, err = t.openPipeline(ctx, b, t.states[b.Key])
			}
		}
		if err != nil {
			t.states[b.Key].setPhase(StateFailed, err)
			closeAll()
			return err
		}
		opened = append(opened, p)
	}
	t.mu.Lock()
	for _, p := range opened {
		t.pipelines[p.bind.Key] = p
	}
	t.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	for _, p := range opened {
		g.Go(func() error {
			err := p.run(gctx)
			for t.resnapshots(p.bind, err) && gctx.Err() == nil {
				b, st := p.bind, t.states[p.bind.Key]
				if err = t.resnapshot(gctx, b, st, err); err != nil {
					break
				}
				if p, err = t.openPipeline(gctx, b, st); err != nil {
					break
				}
				t.mu.Lock()
				t.pipelines[b.Key] = p
				t.mu.Unlock()
				err = p.run(gctx)
			}
			if err != nil {
				return fmt.Errorf("bind %s: %w", p.bind.Key, err)
			}
			return nil
		})
	}
	err := g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// resnapshots reports whether a bind that failed with err moves to its
// server's current position and reads its tables again (snapshot =
// "when_needed").
func (t *Tracker) resnapshots(b binds.Bind, err error) bool {
	return err != nil && errors.Is(err, ErrResnapshotRequired) && b.Snapshot == binds.SnapshotWhenNeeded && t.resets[b.Kind] != nil
}

// resnapshot moves a bind whose checkpoint cannot be resumed to its
// server's current position, with a snapshot of its tables in the
// checkpoint: the changes in between are never published, but the rows
// they left are.
func (t *Tracker) resnapshot(ctx context.Context, b binds.Bind, st *bindState, cause error) error {
	log := t.log.With(slog.String("bind", b.Key))
	log.Warn("the checkpoint cannot be resumed; snapshot = when_needed: moving to the server's current position and reading the tables again",
		slog.Any("err", cause))
	r, err := t.resets[b.Kind](ctx, b, "", SourceOptions{Logger: log, NativeUnicode: t.cfg.NativeUnicode, Report: st.report})
	if err != nil {
		return fmt.Errorf("snapshot = when_needed: reset: %w", err)
	}
	key := CheckpointKey(b.Key, r.Identity)
	cp, err := t.store.Load(ctx, key)
	switch {
	case errors.Is(err, ErrNoCheckpoint):
		cp = Checkpoint{Bind: b.Key, Source: r.Identity, Origin: Origin(r.Identity + "\x00" + nonce())}
	case err != nil:
		return fmt.Errorf("snapshot = when_needed: load checkpoint: %w", err)
	}
	was := cp.Position
	cp.Position, cp.Time, cp.Owner = r.Position, time.Now().UTC(), t.owner
	cp.Snapshots = []SnapshotProgress{InitialSnapshot()}
	if _, err := t.store.Save(ctx, key, cp); err != nil {
		return fmt.Errorf("snapshot = when_needed: write checkpoint: %w", err)
	}
	log.Warn("moved to the server's current position; the changes in between are not published, a snapshot of the tables follows",
		slog.String("was", was), slog.String("now", r.Position), slog.Any("done", r.Done), slog.String("snapshot", cp.Snapshots[0].ID))
	return nil
}

// BindStats is a bind's progress, for metrics and health checks.
type BindStats struct {
	Bind string
	// State is one of States; StateDetail says more where there is more to
	// say (e.g. what creating_slot waits for); StateSince is when the
	// state began.
	State       string
	StateDetail string
	StateSince  time.Time
	// Reconnects counts the times the source lost its connection.
	Reconnects uint64
	// LastErrorAt is when LastError happened.
	LastErrorAt   time.Time
	Changes       uint64
	Transactions  uint64
	Published     uint64
	Acked         uint64
	OpenTx        int
	SpilledBytes  int64
	Checkpoint    string
	CheckpointAt  time.Time
	Checkpoints   uint64
	ReceiverRetry uint64
	Lag           Lag
	// LagKnown is set once the bind's source is open: Lag.Behind is then
	// the tracker's (see Lag), whatever the source; Lag.Bytes is -1 when
	// the source does not know it.
	LagKnown  bool
	LastError string
	// SourceConnected is set while the source is connected to its server:
	// as it reports (streaming, creating the slot), or, for a source that
	// reports nothing, while the bind streams.
	SourceConnected bool
	// EventsPerSecond is the rate of events handed to the sink (changes
	// read, without a sink) over the last RateWindow; LastEventAt is when
	// the count was last seen to grow (zero: no event yet), to within a
	// CHECKPOINT_INTERVAL.
	EventsPerSecond float64
	LastEventAt     time.Time
	// CommitToAck is, per transaction, the time from its commit on the
	// database to the acknowledgement of its last after_commit event by
	// the sink (by this host's clock against the database's: a skew shows
	// in it), since the bind started.
	CommitToAck Histogram
	// LeaseHolder is this instance's owner name (WithOwner) while it holds
	// the bind's lease, empty otherwise or when the store leases nothing.
	LeaseHolder string
	// Snapshots are the bind's snapshots and backfills: running ones, and
	// those that ended since the bind started.
	Snapshots []SnapshotInfo
}

// Stats returns every tracked bind's progress once Run has begun (a bind
// whose source is still opening has its state only), sorted by bind key.
func (t *Tracker) Stats() []BindStats {
	t.mu.Lock()
	ps := make([]*pipeline, 0, len(t.pipelines))
	for _, p := range t.pipelines {
		ps = append(ps, p)
	}
	var opening []BindStats
	for key, st := range t.states {
		if t.pipelines[key] == nil {
			v := st.view()
			opening = append(opening, BindStats{Bind: key, State: v.State, StateDetail: v.Detail, StateSince: v.Since,
				LastError: v.LastError, LastErrorAt: v.LastErrorAt, Reconnects: v.Reconnects, Lag: Lag{Bytes: -1},
				SourceConnected: v.Connected, CommitToAck: newHistogram(LatencyBuckets)})
		}
	}
	if t.cfg.Tracking() {
		// Until Run takes it up, a tracked bind is starting: metrics and
		// status show each from the first scrape, never a series that
		// appears.
		for _, b := range t.binds {
			if b.Track && t.states[b.Key] == nil {
				opening = append(opening, BindStats{Bind: b.Key, State: StateStarting, StateSince: t.created,
					Lag: Lag{Bytes: -1}, CommitToAck: newHistogram(LatencyBuckets)})
			}
		}
	}
	t.mu.Unlock()
	out := make([]BindStats, 0, len(ps)+len(opening))
	for _, p := range ps {
		out = append(out, p.snapshot())
	}
	out = append(out, opening...)
	sort.Slice(out, func(i, j int) bool { return out[i].Bind < out[j].Bind })
	return out
}

// Ready reports whether every tracked bind is streaming.
func (t *Tracker) Ready() bool {
	st := t.Stats()
	if len(st) == 0 {
		return false
	}
	for _, s := range st {
		if s.State != StateStreaming {
			return false
		}
	}
	return true
}
