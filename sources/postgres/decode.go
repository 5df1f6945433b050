package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// sourceKind is Change.Source for every change of this package.
const sourceKind = "postgresql"

// heartbeatPrefix is the prefix of trackerd's heartbeat messages
// (pg_logical_emit_message); messages with other prefixes are ignored.
const heartbeatPrefix = "trackerd-heartbeat"

// typeResolver gives the decoding plan of a type OID, loading user types
// (enums, domains, arrays of them) as needed, and the primary key of a
// relation. The decoder calls it from one goroutine.
type typeResolver interface {
	// plan returns the plan for oid; never nil (unknown types decode as
	// strings).
	plan(oid uint32) *colType
	// forget drops what is known of oid, after a Type message says it may
	// have changed.
	forget(oid uint32)
	// primaryKey returns the primary-key column names of relation relid,
	// and false when they are unknown.
	primaryKey(relid uint32) ([]string, bool)
}

// relation is the cached Relation message of one table, with its decoding
// plan.
type relation struct {
	id       uint32
	schema   string
	table    string
	identity byte // replica identity: 'd', 'n', 'f' or 'i'
	names    []string
	types    []*colType
	keyIdx   []int
	keyNames []string
	tracked  bool
}

// tupleCol is one column of a tuple: its kind byte ('n' null, 'u' unchanged
// TOAST value, 't' text) and, for 't', its data (a slice of the message).
type tupleCol struct {
	kind byte
	data []byte
}

// txState is the transaction a change belongs to.
//
// Its key (Change.TxKey) is the LSN of its first change message, streamed
// or not: the LSN in a Begin's XLogData header is that of the first change
// pgoutput publishes (PostgreSQL 15 sends Begin lazily) or of the
// transaction's first record (14 and older), and a Stream Start's is that
// of the first record decoded, which may be a DDL's or an unpublished
// table's. The first change message carries the same LSN in every mode and
// version, so a transaction sent streamed once and whole after a restart
// keeps its event ids. The Begin record is handed over at the first change,
// once the key is known; a transaction without one hands over only its
// commit position.
//
// A change's index (Change.Index) is its LSN's distance from the key's,
// times 4096, plus its ordinal among the changes of one WAL record (a
// multi-insert record holds at most a page's worth of rows, under 4096):
// the same in every mode, unlike a count, which in streaming mode would
// also count the changes of subtransactions rolled back later.
type txState struct {
	key        string
	id         string
	xid        uint32
	commitTime time.Time
	skip       bool
	streamed   bool // handed over before its commit: streamed or prepared

	// prepared marks a two-phase transaction (Begin Prepare, or Stream
	// Prepare), prepareLSN the LSN of its PREPARE TRANSACTION record.
	prepared   bool
	prepareLSN lsn
	// orphanKey is the key under which an earlier connection handed over
	// changes of this transaction (see carried.orphans), until its first
	// change here says whether the key is the same.
	orphanKey string

	begun    bool // the key is known and the Begin record handed over
	first    lsn  // the key's LSN
	last     lsn  // the last change's LSN
	sameLast int64
}

// lsnIndexShift makes room for the changes of one WAL record in an index.
const lsnIndexShift = 12

// index returns the Change.Index of a change at at, keying the transaction
// at its first change and handing over its Begin record then.
func (d *decoder) index(t *txState, at lsn) int64 {
	if !t.begun {
		t.begun = true
		t.first, t.last, t.sameLast = at, at, 0
		t.key = txKey(at)
		if !t.skip {
			if t.orphanKey != t.key {
				d.retractOrphan(t)
			}
			t.orphanKey = ""
			d.emit(tracker.Record{Kind: tracker.RecordBegin, Tx: d.txInfo(t, t.streamed)}, 0)
		}
		return 0
	}
	if at == t.last {
		t.sameLast++
	} else {
		t.last, t.sameLast = at, 0
	}
	return int64(at-t.first)<<lsnIndexShift + t.sameLast
}

// decoder turns the pgoutput messages of one replication connection into
// records. It is not safe for concurrent use. A new decoder (and so an empty
// relation cache) is made for every connection.
type decoder struct {
	tracks func(schema, table string) bool
	types  typeResolver
	enc    valueEncoder

	// skipBefore: transactions whose commit record starts below it were
	// already handed over (they end at or before it) and are skipped.
	skipBefore lsn
	// streaming is true when streaming was requested; a Stream Abort is
	// ignored otherwise.
	streaming bool

	relations map[uint32]*relation

	inTx bool
	tx   txState

	inStream  bool
	streamXid uint32
	streamed  map[uint32]*txState

	// carry is what the decoders of one Run share across connections.
	carry *carried
	// seen is the highest end of a commit, rollback or heartbeat message
	// decoded, skipped or not: every transaction that ended before it
	// has been decoded.
	seen lsn
	log  *slog.Logger

	out     []tracker.Record
	outPos  []lsn
	rows    srckit.RowBuilder
	newCols []tupleCol
	oldCols []tupleCol
}

func newDecoder(tracks func(schema, table string) bool, types typeResolver, skipBefore lsn, streaming bool) *decoder {
	if tracks == nil {
		tracks = func(string, string) bool { return true }
	}
	if types == nil {
		types = newBuiltinTypes()
	}
	return &decoder{
		tracks:     tracks,
		types:      types,
		skipBefore: skipBefore,
		streaming:  streaming,
		relations:  make(map[uint32]*relation),
		streamed:   make(map[uint32]*txState),
		carry:      newCarried(),
		log:        slog.New(slog.DiscardHandler),
	}
}

// idle reports whether no transaction is open: a keepalive position may then
// be handed over.
func (d *decoder) idle() bool { return !d.inTx && !d.inStream && len(d.streamed) == 0 }

// errMalformed marks messages that cannot be decoded.
var errMalformed = errors.New("malformed pgoutput message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// decode decodes one pgoutput message whose XLogData header starts at
// walStart. The records it yields (and the position of each: the commit end
// for commits, the keepalive position for keepalives) are in d.out and
// d.outPos until the next call. A panic in the parsing code (pglogrepl does
// not check bounds) is returned as an error.
func (d *decoder) decode(data []byte, walStart lsn) (err error) {
	d.out = d.out[:0]
	d.outPos = d.outPos[:0]
	defer func() {
		if r := recover(); r != nil {
			d.out = d.out[:0]
			d.outPos = d.outPos[:0]
			err = malformed("panic: %v", r)
		}
	}()
	if len(data) == 0 {
		return malformed("empty message")
	}
	switch data[0] {
	case 'I', 'U', 'D':
		return d.decodeRow(data, walStart)
	case 'T':
		if err := checkTruncate(data, d.inStream); err != nil {
			return err
		}
	case 'A':
		if !d.streaming {
			return nil // a stray Stream Abort (PostgreSQL 18 sends them to v1 clients)
		}
	case 'b', 'P', 'K', 'r', 'p':
		return d.twoPhase(data)
	case 'B', 'C', 'O', 'R', 'Y', 'M', 'S', 'E', 'c':
	default:
		return malformed("unsupported message %q", data[0])
	}
	msg, err := pglogrepl.ParseV2(data, d.inStream)
	if err != nil {
		return malformed("%c: %v", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		return d.begin(m)
	case *pglogrepl.CommitMessage:
		return d.commit(m)
	case *pglogrepl.RelationMessageV2:
		return d.relation(&m.RelationMessage)
	case *pglogrepl.TypeMessageV2:
		d.types.forget(m.DataType)
	case *pglogrepl.TruncateMessageV2:
		return d.truncate(&m.TruncateMessage, m.Xid, walStart)
	case *pglogrepl.LogicalDecodingMessageV2:
		if !m.Transactional && m.Prefix == heartbeatPrefix {
			d.seen = max(d.seen, m.LSN)
		}
		if !m.Transactional && m.Prefix == heartbeatPrefix && d.idle() {
			d.emit(tracker.Record{Kind: tracker.RecordKeepalive, Pos: formatLSN(m.LSN)}, m.LSN)
		}
	case *pglogrepl.OriginMessage:
	case *pglogrepl.StreamStartMessageV2:
		return d.streamStart(m)
	case *pglogrepl.StreamStopMessageV2:
		if !d.inStream {
			return malformed("stream stop outside a stream")
		}
		d.inStream = false
	case *pglogrepl.StreamCommitMessageV2:
		return d.streamCommit(m)
	case *pglogrepl.StreamAbortMessageV2:
		return d.streamAbort(m)
	default:
		return malformed("unsupported message %q", data[0])
	}
	return nil
}

func (d *decoder) emit(r tracker.Record, pos lsn) {
	d.out = append(d.out, r)
	d.outPos = append(d.outPos, pos)
}

// checkTruncate checks a Truncate message's length before pglogrepl
// allocates its relation count's worth of OIDs.
func checkTruncate(data []byte, inStream bool) error {
	src := data[1:]
	if inStream {
		if len(src) < 4 {
			return malformed("truncate too short")
		}
		src = src[4:]
	}
	if len(src) < 5 {
		return malformed("truncate too short")
	}
	n := binary.BigEndian.Uint32(src)
	if uint64(len(src)-5) < uint64(n)*4 {
		return malformed("truncate of %d relations in %d bytes", n, len(src))
	}
	return nil
}

func (d *decoder) begin(m *pglogrepl.BeginMessage) error {
	if d.inStream {
		return malformed("begin inside a stream")
	}
	d.inTx = true
	d.tx = txState{
		id:         strconv.FormatUint(uint64(m.Xid), 10),
		xid:        m.Xid,
		commitTime: m.CommitTime,
		skip:       m.FinalLSN < d.skipBefore,
	}
	d.adopt(&d.tx, m.Xid)
	return nil
}

func (d *decoder) txInfo(t *txState, streamed bool) tracker.TxInfo {
	return tracker.TxInfo{TxKey: t.key, TxID: t.id, CommitTime: t.commitTime, Streamed: streamed}
}

func (d *decoder) commit(m *pglogrepl.CommitMessage) error {
	if !d.inTx {
		return malformed("commit outside a transaction")
	}
	d.inTx = false
	d.seen = max(d.seen, m.TransactionEndLSN)
	if d.tx.skip {
		return nil
	}
	d.retractOrphan(&d.tx)
	d.emit(tracker.Record{Kind: tracker.RecordCommit, Tx: d.txInfo(&d.tx, false), Pos: formatLSN(m.TransactionEndLSN)}, m.TransactionEndLSN)
	return nil
}

func (d *decoder) streamStart(m *pglogrepl.StreamStartMessageV2) error {
	if d.inStream {
		return malformed("stream start inside a stream")
	}
	if d.inTx {
		return malformed("stream start inside a transaction")
	}
	d.inStream = true
	d.streamXid = m.Xid
	if _, ok := d.streamed[m.Xid]; ok && m.FirstSegment == 0 {
		return nil
	}
	if m.FirstSegment == 0 {
		return malformed("stream start of unknown transaction %d", m.Xid)
	}
	t := &txState{id: strconv.FormatUint(uint64(m.Xid), 10), xid: m.Xid, streamed: true}
	d.adopt(t, m.Xid)
	d.streamed[m.Xid] = t
	return nil
}

func (d *decoder) streamCommit(m *pglogrepl.StreamCommitMessageV2) error {
	if d.inStream {
		return malformed("stream commit inside a stream")
	}
	t, ok := d.streamed[m.Xid]
	if !ok {
		return malformed("stream commit of unknown transaction %d", m.Xid)
	}
	delete(d.streamed, m.Xid)
	d.seen = max(d.seen, m.TransactionEndLSN)
	t.commitTime = m.CommitTime
	d.retractOrphan(t)
	d.emit(tracker.Record{Kind: tracker.RecordCommit, Tx: d.txInfo(t, true), Pos: formatLSN(m.TransactionEndLSN)}, m.TransactionEndLSN)
	return nil
}

func (d *decoder) streamAbort(m *pglogrepl.StreamAbortMessageV2) error {
	t, ok := d.streamed[m.Xid]
	if !ok {
		return nil // nothing of it was handed over
	}
	if !t.begun {
		if m.SubXid == m.Xid || m.SubXid == 0 {
			delete(d.streamed, m.Xid)
			d.retractOrphan(t)
		}
		return nil // no change of it was handed over
	}
	info := d.txInfo(t, true)
	if m.SubXid != m.Xid && m.SubXid != 0 {
		info.SubTx = strconv.FormatUint(uint64(m.SubXid), 10)
	} else {
		delete(d.streamed, m.Xid)
	}
	d.emit(tracker.Record{Kind: tracker.RecordRollback, Tx: info}, 0)
	return nil
}

func (d *decoder) relation(m *pglogrepl.RelationMessage) error {
	r := &relation{
		id:       m.RelationID,
		schema:   m.Namespace,
		table:    m.RelationName,
		identity: m.ReplicaIdentity,
		names:    make([]string, len(m.Columns)),
		types:    make([]*colType, len(m.Columns)),
	}
	for i, c := range m.Columns {
		r.names[i] = c.Name
		r.types[i] = d.types.plan(c.DataType)
		if c.Flags&1 != 0 {
			r.keyIdx = append(r.keyIdx, i)
		}
	}
	if r.identity == 'f' {
		// With REPLICA IDENTITY FULL every column is flagged as part of
		// the identity; the primary key, when there is one, is the more
		// useful key.
		if pk, ok := d.types.primaryKey(r.id); ok && len(pk) > 0 {
			if idx, ok := columnIndexes(r.names, pk); ok {
				r.keyIdx = idx
			}
		}
	}
	r.keyNames = make([]string, len(r.keyIdx))
	for i, k := range r.keyIdx {
		r.keyNames[i] = r.names[k]
	}
	r.tracked = d.tracks(r.schema, r.table)
	d.relations[r.id] = r
	return nil
}

func columnIndexes(names, want []string) ([]int, bool) {
	idx := make([]int, 0, len(want))
	for _, w := range want {
		found := false
		for i, n := range names {
			if n == w {
				idx = append(idx, i)
				found = true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return idx, true
}

// currentTx returns the transaction a change (or truncate) belongs to, given
// the xid prefix of a streamed change.
func (d *decoder) currentTx(xid uint32) (t *txState, streamed bool, subTx string, err error) {
	switch {
	case d.inStream:
		t, ok := d.streamed[d.streamXid]
		if !ok {
			return nil, false, "", malformed("change in a stream of unknown transaction %d", d.streamXid)
		}
		if xid != d.streamXid && xid != 0 {
			subTx = strconv.FormatUint(uint64(xid), 10)
		}
		return t, true, subTx, nil
	case d.inTx:
		return &d.tx, false, "", nil
	}
	return nil, false, "", malformed("change outside a transaction")
}

func (d *decoder) truncate(m *pglogrepl.TruncateMessage, xid uint32, walStart lsn) error {
	t, _, subTx, err := d.currentTx(xid)
	if err != nil {
		return err
	}
	var pos string
	for _, id := range m.RelationIDs {
		r, ok := d.relations[id]
		if !ok {
			return malformed("truncate of unknown relation %d", id)
		}
		index := d.index(t, walStart)
		if t.skip || !r.tracked {
			continue
		}
		if pos == "" {
			pos = formatLSN(walStart)
		}
		c := &tracker.Change{
			Source: sourceKind, Op: tracker.OpTruncate,
			Schema: r.schema, Table: r.table,
			TxKey: t.key, SubTx: subTx, Index: index, Pos: pos,
		}
		d.emit(tracker.Record{Kind: tracker.RecordChange, Change: c}, 0)
	}
	return nil
}

// Row decoding. The tuple parser below replaces pglogrepl's for Insert,
// Update and Delete, the hot path: it checks bounds, and it slices column
// data out of the message instead of allocating a copy per column.

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// maxKeptBuffer is the largest scratch buffer of its value encoder a
// decoder keeps between rows.
const maxKeptBuffer = 1 << 20

// parseTuple parses TupleData at src into cols (reused) and returns the rest.
func parseTuple(src []byte, cols []tupleCol) ([]tupleCol, []byte, error) {
	if len(src) < 2 {
		return cols, nil, malformed("tuple too short")
	}
	n := int(binary.BigEndian.Uint16(src))
	src = src[2:]
	cols = cols[:0]
	for i := 0; i < n; i++ {
		if len(src) < 1 {
			return cols, nil, malformed("tuple column %d missing", i)
		}
		c := tupleCol{kind: src[0]}
		src = src[1:]
		switch c.kind {
		case 'n', 'u':
		case 't':
			if len(src) < 4 {
				return cols, nil, malformed("tuple column %d length missing", i)
			}
			l := be32(src)
			src = src[4:]
			if uint64(l) > uint64(len(src)) {
				return cols, nil, malformed("tuple column %d of %d bytes in %d", i, l, len(src))
			}
			c.data = src[:l:l]
			src = src[l:]
		default: // including 'b', binary data, which is never asked for
			return cols, nil, malformed("tuple column %d of kind %q", i, c.kind)
		}
		cols = append(cols, c)
	}
	return cols, src, nil
}

func (d *decoder) decodeRow(data []byte, walStart lsn) error {
	op := data[0]
	src := data[1:]
	var xid uint32
	if d.inStream {
		if len(src) < 4 {
			return malformed("%c too short", op)
		}
		xid = be32(src)
		src = src[4:]
	}
	if len(src) < 5 {
		return malformed("%c too short", op)
	}
	relid := be32(src)
	src = src[4:]
	t, _, subTx, err := d.currentTx(xid)
	if err != nil {
		return err
	}
	r, ok := d.relations[relid]
	if !ok {
		return malformed("%c of unknown relation %d", op, relid)
	}
	var oldKind byte
	var oldCols, newCols []tupleCol
	switch op {
	case 'I':
		if src[0] != 'N' {
			return malformed("insert tuple of kind %q", src[0])
		}
		if d.newCols, _, err = parseTuple(src[1:], d.newCols); err != nil {
			return err
		}
		newCols = d.newCols
	case 'U':
		if src[0] == 'K' || src[0] == 'O' {
			oldKind = src[0]
			if d.oldCols, src, err = parseTuple(src[1:], d.oldCols); err != nil {
				return err
			}
			oldCols = d.oldCols
			if len(src) < 1 {
				return malformed("update without a new tuple")
			}
		}
		if src[0] != 'N' {
			return malformed("update tuple of kind %q", src[0])
		}
		if d.newCols, _, err = parseTuple(src[1:], d.newCols); err != nil {
			return err
		}
		newCols = d.newCols
	case 'D':
		if src[0] != 'K' && src[0] != 'O' {
			return malformed("delete tuple of kind %q", src[0])
		}
		oldKind = src[0]
		if d.oldCols, _, err = parseTuple(src[1:], d.oldCols); err != nil {
			return err
		}
		oldCols = d.oldCols
	}
	if op != 'D' && len(newCols) != len(r.names) || oldKind != 0 && len(oldCols) != len(r.names) {
		return malformed("%c of %s.%s: tuple has %d/%d columns, relation %d", op, r.schema, r.table, len(oldCols), len(newCols), len(r.names))
	}
	index := d.index(t, walStart)
	if t.skip || !r.tracked {
		return nil
	}
	c := &tracker.Change{
		Source: sourceKind,
		Schema: r.schema, Table: r.table,
		TxKey: t.key, SubTx: subTx, Index: index, Pos: formatLSN(walStart),
	}
	switch op {
	case 'I':
		c.Op = tracker.OpInsert
	case 'U':
		c.Op = tracker.OpUpdate
	case 'D':
		c.Op = tracker.OpDelete
	}
	if err := d.buildRows(c, r, oldKind, oldCols, newCols); err != nil {
		return err
	}
	d.emit(tracker.Record{Kind: tracker.RecordChange, Change: c}, 0)
	return nil
}

// buildRows fills c's Key, Before, After and Unchanged. Every value of the
// change is encoded into one buffer and one slice of values: two
// allocations per change, whatever its width.
func (d *decoder) buildRows(c *tracker.Change, r *relation, oldKind byte, oldCols, newCols []tupleCol) error {
	n := len(r.names)
	nKey := len(r.keyIdx)
	nBefore := 0
	if oldKind == 'O' {
		nBefore = n
	}
	nAfter := 0
	if c.Op != tracker.OpDelete {
		nAfter = n
	}
	rb := &d.rows
	rb.Reset()
	// appendCol appends one column's JSON value.
	appendCol := func(i int, col tupleCol, keyTuple bool) {
		switch col.kind {
		case 'n':
			if keyTuple {
				rb.Absent() // not part of the identity
				return
			}
			rb.Null()
		case 't':
			rb.Add(d.enc.appendValue(rb.Buf(), r.types[i], col.data))
		default: // 'u': an unchanged TOAST value, not sent
			rb.Absent()
		}
	}
	// Key: from the old key or old row when sent, else from the new row.
	if nKey > 0 {
		src, keyTuple := newCols, false
		if oldKind != 0 {
			src, keyTuple = oldCols, oldKind == 'K'
		}
		for _, k := range r.keyIdx {
			appendCol(k, src[k], keyTuple)
		}
	}
	if nBefore > 0 {
		for i := range oldCols {
			appendCol(i, oldCols[i], false)
		}
	}
	var unchanged []string
	if nAfter > 0 {
		for i := range newCols {
			col := newCols[i]
			if col.kind == 'u' {
				if oldKind == 'O' && (oldCols[i].kind == 't' || oldCols[i].kind == 'n') {
					col = oldCols[i] // REPLICA IDENTITY FULL: the old row has it
				} else {
					unchanged = append(unchanged, r.names[i])
				}
			}
			appendCol(i, col, false)
		}
	}
	if cap(d.enc.raw) > maxKeptBuffer {
		d.enc.raw = nil
	}
	if rb.Len() == 0 {
		return nil
	}
	vals := rb.Values(0)
	if nKey > 0 {
		c.Key = srckit.Row(r.keyNames, vals, 0)
	}
	if nBefore > 0 {
		c.Before = srckit.Row(r.names, vals, nKey)
	}
	if nAfter > 0 {
		c.After = srckit.Row(r.names, vals, nKey+nBefore)
	}
	c.Unchanged = unchanged
	return nil
}
