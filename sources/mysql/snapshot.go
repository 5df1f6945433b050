package mysql

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	driver "github.com/go-sql-driver/mysql"

	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// Snapshots (tracker.Snapshotter): each chunk is one MariaDB transaction
// START TRANSACTION WITH CONSISTENT SNAPSHOT, whose session status
// binlog_snapshot_file/binlog_snapshot_position is the binlog offset the
// read view matches exactly: MariaDB takes the snapshot under the lock
// that orders commits (commit_ordered), so the read sees every transaction
// whose binlog group ends at or before that offset and none after it. The
// stream's Commit records carry the end of their group (the XID event's,
// or the XA COMMIT's, end offset) as Pos, so a transaction is in a chunk
// iff its Commit's Pos compares <= the chunk's Pos (ComparePos orders by
// binlog file, then offset). A prepared XA transaction is not visible
// until its XA COMMIT, which is logged (and gets its Pos) then. MySQL has
// no such status: its snapshots are refused.

var (
	_ tracker.Snapshotter = (*Source)(nil)
	_ tracker.Nudger      = (*Source)(nil)
)

// defaultChunk is the chunk size when a request gives none.
const defaultChunk = 10000

// SnapshotTables implements [tracker.Snapshotter]: the bind's followed
// base tables (names empty) or those named ("db.table", or "table" in the
// URI's database), with their chunking key (the primary key, else the
// unique index of NOT NULL columns with the fewest columns) and
// information_schema's row estimate.
func (s *Source) SnapshotTables(ctx context.Context, names []string) ([]tracker.SnapshotTable, error) {
	qctx, cancel := withTimeout(ctx, s.bind.Pool)
	defer cancel()
	all, err := s.followedTables(qctx)
	if err != nil {
		return nil, fmt.Errorf("mysql: list the tables to snapshot: %w", err)
	}
	if len(names) == 0 {
		return all, nil
	}
	out := make([]tracker.SnapshotTable, 0, len(names))
	for _, n := range names {
		i := slices.IndexFunc(all, func(t tracker.SnapshotTable) bool {
			if strings.Contains(n, ".") && t.Name() == n {
				return true
			}
			return t.Table == n && (s.filter.db == "" || t.Schema == s.filter.db)
		})
		if i < 0 {
			followed := make([]string, len(all))
			for j, t := range all {
				followed[j] = t.Name()
			}
			list := strings.Join(followed, ", ")
			if list == "" {
				list = "none"
			}
			return nil, tracker.ConfigError(fmt.Errorf("mysql: %q is not a table bind %q follows (it follows: %s)", n, s.bind.Key, list))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// followedTables lists the base tables the filter tracks, with keys and
// estimates.
func (s *Source) followedTables(ctx context.Context) ([]tracker.SnapshotTable, error) {
	var schemas []string
	if s.filter.db != "" {
		schemas = append(schemas, s.filter.db)
		for _, e := range s.filter.include {
			if db, _, ok := strings.Cut(e, "."); ok && !slices.Contains(schemas, db) {
				schemas = append(schemas, db)
			}
		}
	}
	where, args := "", []any{}
	if len(schemas) > 0 {
		where = " AND TABLE_SCHEMA IN (?" + strings.Repeat(",?", len(schemas)-1) + ")"
		for _, db := range schemas {
			args = append(args, db)
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES
WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')`+where+` ORDER BY TABLE_SCHEMA, TABLE_NAME`, args...)
	if err != nil {
		return nil, err
	}
	var out []tracker.SnapshotTable
	for rows.Next() {
		var t tracker.SnapshotTable
		var est sql.NullInt64
		if err := rows.Scan(&t.Schema, &t.Table, &est); err != nil {
			rows.Close()
			return nil, err
		}
		if !s.filter.tracks(t.Schema, t.Table) {
			continue
		}
		t.Estimate = -1
		if est.Valid {
			t.Estimate = est.Int64
		}
		out = append(out, t)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	keys, err := s.uniqueKeys(ctx, schemas)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Key = keys[out[i].Schema+"\x00"+out[i].Table]
	}
	return out, nil
}

// uniqueKeys returns the chunking key of every table of schemas (all when
// empty) that has one: its primary key, else its unique index of NOT NULL
// whole columns (no prefix) with the fewest columns (then the first by
// name).
func (s *Source) uniqueKeys(ctx context.Context, schemas []string) (map[string][]string, error) {
	where, args := "", []any{}
	if len(schemas) > 0 {
		where = " AND TABLE_SCHEMA IN (?" + strings.Repeat(",?", len(schemas)-1) + ")"
		for _, db := range schemas {
			args = append(args, db)
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, COLUMN_NAME, SUB_PART IS NOT NULL, NULLABLE = 'YES'
FROM information_schema.STATISTICS WHERE NON_UNIQUE = 0`+where+` ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX`, args...)
	if err != nil {
		return nil, err
	}
	type index struct {
		cols   []string
		usable bool
	}
	byTable := map[string]map[string]*index{}
	order := map[string][]string{}
	for rows.Next() {
		var db, table, name, col string
		var prefix, nullable bool
		if err := rows.Scan(&db, &table, &name, &col, &prefix, &nullable); err != nil {
			rows.Close()
			return nil, err
		}
		k := db + "\x00" + table
		m := byTable[k]
		if m == nil {
			m = map[string]*index{}
			byTable[k] = m
		}
		ix := m[name]
		if ix == nil {
			ix = &index{usable: true}
			m[name] = ix
			order[k] = append(order[k], name)
		}
		ix.cols = append(ix.cols, col)
		if prefix || nullable {
			ix.usable = false
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	keys := make(map[string][]string, len(byTable))
	for k, m := range byTable {
		var best *index
		for _, name := range order[k] {
			ix := m[name]
			if !ix.usable {
				continue
			}
			if name == "PRIMARY" {
				best = ix
				break
			}
			if best == nil || len(ix.cols) < len(best.cols) {
				best = ix
			}
		}
		if best != nil {
			keys[k] = best.cols
		}
	}
	return keys, nil
}

// ComparePos implements [tracker.Snapshotter]: positions (commit,
// keepalive and chunk positions) are ordered by binlog file, then offset;
// their GTID states and XA lists play no part.
func (s *Source) ComparePos(a, b string) (int, error) {
	fa, pa, err := filePosOf(a)
	if err != nil {
		return 0, err
	}
	fb, pb, err := filePosOf(b)
	if err != nil {
		return 0, err
	}
	x, y := position{File: fa, Pos: pa}, position{File: fb, Pos: pb}
	switch {
	case before(x, y):
		return -1, nil
	case before(y, x):
		return 1, nil
	}
	return 0, nil
}

// filePosOf returns the binlog file and offset of a position string: by a
// scan of appendJSON's layout, else by parsePosition.
func filePosOf(s string) (string, uint32, error) {
	if f, p, ok := scanFilePos(s); ok {
		return f, p, nil
	}
	p, err := parsePosition(s)
	if err != nil {
		return "", 0, err
	}
	if p.File == "" {
		return "", 0, fmt.Errorf("position %q has no binlog file: it cannot be ordered", s)
	}
	return p.File, p.Pos, nil
}

// scanFilePos reads {"gtid":"...","file":"...","pos":N...} as appendJSON
// writes it, without allocating.
func scanFilePos(s string) (string, uint32, bool) {
	rest, ok := strings.CutPrefix(s, "{")
	if !ok {
		return "", 0, false
	}
	if r, ok := strings.CutPrefix(rest, `"gtid":"`); ok {
		i := strings.IndexByte(r, '"')
		if i < 0 || strings.IndexByte(r[:i], '\\') >= 0 || !strings.HasPrefix(r[i+1:], ",") {
			return "", 0, false
		}
		rest = r[i+2:]
	}
	rest, ok = strings.CutPrefix(rest, `"file":"`)
	if !ok {
		return "", 0, false
	}
	i := strings.IndexByte(rest, '"')
	if i <= 0 || strings.IndexByte(rest[:i], '\\') >= 0 {
		return "", 0, false
	}
	file := rest[:i]
	rest, ok = strings.CutPrefix(rest[i+1:], `,"pos":`)
	if !ok {
		return "", 0, false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n == len(rest) || rest[n] != ',' && rest[n] != '}' {
		return "", 0, false
	}
	v, err := strconv.ParseUint(rest[:n], 10, 32)
	if err != nil {
		return "", 0, false
	}
	return file, uint32(v), true
}

// Nudge implements [tracker.Nudger]: the binlog stream, when it waits for
// events outside a transaction, hands a keepalive with its position soon.
// It never blocks.
func (s *Source) Nudge() {
	if f := s.nudge.Load(); f != nil {
		(*f)()
	}
}

// snapConv says how a value read by SQL becomes the JSON the stream gives
// for the same value in a row image.
type snapConv uint8

const (
	convInt       snapConv = iota // TINYINT..INT, YEAR: the text is the number
	convBigInt                    // BIGINT: beyond 2^53 a string
	convBigUint                   // BIGINT UNSIGNED
	convYear                      // YEAR: 0000 is 0
	convFloat                     // FLOAT, read as CAST(c AS DOUBLE), kept at float32
	convDouble                    // DOUBLE
	convDecimal                   // DECIMAL: the exact text, quoted
	convBit                       // BIT: big-endian bytes, a number
	convDate                      // DATE: the text, quoted
	convTime                      // TIME: fraction trimmed
	convDatetime                  // DATETIME: ISO without zone, zero dates literal
	convTimestamp                 // TIMESTAMP (read in UTC): RFC 3339 with Z
	convEnum                      // ENUM, read as c+0: its label
	convSet                       // SET, read as c+0: its labels
	convString                    // text and binary strings, MariaDB's JSON
	convUUID                      // UUID, read as CAST(c AS BINARY(16))
	convINET6                     // INET6, read as CAST(c AS BINARY(16))
	convINET4                     // INET4, read as CAST(c AS BINARY(4))
	convBytes                     // GEOMETRY, VECTOR: base64 of the bytes
)

// snapCol is a column of a table being read.
type snapCol struct {
	col  column // what appendString, appendEnum and appendSet need
	conv snapConv
	dec  int    // fraction digits of temporal columns
	expr string // the select expression
	// charset and collation name text columns for key literals.
	charset, collation string
}

// snapTable is a table being read, as information_schema describes it.
type snapTable struct {
	cols     []snapCol
	names    []string
	keyIdx   []int
	keyNames []string
}

// quoteIdent quotes a MySQL identifier.
func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

// describeSnap reads a table's columns on conn.
func (s *Source) describeSnap(ctx context.Context, conn *sql.Conn, t tracker.SnapshotTable) (*snapTable, error) {
	rows, err := conn.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(CHARACTER_SET_NAME, ''), COALESCE(COLLATION_NAME, ''), COALESCE(DATETIME_PRECISION, 0)
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, t.Schema, t.Table)
	if err != nil {
		return nil, err
	}
	st := &snapTable{}
	for rows.Next() {
		var name, dataType, colType, cs, coll string
		var dec int
		if err := rows.Scan(&name, &dataType, &colType, &cs, &coll, &dec); err != nil {
			rows.Close()
			return nil, err
		}
		sc, err := newSnapCol(name, strings.ToLower(dataType), colType, cs, coll, dec)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("column %q: %w", name, err)
		}
		st.cols = append(st.cols, sc)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	if len(st.cols) == 0 {
		return nil, fmt.Errorf("table %s does not exist (dropped?)", t.Name())
	}
	if s.info.mariadb {
		// MariaDB's JSON is LONGTEXT with a json_valid CHECK constraint.
		crows, err := conn.QueryContext(ctx, `SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?`, t.Schema, t.Table)
		if err != nil {
			return nil, err
		}
		for crows.Next() {
			var clause string
			if err := crows.Scan(&clause); err != nil {
				crows.Close()
				return nil, err
			}
			for _, name := range jsonValidColumns(clause) {
				for i := range st.cols {
					if c := &st.cols[i]; c.col.name == name && c.conv == convString && c.col.cs.kind != textBinary {
						c.col.kind = kindJSONText
					}
				}
			}
		}
		if err := errors.Join(crows.Err(), crows.Close()); err != nil {
			return nil, err
		}
	}
	st.names = make([]string, len(st.cols))
	for i := range st.cols {
		st.names[i] = st.cols[i].col.name
	}
	for _, k := range t.Key {
		i := slices.Index(st.names, k)
		if i < 0 {
			return nil, fmt.Errorf("key column %q of %s is no longer in the table", k, t.Name())
		}
		switch st.cols[i].conv {
		case convBytes:
			return nil, fmt.Errorf("key column %q of %s: a %s key cannot be read in chunks", k, t.Name(), "spatial or vector")
		}
		st.keyIdx = append(st.keyIdx, i)
	}
	st.keyNames = slices.Clone(t.Key)
	return st, nil
}

// newSnapCol maps an information_schema column to its conversion.
func newSnapCol(name, dataType, colType, cs, coll string, dec int) (snapCol, error) {
	q := quoteIdent(name)
	sc := snapCol{col: column{name: name, typ: gm.MYSQL_TYPE_BLOB}, expr: q, dec: dec, charset: cs, collation: coll}
	unsigned := strings.Contains(strings.ToLower(colType), "unsigned")
	switch dataType {
	case "tinyint", "smallint", "mediumint", "int", "integer":
		sc.conv = convInt
	case "bigint":
		sc.conv = convBigInt
		if unsigned {
			sc.conv = convBigUint
		}
	case "year":
		sc.conv = convYear
	case "float":
		sc.conv, sc.expr = convFloat, "CAST("+q+" AS DOUBLE)"
	case "double", "real", "double precision":
		sc.conv = convDouble
	case "decimal", "numeric", "fixed":
		sc.conv = convDecimal
	case "bit":
		sc.conv = convBit
	case "date":
		sc.conv = convDate
	case "time":
		sc.conv = convTime
	case "datetime":
		sc.conv = convDatetime
	case "timestamp":
		sc.conv = convTimestamp
	case "enum":
		sc.conv, sc.expr = convEnum, q+"+0"
		sc.col.typ = gm.MYSQL_TYPE_ENUM
		sc.col.labels = parseEnumLabels(colType)
	case "set":
		sc.conv, sc.expr = convSet, q+"+0"
		sc.col.typ = gm.MYSQL_TYPE_SET
		sc.col.labels = parseEnumLabels(colType)
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "json",
		"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		sc.conv = convString
		if cs == "" {
			sc.col.cs = charset{kind: textBinary}
		} else {
			sc.col.cs = charsetByName(cs)
		}
		if dataType == "json" {
			sc.col.kind = kindJSONText
		}
	case "uuid":
		sc.conv, sc.expr = convUUID, "CAST("+q+" AS BINARY(16))"
	case "inet6":
		sc.conv, sc.expr = convINET6, "CAST("+q+" AS BINARY(16))"
	case "inet4":
		sc.conv, sc.expr = convINET4, "CAST("+q+" AS BINARY(4))"
	case "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection", "vector":
		sc.conv = convBytes
	default:
		return sc, fmt.Errorf("type %s cannot be read by a snapshot", colType)
	}
	return sc, nil
}

var errSnapValue = errors.New("unexpected value text")

// appendSnapValue appends the JSON of one non-NULL value as the stream
// encodes it, from the text the server sent for c's select expression.
func appendSnapValue(dst []byte, c *snapCol, b []byte, escape bool) ([]byte, error) {
	switch c.conv {
	case convInt:
		if !isNumber(b, false) {
			return dst, errSnapValue
		}
		return append(dst, b...), nil
	case convBigInt:
		v, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return dst, err
		}
		return srckit.AppendInt(dst, v), nil
	case convBigUint, convEnum, convSet, convYear:
		v, err := strconv.ParseUint(string(b), 10, 64)
		if err != nil {
			return dst, err
		}
		switch c.conv {
		case convEnum:
			return appendEnum(dst, &c.col, int(v), escape), nil
		case convSet:
			return appendSet(dst, &c.col, v), nil
		case convYear:
			return strconv.AppendUint(dst, v, 10), nil
		}
		return srckit.AppendUint(dst, v), nil
	case convFloat, convDouble:
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return dst, err
		}
		if c.conv == convFloat {
			return appendFloat(dst, float64(float32(f)), 32), nil
		}
		return appendFloat(dst, f, 64), nil
	case convDecimal:
		if !isNumber(b, true) {
			return dst, errSnapValue
		}
		dst = append(dst, '"')
		dst = append(dst, b...)
		return append(dst, '"'), nil
	case convBit:
		if len(b) > 8 {
			return dst, errSnapValue
		}
		var v uint64
		for _, x := range b {
			v = v<<8 | uint64(x)
		}
		return srckit.AppendUint(dst, v), nil
	case convDate:
		y, mo, d, ok := parseDate(b)
		if !ok || len(b) != 10 {
			return dst, errSnapValue
		}
		dst = append(dst, '"')
		dst = appendDate(dst, y, mo, d)
		return append(dst, '"'), nil
	case convTime:
		neg, h, m, sec, usec, ok := parseTimeText(b)
		if !ok {
			return dst, errSnapValue
		}
		return appendTime(dst, neg, h, m, sec, usec), nil
	case convDatetime, convTimestamp:
		dt, ok := parseDatetime(b)
		if !ok {
			return dst, errSnapValue
		}
		if c.conv == convDatetime {
			return dt.appendJSON(dst, c.dec)
		}
		if dt.year == 0 && dt.month == 0 && dt.day == 0 && dt.hour == 0 && dt.minute == 0 && dt.second == 0 {
			return appendTimestamp(dst, 0, dt.usec, c.dec), nil
		}
		sec := time.Date(dt.year, time.Month(dt.month), dt.day, dt.hour, dt.minute, dt.second, 0, time.UTC).Unix()
		return appendTimestamp(dst, sec, dt.usec, c.dec), nil
	case convString:
		return appendString(dst, &c.col, b, escape), nil
	case convUUID:
		if len(b) != 16 {
			return dst, errSnapValue
		}
		return appendUUID(dst, [16]byte(b)), nil
	case convINET6:
		if len(b) != 16 {
			return dst, errSnapValue
		}
		dst = append(dst, '"')
		dst = netip.AddrFrom16([16]byte(b)).AppendTo(dst)
		return append(dst, '"'), nil
	case convINET4:
		if len(b) != 4 {
			return dst, errSnapValue
		}
		dst = append(dst, '"')
		dst = netip.AddrFrom4([4]byte(b)).AppendTo(dst)
		return append(dst, '"'), nil
	case convBytes:
		return appendBase64(dst, b), nil
	}
	return dst, errSnapValue
}

// isNumber reports whether b is an integer (or, with frac, a decimal)
// literal.
func isNumber(b []byte, frac bool) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	dot := false
	for _, x := range b {
		switch {
		case x >= '0' && x <= '9':
		case x == '.' && frac && !dot:
			dot = true
		default:
			return false
		}
	}
	return true
}

func digits(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	v := 0
	for _, x := range b {
		if x < '0' || x > '9' {
			return 0, false
		}
		v = v*10 + int(x-'0')
	}
	return v, true
}

// parseDate reads YYYY-MM-DD at the start of b.
func parseDate(b []byte) (y, m, d int, ok bool) {
	if len(b) < 10 || b[4] != '-' || b[7] != '-' {
		return 0, 0, 0, false
	}
	y, ok1 := digits(b[0:4])
	m, ok2 := digits(b[5:7])
	d, ok3 := digits(b[8:10])
	return y, m, d, ok1 && ok2 && ok3
}

// parseFrac reads ".ffffff" (up to 6 digits) into microseconds.
func parseFrac(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, true
	}
	if b[0] != '.' || len(b) > 7 {
		return 0, false
	}
	v, ok := digits(b[1:])
	if !ok {
		return 0, false
	}
	for range 7 - len(b) {
		v *= 10
	}
	return v, true
}

// parseDatetime reads "YYYY-MM-DD HH:MM:SS[.ffffff]".
func parseDatetime(b []byte) (dateTime, bool) {
	var dt dateTime
	y, mo, d, ok := parseDate(b)
	if !ok || len(b) < 19 || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return dt, false
	}
	h, ok1 := digits(b[11:13])
	mi, ok2 := digits(b[14:16])
	s, ok3 := digits(b[17:19])
	us, ok4 := parseFrac(b[19:])
	if !(ok1 && ok2 && ok3 && ok4) {
		return dt, false
	}
	return dateTime{year: y, month: mo, day: d, hour: h, minute: mi, second: s, usec: us}, true
}

// parseTimeText reads "[-]H+:MM:SS[.ffffff]".
func parseTimeText(b []byte) (neg bool, h, m, s, usec int, ok bool) {
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	i := strings.IndexByte(string(b), ':')
	if i < 1 || len(b) < i+6 || b[i+3] != ':' {
		return
	}
	var ok1, ok2, ok3, ok4 bool
	h, ok1 = digits(b[:i])
	m, ok2 = digits(b[i+1 : i+3])
	s, ok3 = digits(b[i+4 : i+6])
	usec, ok4 = parseFrac(b[i+6:])
	ok = ok1 && ok2 && ok3 && ok4
	return
}

// cursor is a chunk's Next: the key columns and the last row's key
// values, each in the form keyLiteral reads (hex for strings).
type cursor struct {
	Key   []string `json:"key"`
	After []string `json:"after"`
}

// cursorValue is the cursor form of a key value the server sent.
func cursorValue(c *snapCol, b []byte) (string, error) {
	switch c.conv {
	case convString:
		return hex.EncodeToString(b), nil
	case convBit:
		var v uint64
		for _, x := range b {
			v = v<<8 | uint64(x)
		}
		return strconv.FormatUint(v, 10), nil
	case convFloat, convDouble:
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return "", err
		}
		return strconv.FormatFloat(f, 'e', -1, 64), nil
	case convUUID:
		if len(b) != 16 {
			return "", errSnapValue
		}
		u := appendUUID(nil, [16]byte(b))
		return string(u[1 : len(u)-1]), nil
	case convINET6:
		if len(b) != 16 {
			return "", errSnapValue
		}
		return netip.AddrFrom16([16]byte(b)).String(), nil
	case convINET4:
		if len(b) != 4 {
			return "", errSnapValue
		}
		return netip.AddrFrom4([4]byte(b)).String(), nil
	}
	return string(b), nil
}

// keyLiteral is the SQL literal of a cursor value of column c, compared
// with the column in its own charset and collation.
func keyLiteral(c *snapCol, v string) (string, error) {
	bad := fmt.Errorf("bad cursor value %q for column %q", v, c.col.name)
	switch c.conv {
	case convString:
		if _, err := hex.DecodeString(v); err != nil {
			return "", bad
		}
		if c.charset == "" || c.charset == "binary" {
			return "X'" + v + "'", nil
		}
		if !validIdent(c.charset) || !validIdent(c.collation) {
			return "", fmt.Errorf("column %q: charset %q, collation %q", c.col.name, c.charset, c.collation)
		}
		return "_" + c.charset + " X'" + v + "' COLLATE " + c.collation, nil
	case convInt, convBigInt, convBigUint, convYear, convEnum, convSet, convBit:
		if !isNumber([]byte(v), false) {
			return "", bad
		}
		return v, nil
	case convDecimal:
		if !isNumber([]byte(v), true) {
			return "", bad
		}
		return v, nil
	case convFloat, convDouble:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return "", bad
		}
		return strconv.FormatFloat(f, 'e', -1, 64), nil
	case convDate, convTime, convDatetime, convTimestamp:
		for _, x := range []byte(v) {
			if !(x >= '0' && x <= '9' || x == '-' || x == ':' || x == '.' || x == ' ') {
				return "", bad
			}
		}
		return "'" + v + "'", nil
	case convUUID:
		for _, x := range []byte(v) {
			if !(x >= '0' && x <= '9' || x >= 'a' && x <= 'f' || x == '-') {
				return "", bad
			}
		}
		return "'" + v + "'", nil
	case convINET6, convINET4:
		a, err := netip.ParseAddr(v)
		if err != nil {
			return "", bad
		}
		return "'" + a.String() + "'", nil
	}
	return "", fmt.Errorf("column %q cannot be a chunking key", c.col.name)
}

// chunkQuery builds the SELECT of a chunk.
func chunkQuery(t tracker.SnapshotTable, st *snapTable, after string, where string, limit int) (string, error) {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i := range st.cols {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(st.cols[i].expr)
	}
	b.WriteString(" FROM ")
	b.WriteString(quoteIdent(t.Schema))
	b.WriteByte('.')
	b.WriteString(quoteIdent(t.Table))
	var conds []string
	if after != "" {
		var cur cursor
		if err := json.Unmarshal([]byte(after), &cur); err != nil {
			return "", fmt.Errorf("bad chunk cursor %q: %w", after, err)
		}
		if !slices.Equal(cur.Key, st.keyNames) || len(cur.After) != len(st.keyIdx) {
			return "", fmt.Errorf("the chunk cursor is for key %v, the table's key is now %v", cur.Key, st.keyNames)
		}
		lits := make([]string, len(cur.After))
		for i, v := range cur.After {
			l, err := keyLiteral(&st.cols[st.keyIdx[i]], v)
			if err != nil {
				return "", err
			}
			lits[i] = l
		}
		// (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ...: a range on the key's
		// index.
		var ks strings.Builder
		ks.WriteByte('(')
		for i := range lits {
			if i > 0 {
				ks.WriteString(" OR ")
			}
			ks.WriteByte('(')
			for j := 0; j < i; j++ {
				ks.WriteString(quoteIdent(st.keyNames[j]) + " = " + lits[j] + " AND ")
			}
			ks.WriteString(quoteIdent(st.keyNames[i]) + " > " + lits[i])
			ks.WriteByte(')')
		}
		ks.WriteByte(')')
		conds = append(conds, ks.String())
	}
	if strings.TrimSpace(where) != "" {
		// The newline ends a trailing -- comment.
		conds = append(conds, "("+where+"\n)")
	}
	if len(conds) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(conds, " AND "))
	}
	b.WriteString(" ORDER BY ")
	for i, k := range st.keyNames {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quoteIdent(k))
	}
	b.WriteString(" LIMIT ")
	b.WriteString(strconv.Itoa(limit))
	return b.String(), nil
}

// whereErrors are the server errors a bad condition causes: syntax, an
// unknown column or function, wrong arguments, a write in a read-only
// transaction, a subquery returning more than one row or column.
var whereErrors = []uint16{1064, 1054, 1305, 1582, 1583, 1630, 1792, 1241, 1242, 1052, 1111, 1149}

// ReadChunk implements [tracker.Snapshotter] on MariaDB: one consistent
// snapshot transaction, its binlog position from the session's
// binlog_snapshot_file/binlog_snapshot_position, and up to Limit rows in
// key order after req.After (and meeting req.Where).
func (s *Source) ReadChunk(ctx context.Context, req tracker.ChunkRequest) (tracker.Chunk, error) {
	ch, err := s.readChunk(ctx, req)
	if err != nil {
		return tracker.Chunk{}, fmt.Errorf("mysql: snapshot of %s: %w", req.Table.Name(), err)
	}
	return ch, nil
}

func (s *Source) readChunk(ctx context.Context, req tracker.ChunkRequest) (tracker.Chunk, error) {
	if !s.info.mariadb {
		return tracker.Chunk{}, tracker.ConfigError(errors.New("snapshots need MariaDB: MySQL does not report the binlog position of a consistent snapshot (binlog_snapshot_file/binlog_snapshot_position), so its rows cannot be placed in the stream exactly"))
	}
	if len(req.Table.Key) == 0 {
		return tracker.Chunk{}, fmt.Errorf("the table has no primary key nor a unique key of NOT NULL columns, so it cannot be read in chunks; add one (ALTER TABLE %s.%s ADD PRIMARY KEY (...)) or leave the table out of the snapshot",
			quoteIdent(req.Table.Schema), quoteIdent(req.Table.Table))
	}
	limit := req.Limit
	if limit <= 0 {
		limit = defaultChunk
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return tracker.Chunk{}, classifyConnect(err, s.conn)
	}
	clean := false
	defer func() {
		if !clean {
			// Session state unknown (an open transaction, changed
			// variables): the connection is not reused.
			_ = conn.Raw(func(any) error { return sqldriver.ErrBadConn })
		}
		conn.Close()
	}()
	st, err := s.describeSnap(ctx, conn, req.Table)
	if err != nil {
		return tracker.Chunk{}, err
	}
	q, err := chunkQuery(req.Table, st, req.After, req.Where, limit)
	if err != nil {
		return tracker.Chunk{}, err
	}
	exec := func(q string) error {
		_, err := conn.ExecContext(ctx, q)
		return err
	}
	// Text of every column in its own charset; TIMESTAMPs (values and key
	// literals) in UTC; a repeatable read view for the one SELECT.
	if err := exec("SET @trackerd_tz = @@session.time_zone, @trackerd_csr = @@session.character_set_results, time_zone = '+00:00', character_set_results = binary"); err != nil {
		return tracker.Chunk{}, err
	}
	if err := exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"); err != nil {
		return tracker.Chunk{}, err
	}
	if err := exec("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		return tracker.Chunk{}, err
	}
	pos1, err := snapshotPos(ctx, conn)
	if err != nil {
		return tracker.Chunk{}, err
	}
	ch, err := s.readRows(ctx, conn, req, st, q, limit)
	if err != nil {
		var me *driver.MySQLError
		if errors.As(err, &me) {
			switch {
			case me.Number == 1146:
				return tracker.Chunk{}, fmt.Errorf("the table no longer exists (dropped while being read?): %w", err)
			case req.Where != "" && slices.Contains(whereErrors, me.Number):
				return tracker.Chunk{}, tracker.ConfigError(fmt.Errorf("the condition %q: %w", req.Where, err))
			}
		}
		return tracker.Chunk{}, err
	}
	// The session's snapshot position stays put for the transaction, while
	// the server's moves with every commit: a second read that differs is
	// not a snapshot's.
	pos2, err := snapshotPos(ctx, conn)
	if err != nil {
		return tracker.Chunk{}, err
	}
	if pos1.File != pos2.File || pos1.Pos != pos2.Pos {
		return tracker.Chunk{}, fmt.Errorf("binlog_snapshot_file/position moved within the snapshot transaction (%s, then %s): the server does not report the snapshot's own position", pos1.String(), pos2.String())
	}
	if err := exec("COMMIT"); err != nil {
		return tracker.Chunk{}, err
	}
	if err := exec("SET time_zone = @trackerd_tz, character_set_results = @trackerd_csr"); err == nil {
		clean = true
	}
	ch.Pos = pos1.String()
	if ch.Next == "" {
		ch.Next = req.After
	}
	return ch, nil
}

// snapshotPos reads the session's binlog_snapshot_file and
// binlog_snapshot_position.
func snapshotPos(ctx context.Context, conn *sql.Conn) (position, error) {
	rows, err := conn.QueryContext(ctx, "SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
	if err != nil {
		return position{}, err
	}
	var p position
	var hasFile, hasPos bool
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			rows.Close()
			return position{}, err
		}
		switch strings.ToLower(name) {
		case "binlog_snapshot_file":
			p.File, hasFile = value, value != ""
		case "binlog_snapshot_position":
			v, err := strconv.ParseUint(value, 10, 32)
			if err != nil {
				rows.Close()
				return position{}, fmt.Errorf("binlog_snapshot_position %q: %w", value, err)
			}
			p.Pos, hasPos = uint32(v), true
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return position{}, err
	}
	if !hasFile || !hasPos {
		return position{}, errors.New("the server reports no binlog_snapshot_file/binlog_snapshot_position (snapshots need MariaDB with log_bin)")
	}
	return p, nil
}

// readRows runs the chunk's SELECT and encodes its rows.
func (s *Source) readRows(ctx context.Context, conn *sql.Conn, req tracker.ChunkRequest, st *snapTable, q string, limit int) (tracker.Chunk, error) {
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return tracker.Chunk{}, err
	}
	defer rows.Close()
	ncol, nkey := len(st.cols), len(st.keyIdx)
	if n, err := rows.Columns(); err != nil || len(n) != ncol {
		return tracker.Chunk{}, fmt.Errorf("the table changed while being read (%d columns, %d expected)", len(n), ncol)
	}
	raw := make([]sql.RawBytes, ncol)
	ptrs := make([]any, ncol)
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	escape := !s.opts.NativeUnicode
	source := s.info.flavor()
	capRows := min(limit, 1024)
	changes := make([]tracker.Change, 0, capRows)
	buf := make([]byte, 0, 64*1024)
	offs := make([]int32, 0, 2*capRows*ncol)
	var lastKey [][]byte
	lastKey = make([][]byte, nkey)
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return tracker.Chunk{}, err
		}
		for i := range st.cols {
			start := len(buf)
			if raw[i] == nil {
				buf = append(buf, "null"...)
			} else {
				buf, err = appendSnapValue(buf, &st.cols[i], raw[i], escape)
				if err != nil {
					return tracker.Chunk{}, fmt.Errorf("column %q: value %q: %w", st.cols[i].col.name, raw[i], err)
				}
			}
			offs = append(offs, int32(start), int32(len(buf)))
		}
		for j, k := range st.keyIdx {
			lastKey[j] = append(lastKey[j][:0], raw[k]...)
		}
		changes = append(changes, tracker.Change{Op: tracker.OpSnapshot, Source: source, Schema: req.Table.Schema, Table: req.Table.Table})
	}
	if err := rows.Err(); err != nil {
		return tracker.Chunk{}, err
	}
	n := len(changes)
	ch := tracker.Chunk{Done: n < limit, Rows: make([]*tracker.Change, n)}
	if n == 0 {
		return ch, nil
	}
	w := ncol + nkey
	vals := make([]json.RawMessage, n*w)
	for r := range n {
		row := vals[r*w : (r+1)*w : (r+1)*w]
		for i := range ncol {
			s, e := offs[2*(r*ncol+i)], offs[2*(r*ncol+i)+1]
			row[i] = json.RawMessage(buf[s:e:e])
		}
		for j, k := range st.keyIdx {
			row[ncol+j] = row[k]
		}
		c := &changes[r]
		c.After = srckit.Row(st.names, row, 0)
		c.Key = srckit.Row(st.keyNames, row, ncol)
		ch.Rows[r] = c
	}
	cur := cursor{Key: st.keyNames, After: make([]string, nkey)}
	for j, k := range st.keyIdx {
		v, err := cursorValue(&st.cols[k], lastKey[j])
		if err != nil {
			return tracker.Chunk{}, fmt.Errorf("key column %q: %w", st.cols[k].col.name, err)
		}
		cur.After[j] = v
	}
	next, err := json.Marshal(cur)
	if err != nil {
		return tracker.Chunk{}, err
	}
	ch.Next = string(next)
	return ch, nil
}
