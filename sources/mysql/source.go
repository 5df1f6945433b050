package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// Tunables of the binlog reader.
const (
	// defaultHeartbeat is the heartbeat the reader asks for when the bind
	// sets none: the server sends one after this much idle time, so that a
	// dead connection is noticed within readTimeoutFactor of it.
	defaultHeartbeat  = 5 * time.Second
	readTimeoutFactor = 3
	// backoffMin and backoffMax bound the jittered reconnect delay.
	backoffMin = 100 * time.Millisecond
	backoffMax = 10 * time.Second
	// keepaliveEvery throttles the keepalives handed for transactions
	// without tracked changes.
	keepaliveEvery = 100 * time.Millisecond
	// fenceMargin is added to two heartbeats to make how long a
	// registration with our server_id may linger (our own killed reader's:
	// the server notices the dead connection when its second heartbeat
	// cannot be written) before it counts as another reader's.
	fenceMargin = 2 * time.Second
	// eventCache is how many parsed events go-mysql buffers ahead of the
	// handler; each holds up to a rows event (8 KiB by default).
	eventCache = 256
)

// Source follows one MySQL or MariaDB bind through its binary log. It
// implements [tracker.Source] and [tracker.LagReporter].
type Source struct {
	bind     binds.Bind
	opts     tracker.SourceOptions
	log      *slog.Logger
	conn     *connConfig
	db       *sql.DB
	info     *serverInfo
	identity string
	// openPos is the server's binlog end when the source was opened: where
	// a bind without a checkpoint starts, so that every transaction that
	// commits after Open returns is read.
	openPos   position
	filter    *tableFilter
	heartbeat time.Duration
	// collations maps collation ids to charset names.
	collations map[uint64]string

	mu        sync.Mutex
	running   bool
	closed    bool
	released  bool
	confirmed position
	hasConf   bool
	// newest is the newest commit handed over.
	newest     position
	newestTime time.Time
	// lagMu guards the server end position cache for Lag.
	lagMu  sync.Mutex
	endAt  time.Time
	endPos binlogStatus
	endErr error

	// dumpConnID is the server thread id of the binlog connection (tests
	// kill it).
	dumpConnID atomic.Uint32
}

var (
	_ tracker.Source         = (*Source)(nil)
	_ tracker.LagReporter    = (*Source)(nil)
	_ tracker.OpenSourceFunc = Open
	_ tracker.CheckFunc      = Check
)

// Open connects to a MySQL/MariaDB bind's server, checks that it can be
// followed (the checks of [Check]), and returns its source. Unfixable
// problems (credentials, privileges, server settings, a mariadb:// URI at a
// MySQL server) match [tracker.ErrConfig]; another reader already using the
// bind's server_id matches [tracker.ErrFenced]. It implements
// [tracker.OpenSourceFunc].
func Open(ctx context.Context, b binds.Bind, opts tracker.SourceOptions) (tracker.Source, error) {
	s, err := open(ctx, b, opts)
	if err != nil {
		return nil, fmt.Errorf("mysql: %w", err) // the tracker names the bind
	}
	return s, nil
}

func open(ctx context.Context, b binds.Bind, opts tracker.SourceOptions) (*Source, error) {
	if b.Kind != "" && b.Kind != binds.MySQL {
		return nil, tracker.ConfigError(fmt.Errorf("a %s bind cannot be read by the MySQL source", b.Kind))
	}
	if b.ServerID == 0 {
		return nil, tracker.ConfigError(errors.New("server_id is 0: the binlog reader needs a non-zero server_id"))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cc, err := newConnConfig(b.URI)
	if err != nil {
		return nil, tracker.ConfigError(err)
	}
	if len(cc.ignored) > 0 {
		log.Debug("mysql: ignoring URI options", "options", strings.Join(cc.ignored, ","))
	}
	db, err := openPool(cc, b.Pool, log)
	if err != nil {
		return nil, tracker.ConfigError(err)
	}
	s := &Source{bind: b, opts: opts, log: log, conn: cc, db: db, filter: newTableFilter(b)}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Source) init(ctx context.Context) error {
	qctx, cancel := withTimeout(ctx, s.bind.Pool)
	defer cancel()
	si, err := probe(qctx, s.db, s.conn.db)
	if err != nil {
		return fmt.Errorf("connect %s: %w", s.conn.where(), classifyConnect(err, s.conn))
	}
	s.info = si
	var problems []error
	for _, r := range prerequisites(si, s.bind) {
		switch {
		case r.OK:
			if r.Fix != "" && r.Name != "reader server_id" {
				s.log.Warn("mysql: "+r.Detail, "check", r.Name, "fix", r.Fix)
			}
		default:
			problems = append(problems, fmt.Errorf("%s: %s; fix: %s", r.Name, r.Detail, r.Fix))
		}
	}
	if len(problems) > 0 {
		return tracker.ConfigError(fmt.Errorf("server %s is not ready for binlog replication: %w", s.conn.addr(), errors.Join(problems...)))
	}
	s.heartbeat = s.bind.Heartbeat
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}
	if _, held := holder(si.replicas, s.bind.ServerID); held {
		// Wait a moment: it may be our own reader's, just killed.
		if err := s.waitFence(ctx); err != nil {
			return err
		}
	}
	if s.openPos, err = s.currentPosition(ctx); err != nil {
		return tracker.ConfigError(fmt.Errorf("on %s: %w", s.conn.addr(), err))
	}
	s.collations, err = loadCollations(qctx, s.db)
	if err != nil {
		return fmt.Errorf("read collations: %w", err)
	}
	if si.mariadb {
		s.identity = "mariadb/" + strconv.FormatUint(uint64(si.serverID), 10) + "/" + si.hostname + ":" + strconv.Itoa(si.port) + "/" + s.conn.db
	} else {
		s.identity = "mysql/" + si.uuid + "/" + s.conn.db
	}
	return nil
}

// waitFence waits until no reader with our server_id is registered, up to
// two heartbeats and a margin (as long as a killed reader of ours can stay
// registered), and returns an error matching tracker.ErrFenced if one stays.
func (s *Source) waitFence(ctx context.Context) error {
	deadline := time.Now().Add(2*s.heartbeat + fenceMargin)
	for {
		qctx, cancel := withTimeout(ctx, s.bind.Pool)
		rs, err := listReplicas(qctx, s.db)
		cancel()
		if err != nil {
			return nil // cannot tell; the server will
		}
		r, held := holder(rs, s.bind.ServerID)
		if !held {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: another binlog reader with server_id %d is connected to %s from %s; give each reader its own server_id, or stop the other one", tracker.ErrFenced, s.bind.ServerID, s.conn.addr(), r.host)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// loadCollations maps collation ids to charset names.
func loadCollations(ctx context.Context, db *sql.DB) (map[uint64]string, error) {
	m := map[uint64]string{}
	read := func(q string) error {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id sql.NullInt64
			var cs sql.NullString
			if err := rows.Scan(&id, &cs); err != nil {
				rows.Close()
				return err
			}
			if id.Valid && cs.Valid {
				m[uint64(id.Int64)] = cs.String
			}
		}
		return errors.Join(rows.Err(), rows.Close())
	}
	if err := read(`SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS`); err != nil {
		return nil, err
	}
	// MariaDB 10.10+ lists collations shared by several charsets here.
	_ = read(`SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY`)
	return m, nil
}

// Identity names the server and database: "mysql/<server_uuid>/<database>"
// for MySQL, "mariadb/<server_id>/<hostname>:<port>/<database>" for
// MariaDB, which has no server UUID.
func (s *Source) Identity() string { return s.identity }

// Flavor is "mysql" or "mariadb", as read from the server.
func (s *Source) Flavor() string { return s.info.flavor() }

// Confirm records that everything up to pos is durable downstream. MySQL
// has no replication acknowledgement, so it only feeds Lag.
func (s *Source) Confirm(pos string) {
	p, err := parsePosition(pos)
	if err != nil {
		s.log.Debug("mysql: ignoring confirmation of a foreign position", "pos", pos)
		return
	}
	s.mu.Lock()
	s.confirmed, s.hasConf = p, true
	s.mu.Unlock()
}

// before reports whether a is strictly before b in binlog order.
func before(a, b position) bool {
	if a.File != b.File {
		if len(a.File) != len(b.File) {
			return len(a.File) < len(b.File)
		}
		return a.File < b.File
	}
	return a.Pos < b.Pos
}

// handed records a commit (t non-zero) or keepalive handed to the tracker.
func (s *Source) handed(p position, t time.Time) {
	if t.IsZero() {
		return
	}
	s.mu.Lock()
	s.newest, s.newestTime = p, t
	s.mu.Unlock()
}

// Lag reports the bytes between the server's binlog end and the confirmed
// position (-1 when they are in different files or unknown), and the time
// since the commit of the newest transaction handed over but not yet
// confirmed. The server's end position is read at most once a second, and
// never while holding what Confirm needs.
func (s *Source) Lag() tracker.Lag {
	lag := tracker.Lag{Bytes: -1}
	s.mu.Lock()
	if !s.newestTime.IsZero() && (!s.hasConf || before(s.confirmed, s.newest)) {
		lag.Behind = time.Since(s.newestTime)
	}
	confirmed, hasConf, released := s.confirmed, s.hasConf, s.released
	s.mu.Unlock()
	if !hasConf || released {
		return lag
	}
	s.lagMu.Lock()
	defer s.lagMu.Unlock()
	if time.Since(s.endAt) > time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.endPos, s.endErr = masterStatus(ctx, s.db)
		cancel()
		s.endAt = time.Now()
	}
	if s.endErr == nil && s.endPos.file == confirmed.File {
		lag.Bytes = max(int64(s.endPos.pos)-int64(confirmed.Pos), 0)
	}
	return lag
}

// Close releases the query pool if Run was never called. It is idempotent.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.running || s.released {
		return nil
	}
	s.released = true
	return s.db.Close()
}

func (s *Source) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.released {
		s.released = true
		s.db.Close()
	}
}

// Run streams the binlog to h from position from (empty: the server's
// current position), until ctx ends or a fatal error. Lost connections
// (KILL, server restart, idle timeouts, a dead TCP connection noticed by
// the heartbeat) are reconnected with a jittered backoff from 100 ms to
// 10 s, resuming at the end of the last transaction whose commit was
// handed over, so an open transaction is sent again from its start. Fatal
// errors: h's errors, configuration errors, binlogs purged past the
// position (tracker.ErrResnapshotRequired), another reader with our
// server_id (tracker.ErrFenced), and undecodable events.
func (s *Source) Run(ctx context.Context, from string, h tracker.Handler) error {
	s.mu.Lock()
	if s.running || s.closed || s.released {
		s.mu.Unlock()
		return fmt.Errorf("mysql: bind %q: Run after Close or a second Run", s.bind.Key)
	}
	s.running = true
	s.mu.Unlock()
	defer s.release()
	err := s.run(ctx, from, h)
	if err == nil || ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return ctx.Err()
	}
	return fmt.Errorf("mysql: %w", err) // the tracker names the bind
}

func (s *Source) run(ctx context.Context, from string, h tracker.Handler) error {
	var start position
	if from == "" {
		start = s.openPos
		s.log.Info("mysql: no checkpoint, starting at the binlog position trackerd opened the bind at", "pos", start.String())
		// Hand the start over before reading anything: the tracker makes it
		// the bind's first checkpoint, so that a stop before the first commit
		// resumes here rather than at the then-current position (the binlog,
		// unlike a replication slot, keeps no position for us).
		if err := h.Handle(ctx, tracker.Record{Kind: tracker.RecordKeepalive, Pos: start.String()}); err != nil {
			return err
		}
	} else {
		p, err := parsePosition(from)
		if err != nil {
			return err
		}
		start = p
	}
	st, err := newStream(s, h, start)
	if err != nil {
		return err
	}
	delay := backoffMin
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := s.waitFence(ctx); err != nil {
				return err
			}
		}
		if err := s.checkResumable(ctx, st.pos); err != nil {
			return err
		}
		progressed, err := st.run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var herr *handlerError
		if errors.As(err, &herr) {
			return herr.err
		}
		var derr *decodeError
		if errors.As(err, &derr) {
			return err
		}
		fatal, err := classifyStream(err, s.conn, s.bind.ServerID)
		if fatal {
			err = fmt.Errorf("at %s: %w", st.pos.String(), err)
			return err
		}
		if progressed {
			delay = backoffMin
		}
		wait := delay/2 + rand.N(delay/2+1)
		s.log.Warn("mysql: binlog connection lost; reconnecting", "err", err.Error(), "in", wait.Round(time.Millisecond), "from", st.pos.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		delay = min(delay*2, backoffMax)
	}
}

// currentPosition is the server's binlog end, with its GTID state.
//
// MySQL reports both in one statement. MariaDB's GTID position is read
// first, from @@gtid_binlog_pos, and the file and position after it: a
// transaction committing in between is then read again rather than
// skipped. (BINLOG_GTID_POS(file, pos) would pair them exactly, but it
// scans the binlog file from its start: seconds for a large file.)
func (s *Source) currentPosition(ctx context.Context) (position, error) {
	qctx, cancel := withTimeout(ctx, s.bind.Pool)
	defer cancel()
	var gtid sql.NullString
	var err error
	if s.info.mariadb {
		err = s.db.QueryRowContext(qctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&gtid)
	}
	var st binlogStatus
	if err == nil {
		st, err = masterStatus(qctx, s.db)
	}
	if s.info.mariadb {
		st.gtid = gtid.String
	}
	if err != nil {
		return position{}, fmt.Errorf("read the current binlog position: %w", classifyConnect(err, s.conn))
	}
	p := position{GTID: st.gtid, File: st.file, Pos: st.pos}
	if !s.info.gtidMode() {
		p.GTID = ""
	}
	return p, nil
}

// checkResumable fails with tracker.ErrResnapshotRequired when the server
// no longer has the binlog to resume from: the position's file is gone
// (reading by file and position), or MySQL has purged GTIDs the position
// lacks (reading by GTID). Where the server cannot be asked, the dump
// command's own error 1236 says the same.
func (s *Source) checkResumable(ctx context.Context, p position) error {
	qctx, cancel := withTimeout(ctx, s.bind.Pool)
	defer cancel()
	if s.useGTID(p) {
		if s.info.mariadb {
			return nil
		}
		var purged string
		if err := s.db.QueryRowContext(qctx, "SELECT @@GLOBAL.gtid_purged").Scan(&purged); err != nil {
			return nil
		}
		have, err := parseMySQLSet(p.GTID)
		if err != nil {
			return err
		}
		gone, err := parseMySQLSet(purged)
		if err != nil {
			return nil
		}
		if g, missing := have.missing(gone); missing {
			return fmt.Errorf("%w: the server purged GTID %s, which the checkpoint %s has not seen (gtid_purged is %s)",
				tracker.ErrResnapshotRequired, g, p.String(), purged)
		}
		return nil
	}
	rows, err := s.db.QueryContext(qctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil
	}
	var files []string
	cols, _ := rows.Columns()
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err == nil && len(vals) > 0 {
			files = append(files, string(vals[0]))
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil || len(files) == 0 {
		return nil
	}
	for _, f := range files {
		if f == p.File {
			return nil
		}
	}
	return fmt.Errorf("%w: binlog %s of the checkpoint %s is no longer on the server (purged; the oldest is %s)",
		tracker.ErrResnapshotRequired, p.File, p.String(), files[0])
}

// useGTID reports whether a stream from p starts by GTID.
func (s *Source) useGTID(p position) bool {
	return p.GTID != "" && s.info.gtidMode()
}

// handlerError marks an error returned by the Handler: fatal, returned
// as it is.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// decodeError marks an event trackerd could not decode: fatal.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }
