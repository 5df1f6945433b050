package mysql

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// MariaDB GTID event flags go-mysql does not name.
const (
	mariadbFlPreparedXA  = 64
	mariadbFlCompletedXA = 128
)

// stream turns binlog events into records, one connection at a time, and
// keeps the position to resume from across connections.
type stream struct {
	s      *Source
	h      tracker.Handler
	log    *slog.Logger
	schema *schemaCache
	escape bool
	source string // Change.Source: "mysql" or "mariadb"

	// gtids and pos are the resume point: the GTID state through, and the
	// binlog offset just after, the last transaction handed over (or
	// passed without tracked changes), with the XA transactions prepared
	// and not yet completed by then. pos only moves forward.
	gtids gtidState
	pos   position
	// byGTID is set when the stream resumes by GTID set (MySQL with
	// gtid_mode=ON): a transaction was handed over when its GTID is in
	// gtids. Otherwise (MariaDB, MySQL without GTIDs) when it starts before
	// pos.
	byGTID bool
	// file is the binlog file being read.
	file string
	// fde describes the events of the current file.
	checksum    bool
	headerLens  []byte
	inPayload   bool
	tables      map[uint64]*tableInfo
	tx          txState
	pending     pendingGTID
	ddl         ddlBoundary
	keepalive   bool // a keepalive for pos is due
	lastKA      time.Time
	kaEvery     time.Duration
	progressed  bool
	dec         rowDecoder // its buffer is reused from rows event to rows event
	posBuf      []byte
	warnedStmtN int
}

// ddlBoundary is a standalone statement whose end is not yet handed over.
type ddlBoundary struct {
	set   bool
	g     gtid
	start uint32
	file  string
	end   uint32
}

// pendingGTID is a GTID event waiting for the BEGIN or DDL it announces.
type pendingGTID struct {
	set        bool
	g          gtid
	start      uint32
	commitTime time.Time
	standalone bool
}

// txState is the transaction being read.
type txState struct {
	open  bool
	began bool // RecordBegin handed
	// skip is set for a transaction handed over before (read again after
	// resuming at the start of an older prepared XA transaction).
	skip bool
	// xa is set for an XA transaction's prepared part, handed over as a
	// streamed transaction that its XA COMMIT commits later.
	xa bool
	// again is set for a prepared XA transaction of the position's list,
	// handed over again (its events carry the same ids): its end does not
	// move the position.
	again bool
	// file and start are where the group starts.
	file  string
	start uint32
	// rows counts the rows of the transaction read so far, of every table,
	// tracked or not: the Index of its next change.
	rows       int64
	g          gtid
	key, id    string
	commitTime time.Time // exact commit time, when the GTID event has it
}

func newStream(s *Source, h tracker.Handler, start position) (*stream, error) {
	gs, err := newGTIDState(s.info.mariadb, start.GTID)
	if err != nil {
		return nil, err
	}
	st := &stream{
		s: s, h: h, log: s.log,
		escape:  !s.opts.NativeUnicode,
		source:  s.info.flavor(),
		gtids:   gs,
		pos:     start,
		byGTID:  !s.info.mariadb && s.info.gtidMode(),
		file:    start.File,
		tables:  map[uint64]*tableInfo{},
		kaEvery: keepaliveEvery,
	}
	st.schema = newSchemaCache(s.filter, s.info.mariadb, s.collations, st.fetchInfo)
	return st, nil
}

func (st *stream) fetchInfo(ctx context.Context, db, table string) (*infoTable, error) {
	qctx, cancel := withTimeout(ctx, st.s.bind.Pool)
	defer cancel()
	return fetchInfo(st.s.db, st.s.info.mariadb)(qctx, db, table)
}

// run reads one binlog connection until it fails or ctx ends, calling up
// once the server streams. progressed says whether a transaction boundary
// was passed.
func (st *stream) run(ctx context.Context, up func(from string)) (progressed bool, err error) {
	s := st.s
	cfg := replication.BinlogSyncerConfig{
		ServerID:         s.bind.ServerID,
		Flavor:           s.info.flavor(),
		User:             s.conn.user,
		Password:         s.conn.password,
		TLSConfig:        s.conn.tls,
		HeartbeatPeriod:  s.heartbeat,
		ReadTimeout:      readTimeoutFactor * s.heartbeat,
		DisableRetrySync: true,
		// Never reconnect on its own: a GTID reconnect can replay a
		// transaction without saying so.
		MaxReconnectAttempts: 1,
		VerifyChecksum:       true,
		DiscardGTIDSet:       true,
		EventCacheCount:      eventCache,
		Logger:               slog.New(demoteHandler{st.log.Handler()}),
		// Rows are decoded by trackerd from the raw event; go-mysql only
		// resolves the header and table.
		RowsEventDecodeFunc: func(e *replication.RowsEvent, data []byte) error {
			_, err := e.DecodeHeader(data)
			return err
		},
	}
	if s.conn.socket != "" {
		cfg.Host = s.conn.socket
	} else {
		cfg.Host = s.conn.host
		cfg.Port = uint16(s.conn.port)
	}
	syncer := replication.NewBinlogSyncer(cfg)
	defer syncer.Close()

	st.tx = txState{}
	st.pending = pendingGTID{}
	st.ddl = ddlBoundary{}
	clear(st.tables)
	st.file = st.pos.File
	st.progressed = false
	var streamer *replication.BinlogStreamer
	at := st.pos.resumeAt()
	from := at.String()
	if s.useGTID(st.pos) {
		var set gm.GTIDSet
		resume, err := resumeGTIDSet(s.info.mariadb, st.pos)
		if err == nil {
			if s.info.mariadb {
				set, err = gm.ParseMariadbGTIDSet(resume)
			} else {
				set, err = gm.ParseMysqlGTIDSet(resume)
			}
		}
		if err != nil {
			return false, srckit.Permanent(fmt.Errorf("bad GTID set %q: %w", st.pos.GTID, err))
		}
		from = "GTID set " + resume
		streamer, err = syncer.StartSyncGTID(set)
	} else {
		streamer, err = syncer.StartSync(gm.Position{Name: at.File, Pos: at.Pos})
	}
	if err != nil {
		return false, fmt.Errorf("start binlog dump from %s: %w", st.pos.String(), err)
	}
	s.dumpConnID.Store(syncer.LastConnectionID())
	up(st.pos.String())
	if len(st.pos.XA) > 0 {
		s.log.Info("mysql: binlog dump started", "from", from, "position", st.pos.String(), "prepared_xa", len(st.pos.XA), "server_id", s.bind.ServerID)
	} else {
		s.log.Info("mysql: binlog dump started", "from", from, "server_id", s.bind.ServerID)
	}
	// Nudge cancels the wait for the next event (never an event's
	// handling): the stream then hands a keepalive if it is between
	// transactions.
	wctx, wcancel := context.WithCancel(ctx)
	s.nudge.Store(&wcancel)
	defer func() {
		s.nudge.Store(nil)
		wcancel()
	}()
	for {
		ev, err := streamer.GetEvent(wctx)
		if err != nil {
			if ctx.Err() == nil && wctx.Err() != nil {
				wctx, wcancel = context.WithCancel(ctx)
				s.nudge.Store(&wcancel)
				if err := st.nudged(ctx); err != nil {
					return st.progressed, err
				}
				continue
			}
			return st.progressed, err
		}
		if err := st.handle(ctx, ev); err != nil {
			return st.progressed, err
		}
	}
}

// nudged hands a keepalive with the position when the stream is between
// transactions: every transaction that ends at or before it was handed
// over. Inside a transaction, or before a DDL whose end is not yet known,
// the next boundary hands one.
func (st *stream) nudged(ctx context.Context) error {
	if st.tx.open || st.ddl.set || st.pending.set || st.pos.File == "" {
		return nil
	}
	return st.sendKeepalive(ctx)
}

// passNonGroup moves the position past an event that belongs to no
// transaction (a new file's format description and GTID list, MariaDB's
// binlog checkpoints, MySQL's previous GTIDs), so that it reaches the
// binlog's end (where a snapshot's position may lie) without waiting for
// the next transaction. A keepalive for it is due.
func (st *stream) passNonGroup(ev *replication.BinlogEvent) {
	if st.tx.open || st.pending.set || st.ddl.set || st.inPayload || ev.Header.LogPos == 0 ||
		ev.Header.Flags&replication.LOG_EVENT_ARTIFICIAL_F != 0 || st.file == "" {
		return
	}
	if st.moveTo(st.file, ev.Header.LogPos, gtid{}) {
		st.keepalive = true
	}
}

// handle processes one event. Panics while decoding become errors naming
// the bind and the position.
func (st *stream) handle(ctx context.Context, ev *replication.BinlogEvent) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = srckit.Permanent(fmt.Errorf("decode %s at %s:%d: panic: %v", ev.Header.EventType, st.file, st.startPos(ev), r))
		}
	}()
	if st.ddl.set {
		if _, ok := ev.Event.(*replication.TableMapEvent); ok && !st.tx.open {
			// Rows of the statement's own transaction (CREATE ... SELECT).
			st.pending = pendingGTID{set: true, g: st.ddl.g, start: st.ddl.start}
			st.ddl = ddlBoundary{}
			st.openTx(ev)
		} else if err := st.finishDDL(ctx); err != nil {
			return err
		}
	}
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		st.file = string(e.NextLogName)
		if ev.Header.Flags&replication.LOG_EVENT_ARTIFICIAL_F == 0 && ev.Header.Timestamp != 0 && !st.tx.open {
			// A real rotation: the next file's start is the same point.
			if st.moveTo(st.file, uint32(e.Position), gtid{}) {
				st.keepalive = true
			}
		}
	case *replication.FormatDescriptionEvent:
		st.checksum = e.ChecksumAlgorithm == replication.BINLOG_CHECKSUM_ALG_CRC32
		st.headerLens = e.EventTypeHeaderLengths
		st.passNonGroup(ev)
	case *replication.MariadbGTIDListEvent, *replication.MariadbBinlogCheckPointEvent, *replication.PreviousGTIDsEvent:
		st.passNonGroup(ev)
	case *replication.HeartbeatEvent:
		if st.keepalive && !st.tx.open {
			return st.sendKeepalive(ctx)
		}
	case *replication.GtidTaggedLogEvent:
		st.mysqlGTID(ev, &e.GTIDEvent, e.Tag.String())
	case *replication.GTIDEvent:
		st.mysqlGTID(ev, e, "")
	case *replication.MariadbGTIDEvent:
		return st.mariadbGTID(ctx, ev, e)
	case *replication.QueryEvent:
		return st.query(ctx, ev, e)
	case *replication.TableMapEvent:
		ti, err := st.schema.table(ctx, e, ev.RawData[replication.EventHeaderSize:])
		if err != nil {
			return srckit.Permanent(fmt.Errorf("at %s: %w", st.posOf(ev), err))
		}
		st.tables[e.TableID] = ti
	case *replication.RowsEvent:
		err := st.rows(ctx, ev, e)
		if e.Flags&replication.RowsEventStmtEndFlag != 0 {
			// The next statement maps its tables again.
			clear(st.tables)
		}
		return err
	case *replication.XIDEvent:
		return st.commit(ctx, ev)
	case *replication.TransactionPayloadEvent:
		st.inPayload = true
		defer func() { st.inPayload = false }()
		for _, inner := range e.Events {
			if err := st.handle(ctx, inner); err != nil {
				return err
			}
		}
	case *replication.GenericEvent:
		if ev.Header.EventType == replication.XA_PREPARE_LOG_EVENT {
			// The end of an XA transaction's prepared part (or, on MySQL,
			// of an XA COMMIT ... ONE PHASE).
			return st.xaPrepareEvent(ctx, ev)
		}
	case *replication.BeginLoadQueryEvent, *replication.ExecuteLoadQueryEvent:
		st.warnStatement(ev, "LOAD DATA")
	}
	return nil
}

// startPos is the offset of the event's first byte in its file.
func (st *stream) startPos(ev *replication.BinlogEvent) uint32 {
	if st.inPayload {
		return ev.Header.LogPos
	}
	if ev.Header.LogPos >= ev.Header.EventSize {
		return ev.Header.LogPos - ev.Header.EventSize
	}
	return ev.Header.LogPos
}

func (st *stream) mysqlGTID(ev *replication.BinlogEvent, e *replication.GTIDEvent, tag string) {
	p := pendingGTID{set: true, start: st.startPos(ev)}
	anonymous := true
	for _, b := range e.SID {
		if b != 0 {
			anonymous = false
			break
		}
	}
	if !anonymous && e.GNO > 0 {
		p.g = gtid{valid: true, sid: uuidString(e.SID), tag: tag, gno: e.GNO}
	}
	if t := e.OriginalCommitTime(); !t.IsZero() {
		p.commitTime = t.UTC()
	}
	st.pending = p
}

func (st *stream) mariadbGTID(_ context.Context, ev *replication.BinlogEvent, e *replication.MariadbGTIDEvent) error {
	p := pendingGTID{
		set:        true,
		start:      st.startPos(ev),
		standalone: e.IsStandalone(),
		g:          gtid{valid: true, mariadb: true, domain: e.GTID.DomainID, server: ev.Header.ServerID, seq: e.GTID.SequenceNumber},
	}
	st.pending = p
	if p.standalone {
		// A DDL (or other single statement) follows; an XA COMMIT or XA
		// ROLLBACK group (FL_COMPLETED_XA) is one too.
		return nil
	}
	// MariaDB's GTID event replaces BEGIN. FL_PREPARED_XA marks an XA
	// transaction's prepared part: its rows, XA END and XA_PREPARE_LOG_EVENT
	// follow (MariaDB logs no XA START statement).
	st.openTx(ev)
	if e.Flags&mariadbFlPreparedXA != 0 {
		st.tx.xa = true
	}
	return nil
}

// openTx starts a transaction at ev, taking the pending GTID event's id,
// start and commit time.
func (st *stream) openTx(ev *replication.BinlogEvent) {
	p := st.pending
	st.pending = pendingGTID{}
	start := st.startPos(ev)
	if p.set {
		start = p.start
	}
	st.tx = txState{open: true, g: p.g, commitTime: p.commitTime, file: st.file, start: start}
	at := strconv.FormatUint(uint64(start), 10)
	switch {
	case !p.g.valid:
		st.tx.key = "pos-" + st.file + "-" + at
		st.tx.id = st.file + ":" + at
	case p.g.mariadb && st.gtids.repeats(p.g):
		// Without gtid_strict_mode a GTID may be lower than its domain's
		// last one, or repeat an earlier one exactly (a binlog replayed with
		// mysqlbinlog keeps its GTIDs): the key also names the group's
		// place, so that its events never take an earlier transaction's
		// ids. The GTID state here is the server's own at this point, so
		// the key is the same whenever the group is read.
		st.tx.key = p.g.txKey() + "-" + st.file + "-" + at
		st.tx.id = p.g.String()
	default:
		st.tx.key = p.g.txKey()
		st.tx.id = p.g.String()
	}
	if i := st.pos.xaStartingAt(p.g, st.file, start); i >= 0 {
		// A prepared XA transaction not yet committed: handed over again,
		// under the key it had.
		st.tx.again = true
		st.tx.key = st.pos.XA[i].Key
		return
	}
	st.tx.skip = st.handedBefore(p.g, start)
}

// handedBefore reports whether the group with GTID g starting at start in
// the current file was handed over (or passed) before: with GTID sets, when
// the set holds g; otherwise when it starts before the position. The
// position itself moves only forward, so a group a GTID sequence lower
// than an earlier one's (MariaDB without gtid_strict_mode) is new.
func (st *stream) handedBefore(g gtid, start uint32) bool {
	if st.byGTID && g.valid {
		return st.gtids.contains(g)
	}
	return before(position{File: st.file, Pos: start}, st.pos.filePos())
}

func (st *stream) query(ctx context.Context, ev *replication.BinlogEvent, e *replication.QueryEvent) error {
	word, rest := firstWord(e.Query)
	switch word {
	case "BEGIN":
		if st.tx.open && !st.pending.set {
			// MariaDB's GTID event opened it already.
			return nil
		}
		st.openTx(ev)
		return nil
	case "COMMIT":
		return st.commit(ctx, ev)
	case "ROLLBACK":
		if w, _ := firstWord(rest); w == "TO" {
			st.log.Warn("mysql: ROLLBACK TO SAVEPOINT in the binlog; changes after the savepoint were already handed over", "pos", st.posOf(ev))
			return nil
		}
		return st.rollback(ctx, ev)
	case "SAVEPOINT", "RELEASE":
		return nil
	case "XA":
		return st.xaQuery(ctx, ev, rest)
	case "INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD":
		st.warnStatement(ev, statementHead(e.Query))
		if !st.tx.open {
			return st.boundary(ctx, ev)
		}
		return nil
	}
	// DDL (or another statement logged as such).
	st.schema.invalidate()
	if st.tx.open {
		return nil
	}
	if word == "TRUNCATE" {
		if db, table, ok := truncateTarget(rest, string(e.Schema)); ok && st.s.filter.tracks(db, table) {
			return st.truncate(ctx, ev, db, table)
		}
	}
	return st.boundary(ctx, ev)
}

func (st *stream) posOf(ev *replication.BinlogEvent) string {
	return st.file + ":" + strconv.FormatUint(uint64(st.startPos(ev)), 10)
}

// warnStatement reports DML logged as a statement (binlog_format
// STATEMENT or MIXED in some session): its changes are not tracked.
func (st *stream) warnStatement(ev *replication.BinlogEvent, what string) {
	st.warnedStmtN++
	if st.warnedStmtN > 100 && st.warnedStmtN%1000 != 0 {
		return
	}
	st.log.Warn("mysql: DML logged as a statement (binlog_format is not ROW for some session): its changes are NOT tracked",
		"pos", st.posOf(ev), "statement", what, "count", st.warnedStmtN)
}

// xaQuery handles an XA statement: XA START (MySQL; MariaDB logs none)
// opens an XA transaction's prepared part, XA COMMIT and XA ROLLBACK end a
// prepared one, XA COMMIT ... ONE PHASE commits the open one.
func (st *stream) xaQuery(ctx context.Context, ev *replication.BinlogEvent, rest []byte) error {
	w, args := firstWord(rest)
	switch w {
	case "START", "BEGIN":
		if !st.tx.open || st.pending.set {
			st.openTx(ev)
		}
		st.tx.xa = true
		return nil
	case "END":
		return nil
	case "PREPARE":
		xid, err := parseXID(args)
		if err != nil {
			return srckit.Permanent(fmt.Errorf("XA PREPARE at %s: %w", st.posOf(ev), err))
		}
		return st.xaPrepare(ctx, ev, xid)
	case "COMMIT", "ROLLBACK":
		if w == "COMMIT" && onePhase(args) {
			// XA COMMIT ... ONE PHASE: an ordinary commit of the open group.
			return st.commit(ctx, ev)
		}
		xid, err := parseXID(args)
		if err != nil {
			return srckit.Permanent(fmt.Errorf("XA %s at %s: %w", w, st.posOf(ev), err))
		}
		return st.xaEnd(ctx, ev, xid, w == "COMMIT")
	}
	return nil
}

// xaPrepareEvent handles an XA_PREPARE_LOG_EVENT: the end of an XA
// transaction's prepared part, or (MySQL) of an XA COMMIT ... ONE PHASE.
// Its body is one_phase (1 byte), formatID, gtrid length and bqual length
// (4 bytes each, little-endian), then gtrid and bqual.
func (st *stream) xaPrepareEvent(ctx context.Context, ev *replication.BinlogEvent) error {
	body := ev.RawData
	if len(body) < replication.EventHeaderSize+13 {
		return srckit.Permanent(fmt.Errorf("XA_PREPARE_LOG_EVENT at %s: %w", st.posOf(ev), errShort))
	}
	body = body[replication.EventHeaderSize:]
	one := body[0] != 0
	format := int32(binary.LittleEndian.Uint32(body[1:]))
	gl, bl := binary.LittleEndian.Uint32(body[5:]), binary.LittleEndian.Uint32(body[9:])
	if gl > 64 || bl > 64 || len(body) < 13+int(gl+bl) {
		return srckit.Permanent(fmt.Errorf("XA_PREPARE_LOG_EVENT at %s: bad xid lengths %d, %d", st.posOf(ev), gl, bl))
	}
	if one {
		return st.commit(ctx, ev)
	}
	return st.xaPrepare(ctx, ev, serializeXID(body[13:13+gl], body[13+gl:13+gl+bl], format))
}

// xaPrepare ends the prepared part of XA transaction xid at ev. Its changes
// were handed over as a streamed transaction; its commit comes with its XA
// COMMIT. The position after it lists it, so that a restart reads it again
// (the tracker's buffer of its changes does not survive one).
func (st *stream) xaPrepare(ctx context.Context, ev *replication.BinlogEvent, xid string) error {
	if !st.tx.open {
		// The stream began inside the group; nothing of it was read.
		st.pending = pendingGTID{}
		return nil
	}
	tx := st.tx
	st.tx = txState{}
	if tx.skip || tx.again {
		return nil
	}
	x := xaPrepared{XID: xid, Key: tx.key, File: tx.file, Pos: tx.start, Empty: !tx.began}
	if tx.g.valid {
		x.GTID = tx.g.String()
	}
	xa := st.pos.XA
	if i := st.pos.xaIndex(xid); i >= 0 {
		xa = st.pos.withoutXA(i) // cannot be: the server refuses a second one
	}
	if !st.moveTo(st.file, ev.Header.LogPos, tx.g) {
		return nil
	}
	st.pos.XA = append(slices.Clip(xa), x)
	if tx.began {
		st.log.Debug("mysql: XA transaction prepared; its commit follows its XA COMMIT", "xid", xid, "txkey", tx.key, "pos", st.posOf(ev))
	}
	return st.sendKeepalive(ctx)
}

// xaEnd handles the XA COMMIT (commit true) or XA ROLLBACK of the prepared
// XA transaction xid: its Commit, or its Rollback (the tracker retracts its
// before_commit events), is handed over, and it leaves the position's list.
func (st *stream) xaEnd(ctx context.Context, ev *replication.BinlogEvent, xid string, commit bool) error {
	start, g := st.startPos(ev), gtid{}
	switch {
	case st.tx.open:
		start, g = st.tx.start, st.tx.g
		st.tx = txState{}
	case st.pending.set:
		start, g = st.pending.start, st.pending.g
	}
	st.pending = pendingGTID{}
	if st.handedBefore(g, start) {
		return nil
	}
	i := st.pos.xaIndex(xid)
	var x xaPrepared
	if i >= 0 {
		x = st.pos.XA[i]
	}
	if !st.moveTo(st.file, ev.Header.LogPos, g) {
		return nil
	}
	if i >= 0 {
		st.pos.XA = st.pos.withoutXA(i)
	}
	what := "XA ROLLBACK"
	if commit {
		what = "XA COMMIT"
	}
	switch {
	case i < 0:
		st.log.Warn("mysql: "+what+" of an XA transaction prepared before the position trackerd started reading this bind at: its changes, if it had any, are NOT tracked",
			"xid", xid, "pos", st.posOf(ev))
		return st.sendKeepalive(ctx)
	case x.Empty:
		return st.sendKeepalive(ctx)
	case commit:
		ct := time.Unix(int64(ev.Header.Timestamp), 0).UTC()
		st.keepalive = false
		return st.emit(ctx, tracker.Record{Kind: tracker.RecordCommit, Pos: st.posString(), Tx: tracker.TxInfo{
			TxKey: x.Key, TxID: x.txID(), CommitTime: ct, Streamed: true,
		}})
	}
	st.log.Info("mysql: prepared XA transaction rolled back; its changes are retracted", "xid", xid, "txkey", x.Key, "pos", st.posOf(ev))
	if err := st.emit(ctx, tracker.Record{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: x.Key, TxID: x.txID(), Streamed: true}}); err != nil {
		return err
	}
	return st.sendKeepalive(ctx)
}

// moveTo moves the resume point forward to the end of a group, file:end,
// adding its GTID g to the GTID state. It never moves backwards (a group
// read again after resuming at an older prepared XA transaction), and
// reports whether it moved.
func (st *stream) moveTo(file string, end uint32, g gtid) bool {
	to := position{File: file, Pos: end}
	if st.pos.File != "" && !before(st.pos.filePos(), to) {
		return false
	}
	if g.valid {
		st.gtids.add(g)
	}
	st.pos.GTID = st.gtids.String()
	st.pos.File, st.pos.Pos = file, end
	st.progressed = true
	return true
}

func (st *stream) posString() string {
	st.posBuf = st.pos.appendJSON(st.posBuf[:0])
	return string(st.posBuf)
}

// boundary passes a standalone statement (DDL): the resume point moves
// past it and a keepalive says so, once the next event shows that no rows
// belong to it. MySQL 8 logs CREATE TABLE ... SELECT as one transaction
// whose rows follow the DDL under its GTID; checkpointing the GTID before
// them would skip them on resume.
func (st *stream) boundary(_ context.Context, ev *replication.BinlogEvent) error {
	start := st.startPos(ev)
	if st.pending.set {
		start = st.pending.start
	}
	st.ddl = ddlBoundary{set: true, g: st.pending.g, start: start, file: st.file, end: ev.Header.LogPos}
	st.pending = pendingGTID{}
	return nil
}

// finishDDL moves the resume point past the pending standalone statement.
func (st *stream) finishDDL(ctx context.Context) error {
	d := st.ddl
	st.ddl = ddlBoundary{}
	if !st.moveTo(d.file, d.end, d.g) {
		return nil // read again after resuming at a prepared XA transaction
	}
	return st.sendKeepalive(ctx)
}

func (st *stream) sendKeepalive(ctx context.Context) error {
	st.keepalive = false
	st.lastKA = time.Now()
	return st.emit(ctx, tracker.Record{Kind: tracker.RecordKeepalive, Pos: st.posString()})
}

func (st *stream) emit(ctx context.Context, r tracker.Record) error {
	if err := st.h.Handle(ctx, r); err != nil {
		return srckit.HandlerError(err)
	}
	return nil
}

// begin hands the open transaction's Begin, once, before its first change.
func (st *stream) begin(ctx context.Context) error {
	if st.tx.began {
		return nil
	}
	st.tx.began = true
	return st.emit(ctx, tracker.Record{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{
		TxKey: st.tx.key, TxID: st.tx.id, CommitTime: st.tx.commitTime, Streamed: st.tx.xa,
	}})
}

// commit ends the open transaction at ev (XID or COMMIT): its Commit is
// handed when it had tracked changes, a keepalive (at most every
// keepaliveEvery) otherwise.
func (st *stream) commit(ctx context.Context, ev *replication.BinlogEvent) error {
	if !st.tx.open {
		// A commit without a start: the stream began inside a group.
		st.pending = pendingGTID{}
		if st.moveTo(st.file, ev.Header.LogPos, gtid{}) {
			st.keepalive = true
		}
		return nil
	}
	tx := st.tx
	st.tx = txState{}
	if tx.skip || !st.moveTo(st.file, ev.Header.LogPos, tx.g) {
		return nil // handed over before
	}
	if !tx.began {
		st.keepalive = true
		if time.Since(st.lastKA) >= st.kaEvery {
			return st.sendKeepalive(ctx)
		}
		return nil
	}
	st.keepalive = false
	ct := tx.commitTime
	if ct.IsZero() {
		ct = time.Unix(int64(ev.Header.Timestamp), 0).UTC()
	}
	return st.emit(ctx, tracker.Record{Kind: tracker.RecordCommit, Pos: st.posString(), Tx: tracker.TxInfo{
		TxKey: tx.key, TxID: tx.id, CommitTime: ct, Streamed: tx.xa,
	}})
}

// rollback ends a group the binlog closes with ROLLBACK (changes to
// non-transactional tables in a rolled-back transaction): its handed
// changes are withdrawn.
func (st *stream) rollback(ctx context.Context, ev *replication.BinlogEvent) error {
	if !st.tx.open {
		return nil
	}
	tx := st.tx
	st.tx = txState{}
	if tx.skip || !st.moveTo(st.file, ev.Header.LogPos, tx.g) {
		return nil
	}
	if !tx.began {
		st.keepalive = true
		return nil
	}
	st.log.Warn("mysql: transaction ends with ROLLBACK in the binlog; its changes are withdrawn, though changes to non-transactional tables in it persist",
		"pos", st.posOf(ev), "txid", tx.id)
	if err := st.emit(ctx, tracker.Record{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: tx.key, TxID: tx.id, Streamed: tx.xa}}); err != nil {
		return err
	}
	return st.sendKeepalive(ctx)
}

// truncate hands a TRUNCATE TABLE of a tracked table as one change in a
// transaction of its own.
func (st *stream) truncate(ctx context.Context, ev *replication.BinlogEvent, db, table string) error {
	st.openTx(ev)
	if st.tx.skip {
		return st.commit(ctx, ev)
	}
	c := &tracker.Change{
		Source: st.source, Op: tracker.OpTruncate,
		Schema: db, Table: table, TxKey: st.tx.key, Pos: st.posOf(ev),
	}
	if st.tx.commitTime.IsZero() {
		st.tx.commitTime = time.Unix(int64(ev.Header.Timestamp), 0).UTC()
	}
	if err := st.begin(ctx); err != nil {
		return err
	}
	if err := st.emit(ctx, tracker.Record{Kind: tracker.RecordChange, Change: c}); err != nil {
		return err
	}
	return st.commit(ctx, ev)
}

// rows decodes a rows event of the open transaction into changes.
func (st *stream) rows(ctx context.Context, ev *replication.BinlogEvent, e *replication.RowsEvent) error {
	if !st.tx.open {
		st.openTx(ev)
	}
	if st.tx.skip {
		return nil
	}
	ti := st.tables[e.TableID]
	if ti == nil {
		return srckit.Permanent(fmt.Errorf("rows event at %s without its TABLE_MAP (table id %d)", st.posOf(ev), e.TableID))
	}
	if !ti.tracked {
		// Its rows still take their places in the transaction (see
		// Change.Index): another bind may follow this table.
		return st.countRows(ev, e, ti)
	}
	var op tracker.Op
	switch ev.Header.EventType {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		op = tracker.OpInsert
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1:
		op = tracker.OpUpdate
	case replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		op = tracker.OpDelete
	case replication.PARTIAL_UPDATE_ROWS_EVENT:
		return srckit.Permanent(tracker.ConfigError(errors.New("partial JSON update in the binlog: set binlog_row_value_options = '' on the server")))
	default:
		return nil
	}
	body, err := st.rowsBody(ev, e)
	if err != nil {
		return srckit.Permanent(fmt.Errorf("rows event at %s: %w", st.posOf(ev), err))
	}
	if int(e.ColumnCount) != len(ti.cols) {
		return srckit.Permanent(fmt.Errorf("rows event at %s for %s.%s has %d columns, its TABLE_MAP %d", st.posOf(ev), ti.schema, ti.table, e.ColumnCount, len(ti.cols)))
	}
	pos := st.posOf(ev)
	dec := &st.dec
	dec.ti, dec.escape = ti, st.escape
	for len(body) > 0 {
		t0 := time.Now()
		c, n, err := dec.change(op, body, e.ColumnBitmap1, e.ColumnBitmap2)
		if err != nil {
			return srckit.Permanent(fmt.Errorf("decode %s row of %s.%s at %s: %w", op, ti.schema, ti.table, pos, err))
		}
		took := time.Since(t0)
		body = body[n:]
		c.Source, c.TxKey, c.Pos = st.source, st.tx.key, pos
		c.Index = st.tx.rows
		st.tx.rows++
		if err := st.begin(ctx); err != nil {
			return err
		}
		if err := st.emit(ctx, tracker.Record{Kind: tracker.RecordChange, Change: c, Decode: took}); err != nil {
			return err
		}
	}
	return nil
}
