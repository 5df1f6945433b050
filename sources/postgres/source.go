package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// Source follows one PostgreSQL bind through logical replication (pgoutput).
// It implements [tracker.Source] and [tracker.LagReporter]. Make one with
// [Open].
type Source struct {
	b        binds.Bind
	log      *slog.Logger
	report   func(tracker.SourceStatus) // SourceOptions.Report, never nil
	cs       *connSettings
	pool     *pgxpool.Pool
	hooks    hooks
	systemID string
	database string
	major    int // server major version
	identity string
	// twoPhase: PostgreSQL 15+, prepared transactions are asked for at
	// PREPARE TRANSACTION (see pluginArgs).
	twoPhase bool

	// slotConfirmed is the slot's confirmed_flush_lsn when Open looked
	// (or its consistent point when Open created it).
	slotConfirmed lsn
	// slotCreated: Open made the slot (it did not exist).
	slotCreated bool

	mu      sync.Mutex
	conn    *pgconn.PgConn // Open's replication connection, until Run takes it
	started bool
	closed  bool

	confirmed atomic.Uint64 // highest position passed to Confirm (or the start)
	serverEnd atomic.Uint64 // highest server WAL end seen
	lastData  atomic.Int64  // unix nanoseconds of the last XLogData received

	snap snapState // snapshot reads (snapshot.go)
}

// hooks are test knobs; the zero value is production behaviour.
type hooks struct {
	params      map[string]string // extra run-time parameters of replication connections
	fenceGrace  time.Duration     // how long a busy slot is waited for
	statusEvery time.Duration     // standby status interval
	slotTimeout time.Duration     // how long slot creation may wait
	fateEvery   time.Duration     // how often the fate of orphans is asked
	// slotWaitFirst and slotWaitEvery: when a slot creation that is still
	// waiting is first reported with what it waits for, and how often
	// again (0: the defaults of setup.go).
	slotWaitFirst time.Duration
	slotWaitEvery time.Duration
}

var (
	_ tracker.Source         = (*Source)(nil)
	_ tracker.LagReporter    = (*Source)(nil)
	_ tracker.OpenSourceFunc = Open
	_ tracker.CheckFunc      = Check
)

// Timing defaults.
const (
	defaultFenceGrace     = 5 * time.Second
	defaultStatusInterval = 10 * time.Second
	slotCreateTimeout     = 30 * time.Second
	defaultFateInterval   = 5 * time.Second
)

// Open connects to b's server, checks that it is ready for logical
// replication, creates b's publication (before the slot) and its permanent
// replication slot when they are missing, and returns the source. Errors that
// retrying cannot fix match [tracker.ErrConfig]; a slot in use by another
// process matches [tracker.ErrFenced]; a slot the server invalidated matches
// [tracker.ErrResnapshotRequired]. No error contains the bind's password.
func Open(ctx context.Context, b binds.Bind, opts tracker.SourceOptions) (tracker.Source, error) {
	s, err := open(ctx, b, opts, hooks{})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func open(ctx context.Context, b binds.Bind, opts tracker.SourceOptions, h hooks) (*Source, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if h.fenceGrace == 0 {
		h.fenceGrace = defaultFenceGrace
	}
	if h.statusEvery == 0 {
		h.statusEvery = defaultStatusInterval
	}
	if h.slotTimeout == 0 {
		h.slotTimeout = slotCreateTimeout
	}
	if h.fateEvery == 0 {
		h.fateEvery = defaultFateInterval
	}
	report := opts.Report
	if report == nil {
		report = func(tracker.SourceStatus) {}
	}
	s := &Source{b: b, log: log.With("slot", b.Slot), report: report, hooks: h}
	if err := s.open(ctx); err != nil {
		s.Close()
		return nil, s.boundary(err)
	}
	return s, nil
}

// boundary prefixes err once, at the package's exported boundary, and makes
// sure it carries no secret.
func (s *Source) boundary(err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("postgres: %w", err) // the tracker names the bind
	if s.cs != nil {
		err = s.cs.safe(err)
	}
	return err
}

func (s *Source) open(ctx context.Context) error {
	b := s.b
	if b.Kind != "" && b.Kind != binds.Postgres {
		return tracker.ConfigError(fmt.Errorf("bind kind %q is not postgresql", b.Kind))
	}
	if !validSlotName(b.Slot) {
		return tracker.ConfigError(fmt.Errorf("replication slot name %q: use 1 to 63 lower-case letters, digits and underscores", b.Slot))
	}
	if b.Publication == "" {
		return tracker.ConfigError(errors.New("no publication name"))
	}
	cs, err := newConnSettings(b, s.hooks.params)
	if err != nil {
		return err
	}
	s.cs = cs
	conn, err := cs.connectRepl(ctx)
	if err != nil {
		return err
	}
	s.conn = conn
	ident, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("identify system: %w", err)
	}
	s.systemID, s.database = ident.SystemID, ident.DBName
	s.identity = fmt.Sprintf("pg/%s/%s/%s", s.systemID, s.database, b.Slot)
	if s.major, err = serverMajor(conn.ParameterStatus("server_version")); err != nil {
		return err
	}
	if s.major < 10 {
		return tracker.ConfigError(fmt.Errorf("PostgreSQL %d has no pgoutput logical replication; trackerd needs PostgreSQL 10 or later", s.major))
	}
	if b.Streaming && s.major < 14 {
		return tracker.ConfigError(fmt.Errorf("streaming needs PostgreSQL 14 or later, the server is %d; fix: turn the bind's streaming option off", s.major))
	}
	s.twoPhase = s.major >= 15
	if s.pool, err = pgxpool.NewWithConfig(ctx, cs.pool); err != nil {
		return fmt.Errorf("create query pool: %w", err)
	}
	if err := s.checkServer(ctx); err != nil {
		return err
	}
	if err := s.ensurePublication(ctx); err != nil {
		return err
	}
	if err := s.ensureSlot(ctx); err != nil {
		return err
	}
	s.warnTables(ctx)
	s.log.Info("replication ready", "system", s.systemID, "database", s.database,
		"publication", b.Publication, "server", s.major, "confirmed_flush_lsn", formatLSN(s.slotConfirmed))
	return nil
}

// Identity returns "pg/<system id>/<database>/<slot>".
func (s *Source) Identity() string { return s.identity }

// Confirm records that everything up to pos is durable downstream. The next
// standby status update (within about a second) reports it to the server as
// flushed and applied, which advances the slot's confirmed_flush_lsn: to
// pos's LSN, or to the prepare of its oldest prepared transaction, which
// the server must send again after a restart (see position). It never
// blocks, ignores positions below earlier ones and text that is not a
// position, and may be called from any goroutine.
func (s *Source) Confirm(pos string) {
	p, err := parsePosition(pos)
	if err != nil || p.through == 0 {
		return
	}
	s.raiseConfirmed(p.confirm())
}

func (s *Source) raiseConfirmed(l lsn) {
	for {
		cur := s.confirmed.Load()
		if uint64(l) <= cur || s.confirmed.CompareAndSwap(cur, uint64(l)) {
			return
		}
	}
}

// Lag reports how far the confirmed position is behind the server: Bytes is
// the last server WAL end seen minus the confirmed LSN (-1 before any was
// seen). Behind is the tracker's (see [tracker.Lag]).
func (s *Source) Lag() tracker.Lag {
	lag := tracker.Lag{Bytes: -1}
	if end := s.serverEnd.Load(); end != 0 {
		if c := s.confirmed.Load(); end > c {
			lag.Bytes = int64(end - c)
		} else {
			lag.Bytes = 0
		}
	}
	return lag
}

// streamState reports the replication stream's state (see srckit.Loop),
// its error scrubbed of the password, and logs it at debug level: the
// tracker logs the transitions.
func (s *Source) streamState(st tracker.SourceStatus) {
	attrs := []any{"state", st.State}
	if st.Position != "" {
		attrs = append(attrs, "position", st.Position)
	}
	if st.Err != nil {
		st.Err = s.cs.safe(st.Err)
		attrs = append(attrs, "err", st.Err, "detail", st.Detail)
	}
	s.log.Debug("replication stream", attrs...)
	s.report(st)
}

// Close releases the connections Open made if Run was never called; Run
// releases its own when it returns. Close is idempotent.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closeSnapshots()
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
	if !s.started && s.pool != nil {
		s.pool.Close()
	}
	return nil
}

// takeConn hands Open's replication connection to Run's first session.
func (s *Source) takeConn() *pgconn.PgConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conn
	s.conn = nil
	return c
}
