package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// Tunables of the binlog reader.
const (
	// defaultHeartbeat is the heartbeat the reader asks for when the bind
	// sets none: the server sends one after this much idle time, so that a
	// dead connection is noticed within readTimeoutFactor of it.
	defaultHeartbeat  = 5 * time.Second
	readTimeoutFactor = 3
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
// implements [tracker.Source], [tracker.LagReporter], [tracker.Adopter],
// and on MariaDB [tracker.Snapshotter] and [tracker.Nudger] (snapshot.go).
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

	mu       sync.Mutex
	running  bool
	closed   bool
	released bool
	// confirmed is the last position passed to Confirm, or Run's start.
	confirmed position
	hasConf   bool
	// lagMu guards the server end position cache for Lag.
	lagMu  sync.Mutex
	endAt  time.Time
	endPos binlogStatus
	endErr error

	// dumpConnID is the server thread id of the binlog connection (tests
	// kill it).
	dumpConnID atomic.Uint32
	// nudge wakes the stream's wait for the next event (see Nudge); nil
	// when no stream waits.
	nudge atomic.Pointer[context.CancelFunc]
}

var (
	_ tracker.Source          = (*Source)(nil)
	_ tracker.LagReporter     = (*Source)(nil)
	_ tracker.Adopter         = (*Source)(nil)
	_ tracker.StartPositioner = (*Source)(nil)
	_ tracker.OpenSourceFunc  = Open
	_ tracker.CheckFunc       = Check
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

// Lag reports the bytes between the server's binlog end and the confirmed
// position (Run's start until the first Confirm; -1 when they are in
// different files, or before Run). Behind is the tracker's (see
// [tracker.Lag]). The server's end position is read at most once a second,
// and never while holding what Confirm needs.
func (s *Source) Lag() tracker.Lag {
	lag := tracker.Lag{Bytes: -1}
	s.mu.Lock()
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
// 10 s (srckit.Loop, which reports the state through SourceOptions.Report),
// resuming at the end of the last transaction whose commit was
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

// StartPosition implements tracker.StartPositioner: the binlog's end when
// the source was opened, where a bind without a checkpoint starts.
func (s *Source) StartPosition() string { return s.openPos.String() }

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
	start = s.withGTIDState(ctx, start)
	st, err := newStream(s, h, start)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if !s.hasConf {
		s.confirmed, s.hasConf = start, true // the server keeps nothing for us before it
	}
	s.mu.Unlock()
	attempt := 0
	session := func(ctx context.Context, up func(string)) (bool, error) {
		if attempt++; attempt > 1 {
			if err := s.waitFence(ctx); err != nil {
				return false, err
			}
		}
		if err := s.checkResumable(ctx, st.pos); err != nil {
			return false, srckit.Permanent(err)
		}
		progressed, err := st.run(ctx, up)
		if srckit.IsPermanent(err) || ctx.Err() != nil {
			return progressed, err // the handler's, or an undecodable event
		}
		if err = classifyStream(err, s.conn, s.bind.ServerID); srckit.IsPermanent(err) {
			err = fmt.Errorf("at %s: %w", st.pos.String(), err)
		}
		return progressed, err
	}
	return srckit.Loop(ctx, session, srckit.IsPermanent, s.streamState)
}

// streamState reports the binlog stream's state (see srckit.Loop) and logs
// it at debug level: the tracker logs the transitions.
func (s *Source) streamState(st tracker.SourceStatus) {
	attrs := []any{"state", st.State}
	if st.Position != "" {
		attrs = append(attrs, "position", st.Position)
	}
	if st.Err != nil {
		attrs = append(attrs, "err", st.Err.Error(), "detail", st.Detail)
	}
	s.log.Debug("mysql: binlog stream", attrs...)
	if s.opts.Report != nil {
		s.opts.Report(st)
	}
}

// currentPosition is the server's binlog end, with its GTID state.
//
// MySQL reports both in one statement. MariaDB's GTID position,
// @@gtid_binlog_pos, is read before and after the file and position: when
// both reads agree, no transaction was logged in between and the three
// belong together. After a few tries that disagree (a busy server),
// BINLOG_GTID_POS(file, pos) pairs them, at the cost of reading the
// binlog file up to pos.
func (s *Source) currentPosition(ctx context.Context) (position, error) {
	qctx, cancel := withTimeout(ctx, s.bind.Pool)
	defer cancel()
	var st binlogStatus
	var err error
	if s.info.mariadb {
		st, err = s.mariadbStatus(qctx)
	} else {
		st, err = masterStatus(qctx, s.db)
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

// mariadbStatus reads MariaDB's binlog end and the GTID position there.
func (s *Source) mariadbStatus(ctx context.Context) (binlogStatus, error) {
	var st binlogStatus
	for try := 0; try < 5; try++ {
		var g1, g2 sql.NullString
		if err := s.db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&g1); err != nil {
			return st, err
		}
		var err error
		if st, err = masterStatus(ctx, s.db); err != nil {
			return st, err
		}
		if err := s.db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&g2); err != nil {
			return st, err
		}
		if g1 == g2 {
			st.gtid = g1.String
			return st, nil
		}
	}
	g, err := binlogGTIDPos(ctx, s.db, st.file, st.pos)
	if err == nil && !g.Valid {
		err = fmt.Errorf("BINLOG_GTID_POS(%q, %d) is NULL", st.file, st.pos)
	}
	st.gtid = g.String
	return st, err
}

// binlogGTIDPos asks MariaDB for the GTID position at file:pos, NULL when
// pos is not the start of an event in file (or file is not on the server).
// It reads the file from its start up to pos.
func binlogGTIDPos(ctx context.Context, db *sql.DB, file string, pos uint32) (sql.NullString, error) {
	var g sql.NullString
	err := db.QueryRowContext(ctx, "SELECT BINLOG_GTID_POS(?, ?)", file, pos).Scan(&g)
	return g, err
}

// checkResumable fails with tracker.ErrResnapshotRequired when the server
// no longer has the binlog to resume from: the file to resume at is gone
// (reading by file and position), MariaDB's binlog does not hold the
// position's GTID state at its file and offset (reset, or replaced), or
// MySQL has purged GTIDs the position lacks (reading by GTID). Where the
// server cannot be asked, the dump command's own error 1236 says the same.
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
		resume, err := resumeGTIDSet(false, p)
		if err != nil {
			return err
		}
		have, err := parseMySQLSet(resume)
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
	files, err := binaryLogs(qctx, s.db)
	if err != nil || len(files) == 0 {
		return nil
	}
	at := p.resumeAt()
	if _, ok := files.size(at.File); !ok {
		return fmt.Errorf("%w: binlog %s of the checkpoint %s is no longer on the server (purged; the oldest is %s)",
			tracker.ErrResnapshotRequired, at.File, p.String(), files[0].name)
	}
	if s.info.mariadb {
		why, err := s.gtidMismatch(qctx, p, files)
		if err != nil {
			s.log.Debug("mysql: cannot check the position's GTID state", "err", err)
		}
		if why != "" {
			return fmt.Errorf("%w: the checkpoint %s is not in this server's binlog: %s", tracker.ErrResnapshotRequired, p.String(), why)
		}
	}
	return nil
}

// binlogFile is a binary log as SHOW BINARY LOGS lists it.
type binlogFile struct {
	name string
	size int64
}

type binlogFiles []binlogFile

func (fs binlogFiles) size(name string) (int64, bool) {
	for _, f := range fs {
		if f.name == name {
			return f.size, true
		}
	}
	return 0, false
}

// binaryLogs lists the server's binary logs, oldest first.
func binaryLogs(ctx context.Context, db *sql.DB) (binlogFiles, error) {
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, err
	}
	var files binlogFiles
	cols, _ := rows.Columns()
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err == nil && len(vals) > 0 {
			f := binlogFile{name: string(vals[0]), size: -1}
			if len(vals) > 1 {
				if n, err := strconv.ParseInt(string(vals[1]), 10, 64); err == nil {
					f.size = n
				}
			}
			files = append(files, f)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	return files, nil
}

// gtidMismatch checks a MariaDB position against the server's binlog
// (files): its file must be there, its offset within it, and the GTID
// position BINLOG_GTID_POS reports at that offset must be the position's
// GTID state. It returns why not, "" when it is; err when the server could
// not be asked. BINLOG_GTID_POS reads the file from its start up to the
// offset, at most max_binlog_size (1 GiB by default; 256 MB took 0.15 s
// here): what the server itself read on every connection by GTID, which
// trackerd made until it resumed MariaDB by file and offset.
func (s *Source) gtidMismatch(ctx context.Context, p position, files binlogFiles) (string, error) {
	if p.File == "" {
		return "", nil
	}
	size, ok := files.size(p.File)
	if !ok {
		if len(files) == 0 {
			return fmt.Sprintf("binlog %s is not on the server, which lists none", p.File), nil
		}
		return fmt.Sprintf("binlog %s is not on the server (it has %s to %s)", p.File, files[0].name, files[len(files)-1].name), nil
	}
	if size >= 0 && int64(p.Pos) > size {
		return fmt.Sprintf("offset %d is past the end of %s (%d bytes)", p.Pos, p.File, size), nil
	}
	g, err := binlogGTIDPos(ctx, s.db, p.File, p.Pos)
	if err != nil {
		return "", err
	}
	if !g.Valid {
		return fmt.Sprintf("offset %d of %s is not the start of an event", p.Pos, p.File), nil
	}
	if p.GTID == "" {
		return "", nil // a position written by hand: see withGTIDState
	}
	have, err1 := parseMariaDBPos(g.String)
	want, err2 := parseMariaDBPos(p.GTID)
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("GTID position %q or %q unreadable", g.String, p.GTID), nil
	}
	if have.String() != want.String() {
		return fmt.Sprintf("the server's GTID position at %s:%d is %q, the checkpoint's %q: another server's binlog, or this server's binlog was reset",
			p.File, p.Pos, have.String(), want.String()), nil
	}
	return "", nil
}

// adoptTimeout bounds the checks of Adopt.
const adoptTimeout = 2 * time.Minute

// identityParts are the parts of a source identity (see Identity).
type identityParts struct {
	flavor string
	server string // MariaDB server_id, MySQL server_uuid
	host   string // MariaDB @@hostname:@@port
	db     string
}

// parseIdentity splits an identity made by init.
func parseIdentity(id string) (identityParts, bool) {
	flavor, rest, ok := strings.Cut(id, "/")
	if !ok {
		return identityParts{}, false
	}
	var ip identityParts
	ip.flavor = flavor
	switch flavor {
	case "mariadb":
		var ok1, ok2 bool
		ip.server, rest, ok1 = strings.Cut(rest, "/")
		ip.host, ip.db, ok2 = strings.Cut(rest, "/")
		return ip, ok1 && ok2
	case "mysql":
		ip.server, ip.db, ok = strings.Cut(rest, "/")
		return ip, ok
	}
	return identityParts{}, false
}

// Adopt implements [tracker.Adopter]: it recognises a checkpoint of this
// bind written under another identity of the same server. A MariaDB
// identity holds the server's @@hostname, which a recreated container
// changes (its data, binlog and server_id stay); the hostname stays in the
// identity because it tells apart servers that share a server_id (1 is
// every MariaDB's default), whose transactions share GTIDs.
//
// It returns tracker.ErrOtherSource unless cp's identity has this
// source's flavor, server (MariaDB server_id; MySQL server_uuid, which
// survives a recreated container since it lives in the data directory) and
// database; then nil when cp's position is in this server's binlog (its
// file is there, and BINLOG_GTID_POS at its offset is its GTID state, so
// it is the same history, not a reset binlog or another server with the
// same server_id), else an error saying why it cannot be resumed.
func (s *Source) Adopt(ctx context.Context, cp tracker.Checkpoint) error {
	me, _ := parseIdentity(s.identity)
	other, ok := parseIdentity(cp.Source)
	if !ok || other.flavor != me.flavor || other.server != me.server || other.db != me.db {
		return tracker.ErrOtherSource
	}
	p, err := parsePosition(cp.Position)
	if err != nil {
		return fmt.Errorf("its position is unreadable: %w", err)
	}
	qctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	if !s.info.mariadb {
		return s.checkResumable(qctx, p)
	}
	files, err := binaryLogs(qctx, s.db)
	if err != nil {
		return fmt.Errorf("cannot list this server's binlogs to check its position: %w", err)
	}
	at := p.resumeAt()
	if _, ok := files.size(at.File); !ok && at.File != p.File {
		return fmt.Errorf("binlog %s, where its oldest prepared XA transaction starts, is not on this server", at.File)
	}
	why, err := s.gtidMismatch(qctx, p, files)
	if err != nil {
		return fmt.Errorf("cannot check its position in this server's binlog: %w", err)
	}
	if why != "" {
		return errors.New(why)
	}
	s.log.Info("mysql: the checkpoint of the former identity is in this server's binlog", "former", cp.Source, "position", cp.Position)
	return nil
}

// withGTIDState fills in the GTID state of a MariaDB position that has a
// file and offset but no GTIDs (written by hand): the server's GTID
// position there, which transaction keys depend on (see openTx).
func (s *Source) withGTIDState(ctx context.Context, p position) position {
	if !s.info.mariadb || p.GTID != "" || p.File == "" {
		return p
	}
	qctx, cancel := withTimeout(ctx, s.bind.Pool)
	defer cancel()
	if g, err := binlogGTIDPos(qctx, s.db, p.File, p.Pos); err == nil && g.Valid {
		p.GTID = g.String
	}
	return p
}

// useGTID reports whether a stream from p starts by GTID: on MySQL with
// gtid_mode=ON, whose GTID sets are exact. MariaDB resumes by file and
// offset: without gtid_strict_mode (its default) a domain's sequence
// numbers need not grow, and asking the server to resume after a GTID
// that is lower than an earlier one replays or fails. A MariaDB position
// without a file (written by hand) is resumed by GTID.
func (s *Source) useGTID(p position) bool {
	return p.GTID != "" && s.info.gtidMode() && (!s.info.mariadb || p.File == "")
}
