package postgres

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/trackerd/trackerd/tracker"
)

// pgoutput message builders (protocol v2; xid prefixes when inStream).
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html

type wb []byte

func (b wb) u8(v byte) wb    { return append(b, v) }
func (b wb) u16(v int) wb    { return binary.BigEndian.AppendUint16(b, uint16(v)) }
func (b wb) u32(v uint32) wb { return binary.BigEndian.AppendUint32(b, v) }
func (b wb) u64(v uint64) wb { return binary.BigEndian.AppendUint64(b, v) }
func (b wb) str(s string) wb { return append(append(b, s...), 0) }

var testEpoch = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func pgTime(t time.Time) uint64 { return uint64(t.UnixMicro() - pgEpochUnixMicro) }

func mBegin(final lsn, xid uint32) []byte {
	return wb{'B'}.u64(uint64(final)).u64(pgTime(testEpoch)).u32(xid)
}

func mCommit(commit, end lsn) []byte {
	return wb{'C'}.u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgTime(testEpoch))
}

type rcol struct {
	key  bool
	name string
	oid  uint32
}

func mRelation(xid uint32, id uint32, schema, table string, ident byte, cols ...rcol) []byte {
	b := wb{'R'}
	if xid != 0 {
		b = b.u32(xid)
	}
	b = b.u32(id).str(schema).str(table).u8(ident).u16(len(cols))
	for _, c := range cols {
		var f byte
		if c.key {
			f = 1
		}
		b = b.u8(f).str(c.name).u32(c.oid).u32(0xFFFFFFFF)
	}
	return b
}

// tup builds TupleData: each value is "n" (null), "u" (unchanged TOAST) or
// "t:<text>".
func tup(vals ...string) wb {
	b := wb{}.u16(len(vals))
	for _, v := range vals {
		switch {
		case v == "n" || v == "u":
			b = b.u8(v[0])
		case strings.HasPrefix(v, "t:"):
			b = b.u8('t').u32(uint32(len(v) - 2))
			b = append(b, v[2:]...)
		default:
			panic("tup value " + v)
		}
	}
	return b
}

func withXid(op byte, xid uint32) wb {
	b := wb{op}
	if xid != 0 {
		b = b.u32(xid)
	}
	return b
}

func mInsert(xid, rel uint32, t wb) []byte {
	return append(withXid('I', xid).u32(rel).u8('N'), t...)
}

func mUpdate(xid, rel uint32, oldKind byte, old, t wb) []byte {
	b := withXid('U', xid).u32(rel)
	if oldKind != 0 {
		b = append(b.u8(oldKind), old...)
	}
	return append(b.u8('N'), t...)
}

func mDelete(xid, rel uint32, oldKind byte, old wb) []byte {
	return append(withXid('D', xid).u32(rel).u8(oldKind), old...)
}

func mTruncate(xid uint32, rels ...uint32) []byte {
	b := withXid('T', xid).u32(uint32(len(rels))).u8(0)
	for _, r := range rels {
		b = b.u32(r)
	}
	return b
}

func mStreamStart(xid uint32, first bool) []byte {
	f := byte(0)
	if first {
		f = 1
	}
	return wb{'S'}.u32(xid).u8(f)
}

func mStreamStop() []byte { return []byte{'E'} }

func mStreamCommit(xid uint32, commit, end lsn) []byte {
	return wb{'c'}.u32(xid).u8(0).u64(uint64(commit)).u64(uint64(end)).u64(pgTime(testEpoch))
}

func mStreamAbort(xid, sub uint32) []byte { return wb{'A'}.u32(xid).u32(sub) }

func mBeginPrepare(prepare, end lsn, xid uint32, gid string) []byte {
	return wb{'b'}.u64(uint64(prepare)).u64(uint64(end)).u64(pgTime(testEpoch)).u32(xid).str(gid)
}

// mPrepareLike is a Prepare ('P'), Stream Prepare ('p') or Commit
// Prepared ('K'): flags, LSN, end LSN, time, xid, GID.
func mPrepareLike(kind byte, at, end lsn, xid uint32, gid string) []byte {
	return wb{kind}.u8(0).u64(uint64(at)).u64(uint64(end)).u64(pgTime(testEpoch)).u32(xid).str(gid)
}

func mRollbackPrepared(preparedEnd, end lsn, xid uint32, gid string) []byte {
	return wb{'r'}.u8(0).u64(uint64(preparedEnd)).u64(uint64(end)).u64(pgTime(testEpoch)).u64(pgTime(testEpoch)).u32(xid).str(gid)
}

func mMessage(transactional bool, at lsn, prefix, content string) []byte {
	f := byte(0)
	if transactional {
		f = 1
	}
	b := wb{'M'}.u8(f).u64(uint64(at)).str(prefix).u32(uint32(len(content)))
	return append(b, content...)
}

// step is one message at a WAL position.
type step struct {
	at  lsn
	msg []byte
}

// summary renders a record compactly for comparison.
func summary(r tracker.Record) string {
	switch r.Kind {
	case tracker.RecordBegin:
		s := fmt.Sprintf("begin %s xid=%s", r.Tx.TxKey, r.Tx.TxID)
		if r.Tx.Streamed {
			s += " streamed"
		}
		return s
	case tracker.RecordCommit:
		return fmt.Sprintf("commit %s xid=%s pos=%s", r.Tx.TxKey, r.Tx.TxID, r.Pos)
	case tracker.RecordRollback:
		return fmt.Sprintf("rollback %s xid=%s sub=%s", r.Tx.TxKey, r.Tx.TxID, r.Tx.SubTx)
	case tracker.RecordKeepalive:
		return "keepalive " + r.Pos
	case tracker.RecordChange:
		c := r.Change
		s := fmt.Sprintf("%s %s.%s key=%s before=%s after=%s", c.Op, c.Schema, c.Table, c.Key.AppendJSON(nil), c.Before.AppendJSON(nil), c.After.AppendJSON(nil))
		if len(c.Unchanged) > 0 {
			s += " unchanged=" + strings.Join(c.Unchanged, ",")
		}
		if c.SubTx != "" {
			s += " sub=" + c.SubTx
		}
		return s + fmt.Sprintf(" tx=%s idx=%d pos=%s", c.TxKey, c.Index, c.Pos)
	}
	return fmt.Sprintf("kind %d", r.Kind)
}

// relUsers is a table with an int4 primary key, a text and a jsonb column.
func relUsers(xid uint32, ident byte) []byte {
	return mRelation(xid, 100, "public", "users", ident,
		rcol{true, "id", pgtype.Int4OID}, rcol{false, "name", pgtype.TextOID}, rcol{false, "doc", pgtype.JSONBOID})
}

func relFull() []byte {
	return mRelation(0, 101, "public", "full", 'f',
		rcol{true, "id", pgtype.Int4OID}, rcol{true, "big", pgtype.TextOID})
}

type decodeCase struct {
	name       string
	skipBefore lsn
	relisted   []lsn             // prepared transactions of the start position
	orphans    map[uint32]string // xid -> key handed over on an earlier connection
	streaming  bool
	tracks     func(schema, table string) bool
	steps      []step
	want       []string
	wantErr    string
}

var decodeCases = []decodeCase{
	{
		name: "insert in a transaction",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x20, mInsert(0, 100, tup("t:1", "t:ann", `t:{"a": 1}`))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`insert public.users key={"id":1} before=null after={"id":1,"name":"ann","doc":{"a": 1}} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name: "update without old tuple, null column",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x20, mUpdate(0, 100, 0, nil, tup("t:1", "n", "n"))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`update public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name: "primary key update: key from the old key tuple, n is not null",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x20, mUpdate(0, 100, 'K', tup("t:1", "n", "n"), tup("t:2", "t:ann", "n"))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`update public.users key={"id":1} before=null after={"id":2,"name":"ann","doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name: "delete with old key",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x20, mDelete(0, 100, 'K', tup("t:1", "n", "n"))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`delete public.users key={"id":1} before=null after=null tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name: "unchanged TOAST value with default identity",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x20, mUpdate(0, 100, 0, nil, tup("t:1", "t:bob", "u"))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`update public.users key={"id":1} before=null after={"id":1,"name":"bob"} unchanged=doc tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name: "REPLICA IDENTITY FULL: before row, TOAST filled from it",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relFull()},
			{0x20, mUpdate(0, 101, 'O', tup("t:1", "t:large"), tup("t:2", "u"))},
			{0x30, mDelete(0, 101, 'O', tup("t:2", "t:large"))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`update public.full key={"id":1,"big":"large"} before={"id":1,"big":"large"} after={"id":2,"big":"large"} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			`delete public.full key={"id":2,"big":"large"} before={"id":2,"big":"large"} after=null tx=lsn-0000000000000020 idx=65536 pos=0/30`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name: "truncate of several tables",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x10, relFull()},
			{0x20, mTruncate(0, 100, 101)},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`truncate public.users key=null before=null after=null tx=lsn-0000000000000020 idx=0 pos=0/20`,
			`truncate public.full key=null before=null after=null tx=lsn-0000000000000020 idx=1 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name:       "transactions ending at or before the start are skipped",
		skipBefore: 0x48,
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x20, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x48, mCommit(0x40, 0x48)},
			{0x50, mBegin(0x60, 8)},
			{0x50, mInsert(0, 100, tup("t:2", "n", "n"))},
			{0x68, mCommit(0x60, 0x68)},
		},
		want: []string{
			"begin lsn-0000000000000050 xid=8",
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} tx=lsn-0000000000000050 idx=0 pos=0/50`,
			"commit lsn-0000000000000050 xid=8 pos=0/68",
		},
	},
	{
		name:   "untracked tables leave empty transactions",
		tracks: func(schema, table string) bool { return table != "users" },
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, relUsers(0, 'd')},
			{0x20, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		name:      "streamed transaction with a subtransaction and a partial abort",
		streaming: true,
		steps: []step{
			{0x10, mStreamStart(9, true)},
			{0x10, relUsers(9, 'd')},
			{0x20, mInsert(9, 100, tup("t:1", "n", "n"))},
			{0x28, mInsert(10, 100, tup("t:2", "n", "n"))},
			{0x30, mStreamStop()},
			{0x30, mBegin(0x38, 11)}, // an ordinary transaction between chunks
			{0x30, mCommit(0x38, 0x3C)},
			{0x40, mStreamStart(9, false)},
			{0x40, mInsert(9, 100, tup("t:3", "n", "n"))},
			{0x48, mStreamStop()},
			{0x48, mStreamAbort(9, 10)},
			{0x50, mStreamCommit(9, 0x50, 0x58)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=9 streamed",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} sub=10 tx=lsn-0000000000000020 idx=32768 pos=0/28`,
			"commit  xid=11 pos=0/3C", // no change: no key, no Begin
			`insert public.users key={"id":3} before=null after={"id":3,"name":null,"doc":null} tx=lsn-0000000000000020 idx=131072 pos=0/40`,
			"rollback lsn-0000000000000020 xid=9 sub=10",
			"commit lsn-0000000000000020 xid=9 pos=0/58",
		},
	},
	{
		name:      "streamed transaction aborted as a whole",
		streaming: true,
		steps: []step{
			{0x10, mStreamStart(9, true)},
			{0x10, relUsers(9, 'd')},
			{0x20, mInsert(9, 100, tup("t:1", "n", "n"))},
			{0x30, mStreamStop()},
			{0x30, mStreamAbort(9, 9)},
			{0x40, mStreamAbort(12, 12)}, // never streamed to us: ignored
		},
		want: []string{
			"begin lsn-0000000000000020 xid=9 streamed",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"rollback lsn-0000000000000020 xid=9 sub=",
		},
	},
	{
		// F4: a transaction that starts with a DDL (or a write to an
		// unpublished table) is keyed at its first change message,
		// streamed or not: PostgreSQL's Stream Start carries the LSN of
		// the DDL, its lazy Begin that of the first published change.
		name:      "F4: streamed, first record a DDL",
		streaming: true,
		steps: []step{
			{0x10, mStreamStart(9, true)}, // first_lsn: the DDL's record
			{0x10, relUsers(9, 'd')},
			{0x30, mInsert(9, 100, tup("t:1", "n", "n"))},
			{0x38, mInsert(9, 100, tup("t:2", "n", "n"))},
			{0x40, mStreamStop()},
			{0x50, mStreamCommit(9, 0x50, 0x58)},
		},
		want: []string{
			"begin lsn-0000000000000030 xid=9 streamed",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000030 idx=0 pos=0/30`,
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} tx=lsn-0000000000000030 idx=32768 pos=0/38`,
			"commit lsn-0000000000000030 xid=9 pos=0/58",
		},
	},
	{
		name: "F4: the same transaction not streamed",
		steps: []step{
			{0x30, mBegin(0x50, 9)}, // PostgreSQL 15: Begin at the first published change
			{0x30, relUsers(0, 'd')},
			{0x30, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x38, mInsert(0, 100, tup("t:2", "n", "n"))},
			{0x58, mCommit(0x50, 0x58)},
		},
		want: []string{
			"begin lsn-0000000000000030 xid=9",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000030 idx=0 pos=0/30`,
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} tx=lsn-0000000000000030 idx=32768 pos=0/38`,
			"commit lsn-0000000000000030 xid=9 pos=0/58",
		},
	},
	{
		name: "F4: the same transaction not streamed, from PostgreSQL 14 (Begin at first_lsn)",
		steps: []step{
			{0x10, mBegin(0x50, 9)},
			{0x10, relUsers(0, 'd')},
			{0x30, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x38, mInsert(0, 100, tup("t:2", "n", "n"))},
			{0x58, mCommit(0x50, 0x58)},
		},
		want: []string{
			"begin lsn-0000000000000030 xid=9",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000030 idx=0 pos=0/30`,
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} tx=lsn-0000000000000030 idx=32768 pos=0/38`,
			"commit lsn-0000000000000030 xid=9 pos=0/58",
		},
	},
	{
		// Changes of one WAL record (a multi-insert) share its LSN: their
		// indexes count within it. An untracked table's change still
		// counts, so that binds with other tables never reuse an index.
		name:   "indexes: one record, several rows; untracked changes count",
		tracks: func(schema, table string) bool { return table != "full" },
		steps: []step{
			{0x20, mBegin(0x50, 7)},
			{0x20, relUsers(0, 'd')},
			{0x20, relFull()},
			{0x20, mInsert(0, 101, tup("t:0", "t:x"))},
			{0x28, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x28, mInsert(0, 100, tup("t:2", "n", "n"))},
			{0x28, mInsert(0, 100, tup("t:3", "n", "n"))},
			{0x30, mInsert(0, 100, tup("t:4", "n", "n"))},
			{0x58, mCommit(0x50, 0x58)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=32768 pos=0/28`,
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} tx=lsn-0000000000000020 idx=32769 pos=0/28`,
			`insert public.users key={"id":3} before=null after={"id":3,"name":null,"doc":null} tx=lsn-0000000000000020 idx=32770 pos=0/28`,
			`insert public.users key={"id":4} before=null after={"id":4,"name":null,"doc":null} tx=lsn-0000000000000020 idx=65536 pos=0/30`,
			"commit lsn-0000000000000020 xid=7 pos=0/58",
		},
	},
	{
		name:      "streamed transaction with no change: only its commit position",
		streaming: true,
		steps: []step{
			{0x10, mStreamStart(9, true)},
			{0x20, mStreamStop()},
			{0x28, mStreamAbort(9, 10)},
			{0x50, mStreamCommit(9, 0x50, 0x58)},
		},
		want: []string{"commit  xid=9 pos=0/58"},
	},
	{
		name:  "stray stream abort without streaming",
		steps: []step{{0x10, mStreamAbort(9, 9)}},
	},
	{
		name: "heartbeat messages when idle; others ignored",
		steps: []step{
			{0x10, mMessage(false, 0x10, heartbeatPrefix, "2024-03-01")},
			{0x20, mMessage(false, 0x20, "other", "x")},
			{0x30, mBegin(0x40, 7)},
			{0x30, mMessage(true, 0x38, heartbeatPrefix, "x")},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"keepalive 0/10",
			"commit  xid=7 pos=0/48", // no change: no key, no Begin
		},
	},
	{
		name: "identifiers with dots, spaces and stars",
		steps: []step{
			{0x10, mBegin(0x40, 7)},
			{0x10, mRelation(0, 102, "my.schema", "a table*", 'd', rcol{true, "the id", pgtype.Int8OID})},
			{0x20, mInsert(0, 102, tup("t:9007199254740993"))},
			{0x48, mCommit(0x40, 0x48)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`insert my.schema.a table* key={"the id":"9007199254740993"} before=null after={"the id":"9007199254740993"} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/48",
		},
	},
	{
		// PREPARE TRANSACTION: the changes go out then, as a transaction
		// that interleaves with others; COMMIT PREPARED commits it.
		name: "two-phase: prepared, an ordinary transaction, commit prepared",
		steps: []step{
			{0x20, mBeginPrepare(0x40, 0x48, 7, "g1")},
			{0x20, relUsers(0, 'd')},
			{0x20, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x28, mInsert(0, 100, tup("t:2", "n", "n"))},
			{0x48, mPrepareLike('P', 0x40, 0x48, 7, "g1")},
			{0x50, mBegin(0x60, 8)},
			{0x50, mInsert(0, 100, tup("t:3", "n", "n"))},
			{0x68, mCommit(0x60, 0x68)},
			{0x78, mPrepareLike('K', 0x70, 0x78, 7, "g1")},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7 streamed",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} tx=lsn-0000000000000020 idx=32768 pos=0/28`,
			"begin lsn-0000000000000050 xid=8",
			`insert public.users key={"id":3} before=null after={"id":3,"name":null,"doc":null} tx=lsn-0000000000000050 idx=0 pos=0/50`,
			"commit lsn-0000000000000050 xid=8 pos=0/68",
			"commit lsn-0000000000000020 xid=7 pos=0/78",
		},
	},
	{
		name: "two-phase: rollback prepared retracts, then gives its position",
		steps: []step{
			{0x20, mBeginPrepare(0x40, 0x48, 7, "g1")},
			{0x20, relUsers(0, 'd')},
			{0x20, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x48, mPrepareLike('P', 0x40, 0x48, 7, "g1")},
			{0x78, mRollbackPrepared(0x48, 0x78, 7, "g1")},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7 streamed",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"rollback lsn-0000000000000020 xid=7 sub=",
			"keepalive 0/78",
		},
	},
	{
		// PostgreSQL sends every prepared transaction, published changes
		// or not.
		name: "two-phase: prepared transactions without changes give positions only",
		steps: []step{
			{0x20, mBeginPrepare(0x40, 0x48, 7, "g1")},
			{0x48, mPrepareLike('P', 0x40, 0x48, 7, "g1")},
			{0x50, mBeginPrepare(0x50, 0x58, 8, "g2")},
			{0x58, mPrepareLike('P', 0x50, 0x58, 8, "g2")},
			{0x78, mPrepareLike('K', 0x70, 0x78, 7, "g1")},
			{0x88, mRollbackPrepared(0x58, 0x88, 8, "g2")},
		},
		want: []string{"commit  xid=7 pos=0/78", "keepalive 0/88"},
	},
	{
		name:      "two-phase: streamed, then stream prepare, then commit prepared",
		streaming: true,
		steps: []step{
			{0x10, mStreamStart(9, true)},
			{0x10, relUsers(9, 'd')},
			{0x30, mInsert(9, 100, tup("t:1", "n", "n"))},
			{0x40, mStreamStop()},
			{0x50, mPrepareLike('p', 0x48, 0x50, 9, "g9")},
			{0x60, mPrepareLike('K', 0x58, 0x60, 9, "g9")},
		},
		want: []string{
			"begin lsn-0000000000000030 xid=9 streamed",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000030 idx=0 pos=0/30`,
			"commit lsn-0000000000000030 xid=9 pos=0/60",
		},
	},
	{
		// Run starts at the oldest prepare of its position (0x20): what
		// ended before 0x100 is skipped, but the prepared transaction the
		// position lists (0x40), whose changes the tracker lost.
		name:       "two-phase: re-reading for a prepared transaction of the start position",
		skipBefore: 0x100,
		relisted:   []lsn{0x40},
		steps: []step{
			{0x10, relUsers(0, 'd')},
			{0x20, mBeginPrepare(0x40, 0x48, 7, "open")},
			{0x20, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x48, mPrepareLike('P', 0x40, 0x48, 7, "open")},
			{0x50, mBeginPrepare(0x60, 0x68, 8, "done")}, // resolved before the position
			{0x50, mInsert(0, 100, tup("t:2", "n", "n"))},
			{0x68, mPrepareLike('P', 0x60, 0x68, 8, "done")},
			{0x70, mBegin(0x80, 10)}, // committed before the position
			{0x70, mInsert(0, 100, tup("t:3", "n", "n"))},
			{0x88, mCommit(0x80, 0x88)},
			{0xA8, mPrepareLike('K', 0xA0, 0xA8, 8, "done")},
			{0x108, mPrepareLike('K', 0x100, 0x108, 7, "open")},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7 streamed",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/108",
		},
	},
	{
		// M5: transactions an earlier connection handed over while they
		// were open. One sent again with the same first change keeps its
		// key (the tracker starts it over); one whose first change is now
		// another (the first was in a subtransaction rolled back since)
		// retracts the old key; one sent again with no change left
		// retracts it too.
		name:      "orphans sent again",
		streaming: true,
		orphans:   map[uint32]string{7: "lsn-0000000000000020", 8: "lsn-0000000000000030", 9: "lsn-0000000000000040"},
		steps: []step{
			{0x10, relUsers(0, 'd')},
			{0x60, mBegin(0x70, 7)},
			{0x20, mInsert(0, 100, tup("t:1", "n", "n"))},
			{0x78, mCommit(0x70, 0x78)},
			{0x80, mBegin(0x90, 8)},
			{0x38, mInsert(0, 100, tup("t:2", "n", "n"))},
			{0x98, mCommit(0x90, 0x98)},
			{0xA0, mStreamStart(9, true)},
			{0xA8, mStreamStop()},
			{0xB8, mStreamCommit(9, 0xB0, 0xB8)},
		},
		want: []string{
			"begin lsn-0000000000000020 xid=7",
			`insert public.users key={"id":1} before=null after={"id":1,"name":null,"doc":null} tx=lsn-0000000000000020 idx=0 pos=0/20`,
			"commit lsn-0000000000000020 xid=7 pos=0/78",
			"rollback lsn-0000000000000030 xid=8 sub=",
			"begin lsn-0000000000000038 xid=8",
			`insert public.users key={"id":2} before=null after={"id":2,"name":null,"doc":null} tx=lsn-0000000000000038 idx=0 pos=0/38`,
			"commit lsn-0000000000000038 xid=8 pos=0/98",
			"rollback lsn-0000000000000040 xid=9 sub=",
			"commit  xid=9 pos=0/B8",
		},
	},
	{name: "error - begin prepare too short", steps: []step{{0x10, mBeginPrepare(0x40, 0x48, 7, "g")[:20]}}, wantErr: "b of 20 bytes"},
	{name: "error - GID not terminated", steps: []step{{0x10, wb(mPrepareLike('K', 0x40, 0x48, 7, "g")).u8(0)[:31]}}, wantErr: "GID not terminated"},
	{name: "error - rollback prepared too short", steps: []step{{0x10, mRollbackPrepared(0x40, 0x48, 7, "g")[:30]}}, wantErr: "r of 30 bytes"},
	{name: "error - prepare outside a prepared transaction", steps: []step{{0x10, mPrepareLike('P', 0x40, 0x48, 7, "g")}}, wantErr: "outside a prepared transaction"},
	{name: "error - prepare of another transaction", steps: []step{{0x10, mBeginPrepare(0x40, 0x48, 7, "g")}, {0x10, mPrepareLike('P', 0x40, 0x48, 8, "g")}}, wantErr: "prepare of transaction 8"},
	{name: "error - commit prepared inside a transaction", steps: []step{{0x10, mBegin(0x40, 6)}, {0x10, mPrepareLike('K', 0x40, 0x48, 7, "g")}}, wantErr: "inside a transaction"},
	{name: "error - begin prepare inside a stream", streaming: true, steps: []step{{0x10, mStreamStart(9, true)}, {0x10, mBeginPrepare(0x40, 0x48, 7, "g")}}, wantErr: "inside a stream"},
	{name: "error - unknown relation", steps: []step{{0x10, mBegin(0x40, 7)}, {0x20, mInsert(0, 99, tup("t:1"))}}, wantErr: "unknown relation 99"},
	{name: "error - change outside a transaction", steps: []step{{0x10, relUsers(0, 'd')}, {0x20, mInsert(0, 100, tup("t:1", "n", "n"))}}, wantErr: "outside a transaction"},
	{name: "error - column count", steps: []step{{0x10, mBegin(0x40, 7)}, {0x10, relUsers(0, 'd')}, {0x20, mInsert(0, 100, tup("t:1"))}}, wantErr: "columns"},
	{name: "error - truncated tuple", steps: []step{{0x10, mBegin(0x40, 7)}, {0x10, relUsers(0, 'd')}, {0x20, mInsert(0, 100, tup("t:1", "n", "t:abc"))[:20]}}, wantErr: "malformed"},
	{name: "error - huge truncate count", steps: []step{{0x10, mBegin(0x40, 7)}, {0x20, wb{'T'}.u32(0xFFFFFFFF).u8(0).u32(1)}}, wantErr: "truncate of"},
	{name: "error - truncated relation", steps: []step{{0x10, relUsers(0, 'd')[:12]}}, wantErr: "malformed"},
	{name: "error - unsupported message", steps: []step{{0x10, []byte{'Z', 1, 2}}}, wantErr: "unsupported"},
}

// runDecode feeds steps to a decoder and returns the record summaries.
func runDecode(tc decodeCase) ([]string, error) {
	d := newDecoder(tc.tracks, nil, tc.skipBefore, tc.streaming)
	for _, l := range tc.relisted {
		d.carry.relisted[l] = true
	}
	for xid, key := range tc.orphans {
		d.carry.orphans[xid] = &orphan{xid: xid, key: key, id: fmt.Sprint(xid)}
	}
	var got []string
	for _, s := range tc.steps {
		if err := d.decode(s.msg, s.at); err != nil {
			return got, err
		}
		for _, r := range d.out {
			got = append(got, summary(r))
			if r.Kind == tracker.RecordChange && (r.Change.Bind != "" || r.Change.TxID != "" || !r.Change.CommitTime.IsZero() || r.Change.Source != "postgresql") {
				return got, errors.New("change without its source, or with a field the tracker stamps (see tracker.Record)")
			}
		}
	}
	return got, nil
}

func TestDecode(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runDecode(tc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errMalformed) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestDecodeCommitTimeAndValues(t *testing.T) {
	d := newDecoder(nil, nil, 0, false)
	for _, s := range []step{{0x10, mBegin(0x40, 7)}, {0x10, relUsers(0, 'd')}} {
		if err := d.decode(s.msg, s.at); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.decode(mInsert(0, 100, tup("t:1", "n", "n")), 0x20); err != nil {
		t.Fatal(err)
	}
	if len(d.out) != 2 || d.out[0].Kind != tracker.RecordBegin {
		t.Fatalf("records %v: want the Begin, handed over at the first change, and the change", d.out)
	}
	// The commit time and transaction id are the Begin's; the tracker
	// stamps them on its changes.
	if b := d.out[0].Tx; !b.CommitTime.Equal(testEpoch) || b.TxID != "7" {
		t.Fatalf("commit time %v, txid %q", b.CommitTime, b.TxID)
	}
	c := d.out[1].Change
	// The change owns its values: decoding the next message must not
	// change them.
	before := string(c.After.AppendJSON(nil))
	if err := d.decode(mInsert(0, 100, tup("t:2", "t:zzz", "t:[]")), 0x28); err != nil {
		t.Fatal(err)
	}
	if after := string(c.After.AppendJSON(nil)); after != before {
		t.Fatalf("values changed from %s to %s", before, after)
	}
}

// seedMessages are the messages of every table case, for fuzzing.
func seedMessages() [][]byte {
	var out [][]byte
	for _, tc := range decodeCases {
		for _, s := range tc.steps {
			out = append(out, s.msg)
		}
	}
	return out
}

func FuzzDecode(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(m, false)
		f.Add(m, true)
	}
	f.Fuzz(func(t *testing.T, msg []byte, inStream bool) {
		d := newDecoder(nil, nil, 0, true)
		// A decoder in a transaction (or a stream) that knows relation 100.
		setup := []step{{0x10, mBegin(0x40, 7)}, {0x10, relUsers(0, 'd')}}
		if inStream {
			setup = []step{{0x10, mStreamStart(9, true)}, {0x10, relUsers(9, 'd')}}
		}
		for _, s := range setup {
			if err := d.decode(s.msg, s.at); err != nil {
				t.Fatal(err)
			}
		}
		err := d.decode(msg, 0x20)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v is not errMalformed", err)
			}
			if len(msg) > 0 && strings.ContainsRune("IUDbPKrp", rune(msg[0])) && strings.Contains(err.Error(), "panic") {
				t.Fatalf("the row or two-phase decoder panicked: %v", err)
			}
			return
		}
		for _, r := range d.out {
			if r.Kind != tracker.RecordChange {
				continue
			}
			for _, row := range []tracker.Row{r.Change.Key, r.Change.Before, r.Change.After} {
				if !json.Valid(row.AppendJSON(nil)) {
					t.Fatalf("invalid JSON row %s", row.AppendJSON(nil))
				}
			}
		}
	})
}

// benchRelation is a 10-column table of common types.
func benchRelation() []byte {
	return mRelation(0, 200, "public", "orders", 'd',
		rcol{true, "id", pgtype.Int8OID}, rcol{false, "customer_id", pgtype.Int4OID},
		rcol{false, "status", pgtype.TextOID}, rcol{false, "total", pgtype.NumericOID},
		rcol{false, "paid", pgtype.BoolOID}, rcol{false, "created_at", pgtype.TimestamptzOID},
		rcol{false, "attrs", pgtype.JSONBOID}, rcol{false, "weight", pgtype.Float8OID},
		rcol{false, "ref", pgtype.UUIDOID}, rcol{false, "note", pgtype.VarcharOID})
}

func benchInsert() []byte {
	return mInsert(0, 200, tup("t:1234567", "t:42", "t:shipped", "t:199.95", "t:t",
		"t:2024-03-01 12:34:56.123456+00", `t:{"gift": false, "tags": ["a", "b"]}`, "t:1.25",
		"t:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "t:leave at the door"))
}

func BenchmarkDecodeInsert(b *testing.B) {
	d := newDecoder(nil, nil, 0, false)
	for _, s := range []step{{0x10, mBegin(0x40, 7)}, {0x10, benchRelation()}} {
		if err := d.decode(s.msg, s.at); err != nil {
			b.Fatal(err)
		}
	}
	msg := benchInsert()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.decode(msg, 0x20); err != nil {
			b.Fatal(err)
		}
	}
}
