package postgres

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"strconv"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

// Two-phase commit (PostgreSQL 15+, protocol version 3, a slot with
// two_phase on): a transaction is sent when PREPARE TRANSACTION is decoded,
// as Begin Prepare ('b'), its changes and Prepare ('P'), or, streamed, as
// Stream Start/Stop chunks and Stream Prepare ('p'); COMMIT PREPARED and
// ROLLBACK PREPARED follow later, maybe from another session, as Commit
// Prepared ('K') and Rollback Prepared ('r'). pglogrepl parses none of
// these (https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html).
//
// The tracker gets a prepared transaction as one handed over before its
// commit (TxInfo.Streamed): its before_commit events go out at the
// prepare, its after_commit events at COMMIT PREPARED, and ROLLBACK
// PREPARED retracts it.

// twoPhaseMsg is a parsed two-phase message.
type twoPhaseMsg struct {
	kind byte
	// lsn is, for b, P and p, the PREPARE TRANSACTION record's LSN; for
	// K, the COMMIT PREPARED record's; for r, the prepared transaction's
	// end.
	lsn lsn
	// end is, for b, P and p, the prepared transaction's end; for K and
	// r, the end of the COMMIT PREPARED or ROLLBACK PREPARED record.
	end lsn
	// time is the prepare time (b, P, p), commit time (K) or rollback
	// time (r).
	time time.Time
	xid  uint32
	gid  string
}

// parseTwoPhase parses a Begin Prepare, Prepare, Commit Prepared, Rollback
// Prepared or Stream Prepare message, checking every length.
func parseTwoPhase(data []byte) (twoPhaseMsg, error) {
	m := twoPhaseMsg{kind: data[0]}
	src := data[1:]
	u64 := func(b []byte) lsn { return lsn(binary.BigEndian.Uint64(b)) }
	ts := func(b []byte) time.Time {
		return time.Unix(0, (int64(binary.BigEndian.Uint64(b))+pgEpochUnixMicro)*1000)
	}
	switch m.kind {
	case 'P', 'K', 'p', 'r':
		if len(src) < 1 {
			return m, malformed("%c too short", m.kind)
		}
		src = src[1:] // flags, unused
	}
	switch m.kind {
	case 'b', 'P', 'K', 'p':
		// LSN, end LSN, timestamp, xid, GID
		if len(src) < 28 {
			return m, malformed("%c of %d bytes", m.kind, len(data))
		}
		m.lsn, m.end, m.time, m.xid = u64(src), u64(src[8:]), ts(src[16:]), be32(src[24:])
		src = src[28:]
	case 'r':
		// prepared end LSN, rollback end LSN, prepare time, rollback
		// time, xid, GID
		if len(src) < 36 {
			return m, malformed("%c of %d bytes", m.kind, len(data))
		}
		m.lsn, m.end, m.time, m.xid = u64(src), u64(src[8:]), ts(src[24:]), be32(src[32:])
		src = src[36:]
	default:
		return m, malformed("unsupported message %q", m.kind)
	}
	i := bytes.IndexByte(src, 0)
	if i < 0 {
		return m, malformed("%c: GID not terminated", m.kind)
	}
	m.gid = string(src[:i])
	return m, nil
}

// carried is what the decoders of one Run share across connections.
type carried struct {
	// prepared holds the transactions whose Prepare (or Stream Prepare)
	// arrived and whose COMMIT PREPARED or ROLLBACK PREPARED has not, by
	// xid. After a reconnect the server does not send them again when the
	// new connection starts after their prepare; their Commit Prepared
	// finds them here.
	prepared map[uint32]*txState
	// relisted holds the prepare LSNs of the position Run started from
	// (prepared transactions open at the checkpoint, whose before_commit
	// events the tracker no longer holds) still to be received again.
	relisted map[lsn]bool
	// orphans holds the transactions whose changes an earlier connection
	// handed over while they were open (streamed, or prepared and cut off
	// before their Prepare), by xid, until they are sent again or their
	// fate is known (see Source.checkOrphans).
	orphans map[uint32]*orphan
}

func newCarried() *carried {
	return &carried{prepared: make(map[uint32]*txState), relisted: make(map[lsn]bool), orphans: make(map[uint32]*orphan)}
}

// orphan is an open transaction handed over on an earlier connection.
type orphan struct {
	xid uint32
	key string // its TxKey
	id  string // its TxID
	// until is set once the server said it committed (or forgot it): the
	// server's WAL position then. Not sent again by the time the stream
	// passes it, it had nothing left to publish.
	until lsn
}

// adopt notes that t, starting on this connection, was an orphan: its
// first change says whether its key is the one its changes were handed
// over under.
func (d *decoder) adopt(t *txState, xid uint32) {
	if o := d.carry.orphans[xid]; o != nil {
		delete(d.carry.orphans, xid)
		t.orphanKey = o.key
	}
}

// retractOrphan withdraws what an earlier connection handed over of t
// under another key than t's: its first published change differs (it was
// in a subtransaction rolled back since), or t has none left.
func (d *decoder) retractOrphan(t *txState) {
	if t.orphanKey == "" || t.skip {
		return
	}
	d.emit(tracker.Record{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: t.orphanKey, TxID: t.id, Streamed: true}}, 0)
	t.orphanKey = ""
}

// orphan moves the open transactions this connection handed changes of
// over, and that the next connection must settle, to d.carry.orphans: the
// streamed ones, and a prepared one cut off before its Prepare.
func (d *decoder) orphan() {
	add := func(xid uint32, t *txState) {
		switch {
		case t.skip:
		case t.begun:
			d.carry.orphans[xid] = &orphan{xid: xid, key: t.key, id: t.id}
		case t.orphanKey != "":
			d.carry.orphans[xid] = &orphan{xid: xid, key: t.orphanKey, id: t.id}
		}
	}
	for xid, t := range d.streamed {
		add(xid, t)
	}
	if d.inTx && (d.tx.prepared || !d.tx.begun) {
		add(d.tx.xid, &d.tx)
	}
	clear(d.streamed)
	d.inTx, d.inStream = false, false
}

func (d *decoder) twoPhase(data []byte) error {
	m, err := parseTwoPhase(data)
	if err != nil {
		return err
	}
	if d.inStream {
		return malformed("%c inside a stream", m.kind)
	}
	if m.kind != 'P' && d.inTx {
		return malformed("%c inside a transaction", m.kind)
	}
	switch m.kind {
	case 'b':
		return d.beginPrepare(m)
	case 'P':
		return d.prepare(m)
	case 'p':
		return d.streamPrepare(m)
	case 'K':
		return d.commitPrepared(m)
	default:
		return d.rollbackPrepared(m)
	}
}

// beginPrepare starts a prepared transaction. One prepared before the
// position Run started from is skipped, unless that position lists it as
// still open.
func (d *decoder) beginPrepare(m twoPhaseMsg) error {
	delete(d.carry.prepared, m.xid) // sent again: it starts over
	d.inTx = true
	d.tx = txState{
		id:         strconv.FormatUint(uint64(m.xid), 10),
		xid:        m.xid,
		streamed:   true,
		prepared:   true,
		prepareLSN: m.lsn,
		skip:       m.lsn < d.skipBefore && !d.carry.relisted[m.lsn],
	}
	d.adopt(&d.tx, m.xid)
	return nil
}

func (d *decoder) prepare(m twoPhaseMsg) error {
	if !d.inTx || !d.tx.prepared {
		return malformed("prepare outside a prepared transaction")
	}
	if m.xid != d.tx.xid {
		return malformed("prepare of transaction %d inside transaction %s", m.xid, d.tx.id)
	}
	d.inTx = false
	delete(d.carry.relisted, m.lsn)
	if d.tx.skip {
		return nil
	}
	t := d.tx
	t.prepareLSN = m.lsn
	d.retractOrphan(&t) // still there only if no change was handed over
	d.carry.prepared[m.xid] = &t
	return nil
}

func (d *decoder) streamPrepare(m twoPhaseMsg) error {
	t := d.streamed[m.xid]
	if t == nil {
		t = &txState{id: strconv.FormatUint(uint64(m.xid), 10), xid: m.xid, streamed: true}
	}
	delete(d.streamed, m.xid)
	delete(d.carry.relisted, m.lsn)
	t.prepared, t.prepareLSN = true, m.lsn
	d.retractOrphan(t)
	d.carry.prepared[m.xid] = t
	return nil
}

func (d *decoder) commitPrepared(m twoPhaseMsg) error {
	d.seen = max(d.seen, m.end)
	t := d.carry.prepared[m.xid]
	delete(d.carry.prepared, m.xid)
	if m.lsn < d.skipBefore {
		return nil // handed over before the position Run started from
	}
	if t == nil {
		// The server decoded its PREPARE before this slot's position:
		// trackerd confirms no position past a prepared transaction's
		// prepare, so something else moved the slot.
		d.log.Error("COMMIT PREPARED of a transaction whose PREPARE TRANSACTION was not received: its changes are not published (was the slot advanced past it?)",
			slog.Uint64("xid", uint64(m.xid)), slog.String("gid", m.gid), slog.String("commit_lsn", formatLSN(m.lsn)))
		t = &txState{id: strconv.FormatUint(uint64(m.xid), 10), xid: m.xid}
	}
	t.commitTime = m.time
	info := d.txInfo(t, true)
	d.emit(tracker.Record{Kind: tracker.RecordCommit, Tx: info, Pos: formatLSN(m.end)}, m.end)
	return nil
}

func (d *decoder) rollbackPrepared(m twoPhaseMsg) error {
	d.seen = max(d.seen, m.end)
	t := d.carry.prepared[m.xid]
	delete(d.carry.prepared, m.xid)
	if m.end <= d.skipBefore {
		return nil
	}
	if t != nil && t.begun {
		d.emit(tracker.Record{Kind: tracker.RecordRollback, Tx: d.txInfo(t, true)}, 0)
	}
	if d.idle() {
		d.emit(tracker.Record{Kind: tracker.RecordKeepalive, Pos: formatLSN(m.end)}, m.end)
	}
	return nil
}
