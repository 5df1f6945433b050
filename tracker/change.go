package tracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/trackerd/trackerd/internal/fastjson"
	"github.com/trackerd/trackerd/internal/jsonw"
)

// Op is what a change did to its row.
type Op string

// The operations. They are Flask-SQLAlchemy's operation names, plus truncate
// and snapshot.
const (
	OpInsert   Op = "insert"
	OpUpdate   Op = "update"
	OpDelete   Op = "delete"
	OpTruncate Op = "truncate"
	OpSnapshot Op = "snapshot"
)

// Valid reports whether o is one of the operations above.
func (o Op) Valid() bool {
	switch o {
	case OpInsert, OpUpdate, OpDelete, OpTruncate, OpSnapshot:
		return true
	}
	return false
}

// Row is one image of a row: its column names in table order, and each
// value as JSON text (the README's "Subjects and events": numbers that fit
// stay numbers, exact decimals and 64-bit integers as strings, timestamps
// RFC 3339, bytes base64, JSON columns embedded).
//
// A nil entry in Values means the database did not send that column (see
// [Change.Unchanged]); JSON null is the four bytes "null". Names may be
// shared by every row of a table and must not be modified. The zero Row means
// "no image" and encodes as JSON null.
type Row struct {
	Names  []string
	Values []json.RawMessage
}

// IsZero reports whether r holds no image at all.
func (r Row) IsZero() bool { return r.Names == nil }

// Len returns the number of columns, present or not.
func (r Row) Len() int { return len(r.Names) }

// Get returns the JSON value of the named column, and false when the row has
// no such column or the database did not send it.
func (r Row) Get(name string) (json.RawMessage, bool) {
	for i, n := range r.Names {
		if n == name {
			v := r.Values[i]
			return v, v != nil
		}
	}
	return nil, false
}

// Map decodes the row into a map, numbers as json.Number. Columns that were
// not sent are left out. It allocates; prefer Get on hot paths.
func (r Row) Map() (map[string]any, error) {
	if r.IsZero() {
		return nil, nil
	}
	m := make(map[string]any, len(r.Names))
	for i, n := range r.Names {
		if r.Values[i] == nil {
			continue
		}
		d := json.NewDecoder(bytes.NewReader(r.Values[i]))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			return nil, fmt.Errorf("column %q: %w", n, err)
		}
		m[n] = v
	}
	return m, nil
}

// AppendJSON appends r as a JSON object in column order, leaving out
// columns whose value was not sent; the zero Row appends null.
func (r Row) AppendJSON(b []byte) []byte {
	if r.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '{')
	first := true
	for i, n := range r.Names {
		v := r.Values[i]
		if v == nil {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = AppendJSONString(b, n)
		b = append(b, ':')
		b = append(b, v...)
	}
	return append(b, '}')
}

// MarshalJSON encodes r as AppendJSON does.
func (r Row) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil), nil }

// UnmarshalJSON decodes a JSON object (or null) into r, keeping the order
// of its members. The values share one copy of data; names without escapes
// share another.
func (r *Row) UnmarshalJSON(data []byte) error {
	data = bytes.Trim(data, " \t\n\r") // JSON's white space, not Unicode's
	if string(data) == "null" {
		*r = Row{}
		return nil
	}
	if len(data) == 0 || data[0] != '{' {
		return fmt.Errorf("row: want a JSON object, got %.20q", data)
	}
	if !json.Valid(data) {
		return fmt.Errorf("row: invalid JSON object %.40q", data)
	}
	// data is a valid JSON object from here on: the scan below relies on it.
	buf := bytes.Clone(data)
	str := string(data)
	names := make([]string, 0, 8)
	values := make([]json.RawMessage, 0, 8)
	i := skipSpace(buf, 1)
	if buf[i] == '}' {
		*r = Row{Names: names}
		return nil
	}
	for {
		i = skipSpace(buf, i)
		end := endOfString(buf, i)
		name := str[i+1 : end-1]
		if bytes.IndexByte(buf[i:end], '\\') >= 0 || !utf8.ValidString(name) {
			// Escapes, or bytes encoding/json replaces with U+FFFD.
			if err := json.Unmarshal(buf[i:end], &name); err != nil {
				return fmt.Errorf("row column name %s: %w", buf[i:end], err)
			}
		}
		i = skipSpace(buf, end) + 1 // past ':'
		i = skipSpace(buf, i)
		end = endOfValue(buf, i)
		names = append(names, name)
		values = append(values, json.RawMessage(buf[i:end:end]))
		i = skipSpace(buf, end)
		if buf[i] == '}' {
			break
		}
		i++ // past ','
	}
	*r = Row{Names: names, Values: values}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just past the valid JSON string at b[i].
func endOfString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// endOfValue returns the index just past the valid JSON value at b[i].
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = endOfString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// Change is one row change of a committed (or, with streaming, in-progress)
// transaction, as a source reports it and receivers and consumers see it.
type Change struct {
	// Bind is the bind key the change was read from.
	Bind string
	// Source is the source kind: "postgresql", "mysql" or "mariadb".
	Source string
	// Origin is the stable token of the identity of the server, database
	// and stream the change was read from (see [Origin]); the tracker sets
	// it. It is part of the event ids and the CloudEvent source.
	Origin string
	// Op is what happened to the row.
	Op Op
	// Schema is the PostgreSQL schema, or the MySQL database.
	Schema string
	// Table is the table name.
	Table string
	// Key holds the primary-key (replica identity) columns of the row the
	// change applies to — for a delete, and for an update that changed the
	// key, their old values — zero when the table has none.
	Key Row
	// Before is the old row image, zero where the database gives none.
	Before Row
	// After is the new row image, zero for deletes and truncates.
	After Row
	// Unchanged names the columns whose value the database did not send
	// (PostgreSQL unchanged TOAST values); they are absent from After, never
	// null.
	Unchanged []string
	// Truncated names columns whose value was left out because the event
	// would have exceeded the server's maximum message size.
	Truncated []string
	// TxID is the source's transaction id: the PostgreSQL xid, the
	// MySQL/MariaDB GTID, or binlog file:position without GTIDs.
	TxID string
	// TxKey identifies the transaction in event ids: "lsn-<16 hex>" of its
	// first LSN, "gtid-..." or "pos-<file>-<position>".
	TxKey string
	// SubTx is the PostgreSQL subtransaction a streamed change belongs to,
	// empty otherwise; a rollback to a savepoint retracts by it.
	SubTx string
	// Seq is the change's 0-based ordinal among the changes of its
	// transaction that the bind publishes (after its table filters):
	// trackerdtxseq. The tracker sets it.
	Seq int
	// Index is the change's place in its source transaction, counted before
	// any of trackerd's filters, so that the same change always has the
	// same index and two different changes of one transaction never share
	// one, whichever tables a bind follows. The source sets it; it must
	// grow within a transaction. PostgreSQL: derived from the change's LSN;
	// MySQL/MariaDB: the row's ordinal among all rows of the transaction.
	// A source that leaves it 0 gets the tracker's count of the changes it
	// handed over. It is part of the event id.
	Index int64
	// CommitTime is the transaction's commit time, zero when not yet known.
	CommitTime time.Time
	// Pos is the replication position of the change (PostgreSQL LSN
	// "X/X", MySQL "file:pos").
	Pos string
}

// AppendJSON appends the change as the data object of its CloudEvent:
// {op, schema, table, key, before, after, unchanged, source:{...}}.
func (c *Change) AppendJSON(b []byte) []byte {
	b = append(b, `{"op":`...)
	b = AppendJSONString(b, string(c.Op))
	b = append(b, `,"schema":`...)
	b = AppendJSONString(b, c.Schema)
	b = append(b, `,"table":`...)
	b = AppendJSONString(b, c.Table)
	b = append(b, `,"key":`...)
	b = c.Key.AppendJSON(b)
	b = append(b, `,"before":`...)
	b = c.Before.AppendJSON(b)
	b = append(b, `,"after":`...)
	b = c.After.AppendJSON(b)
	b = append(b, `,"unchanged":`...)
	b = appendStrings(b, c.Unchanged)
	if len(c.Truncated) > 0 {
		b = append(b, `,"truncated":`...)
		b = appendStrings(b, c.Truncated)
	}
	b = append(b, `,"source":{"kind":`...)
	b = AppendJSONString(b, c.Source)
	b = append(b, `,"bind":`...)
	b = AppendJSONString(b, c.Bind)
	b = append(b, `,"pos":`...)
	b = AppendJSONString(b, c.Pos)
	b = append(b, `,"txid":`...)
	b = AppendJSONString(b, c.TxID)
	b = append(b, `,"txkey":`...)
	b = AppendJSONString(b, c.TxKey)
	if c.SubTx != "" {
		b = append(b, `,"subtx":`...)
		b = AppendJSONString(b, c.SubTx)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, int64(c.Seq), 10)
	b = append(b, `,"commit_time":`...)
	if c.CommitTime.IsZero() {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = c.CommitTime.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	return append(b, "}}"...)
}

// MarshalJSON encodes the change as AppendJSON does.
func (c *Change) MarshalJSON() ([]byte, error) { return c.AppendJSON(nil), nil }

// changeJSON mirrors the data object for decoding.
type changeJSON struct {
	Op        Op       `json:"op"`
	Schema    string   `json:"schema"`
	Table     string   `json:"table"`
	Key       Row      `json:"key"`
	Before    Row      `json:"before"`
	After     Row      `json:"after"`
	Unchanged []string `json:"unchanged"`
	Truncated []string `json:"truncated"`
	Source    struct {
		Kind       string     `json:"kind"`
		Bind       string     `json:"bind"`
		Pos        string     `json:"pos"`
		TxID       string     `json:"txid"`
		TxKey      string     `json:"txkey"`
		SubTx      string     `json:"subtx"`
		Seq        int        `json:"seq"`
		CommitTime *time.Time `json:"commit_time"`
	} `json:"source"`
}

// UnmarshalJSON decodes a CloudEvent data object into c.
func (c *Change) UnmarshalJSON(data []byte) error {
	var j changeJSON
	if err := fastjson.Unmarshal(data, &j); err != nil {
		return err
	}
	if !j.Op.Valid() {
		return fmt.Errorf("change: unknown op %q", j.Op)
	}
	c.fromJSON(&j)
	return nil
}

func (c *Change) fromJSON(j *changeJSON) {
	*c = Change{
		Bind: j.Source.Bind, Source: j.Source.Kind, Op: j.Op,
		Schema: j.Schema, Table: j.Table,
		Key: j.Key, Before: j.Before, After: j.After,
		Unchanged: j.Unchanged, Truncated: j.Truncated,
		TxID: j.Source.TxID, TxKey: j.Source.TxKey, SubTx: j.Source.SubTx,
		Seq: j.Source.Seq, Pos: j.Source.Pos,
	}
	if j.Source.CommitTime != nil {
		c.CommitTime = *j.Source.CommitTime
	}
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, s)
	}
	return append(b, ']')
}

// AppendJSONString appends s as a JSON string. Invalid UTF-8 is replaced by
// U+FFFD, as encoding/json does; HTML characters are not escaped. It is
// [jsonw.EncodingJSON]'s policy, which every JSON trackerd writes outside
// the CloudEvent envelope follows.
func AppendJSONString(b []byte, s string) []byte {
	return jsonw.AppendString(b, s, jsonw.EncodingJSON)
}
