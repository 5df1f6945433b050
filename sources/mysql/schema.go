package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/binds"
)

// systemDBs are never followed unless a bind names one of their tables.
var systemDBs = [...]string{"mysql", "information_schema", "performance_schema", "sys"}

// tableFilter decides which tables of a bind are tracked: the URI's
// database only (every database but the system ones when the URI names
// none), narrowed by tables and exclude_tables. A "db.table" entry in
// tables names that table explicitly, in any database.
type tableFilter struct {
	db      string
	include []string
	exclude []string
}

func newTableFilter(b binds.Bind) *tableFilter {
	return &tableFilter{db: b.URI.Database, include: b.Tables, exclude: b.ExcludeTables}
}

// qualified reports whether entry is exactly db.table.
func qualified(entry, db, table string) bool {
	return len(entry) == len(db)+1+len(table) && strings.HasPrefix(entry, db) &&
		entry[len(db)] == '.' && strings.HasSuffix(entry, table)
}

// matchEntry reports whether an entry names db.table, as "table" or
// "db.table".
func matchEntry(entries []string, db, table string) bool {
	for _, e := range entries {
		if e == table || qualified(e, db, table) {
			return true
		}
	}
	return false
}

func isSystemDB(db string) bool {
	for _, s := range systemDBs {
		if strings.EqualFold(db, s) {
			return true
		}
	}
	return false
}

// tracks reports whether changes of db.table are handed over.
func (f *tableFilter) tracks(db, table string) bool {
	if matchEntry(f.exclude, db, table) {
		return false
	}
	for _, e := range f.include {
		if qualified(e, db, table) {
			return true
		}
	}
	if f.db != "" && db != f.db || f.db == "" && isSystemDB(db) {
		return false
	}
	return len(f.include) == 0 || matchEntry(f.include, db, table)
}

// tableInfo is what the row decoder knows about one TABLE_MAP.
type tableInfo struct {
	schema, table string
	tracked       bool
	// cols are the columns; for an untracked table, only their types and
	// metadata.
	cols []column
	// jsonCols counts the JSON columns.
	jsonCols int
	// names is shared by every Row of the table; keyNames by every Key.
	names    []string
	keyIdx   []int
	keyNames []string
}

// infoColumn is a column as information_schema describes it now.
type infoColumn struct {
	name       string
	dataType   string
	columnType string
	charset    string
	json       bool
}

// infoTable is a table as information_schema describes it now.
type infoTable struct {
	cols []infoColumn
	pk   []string
}

func (t *infoTable) column(name string) *infoColumn {
	for i := range t.cols {
		if t.cols[i].name == name {
			return &t.cols[i]
		}
	}
	return nil
}

// fetchInfoFunc looks a table up in information_schema; nil, nil when it
// does not exist.
type fetchInfoFunc func(ctx context.Context, db, table string) (*infoTable, error)

// schemaCache builds tableInfos from TABLE_MAP events, and caches
// information_schema look-ups until the next DDL.
type schemaCache struct {
	filter     *tableFilter
	mariadb    bool
	collations map[uint64]string
	fetch      fetchInfoFunc
	info       map[string]*infoTable
	// byID caches the last TABLE_MAP per table id, compared byte for byte.
	byID map[uint64]cachedTable
}

type cachedTable struct {
	raw  []byte
	info *tableInfo
}

func newSchemaCache(f *tableFilter, mariadb bool, collations map[uint64]string, fetch fetchInfoFunc) *schemaCache {
	return &schemaCache{filter: f, mariadb: mariadb, collations: collations, fetch: fetch,
		info: map[string]*infoTable{}, byID: map[uint64]cachedTable{}}
}

// invalidate forgets everything learnt from information_schema, after DDL.
func (c *schemaCache) invalidate() {
	clear(c.info)
	clear(c.byID)
}

// table returns the tableInfo for a TABLE_MAP event, whose body bytes
// (raw) identify it: the same bytes for the same table id mean the same
// columns.
func (c *schemaCache) table(ctx context.Context, tm *replication.TableMapEvent, raw []byte) (*tableInfo, error) {
	if ct, ok := c.byID[tm.TableID]; ok && bytes.Equal(ct.raw, raw) {
		return ct.info, nil
	}
	ti, err := c.build(ctx, tm)
	if err != nil {
		return nil, err
	}
	if len(c.byID) > 4096 {
		clear(c.byID)
	}
	c.byID[tm.TableID] = cachedTable{raw: bytes.Clone(raw), info: ti}
	return ti, nil
}

func (c *schemaCache) lookup(ctx context.Context, db, table string) (*infoTable, error) {
	key := db + "\x00" + table
	if it, ok := c.info[key]; ok {
		return it, nil
	}
	it, err := c.fetch(ctx, db, table)
	if err != nil {
		return nil, fmt.Errorf("look up %s.%s in information_schema: %w", db, table, err)
	}
	c.info[key] = it
	return it, nil
}

// build decodes a TABLE_MAP into a tableInfo. Column names, signedness,
// charsets, ENUM/SET labels and the primary key come from the event's
// optional metadata (binlog_row_metadata=FULL), which describes the table
// as it was when the row was written. information_schema, which describes
// it as it is now, fills what the event lacks and marks MariaDB's JSON,
// UUID, INET4 and INET6 columns; when the event has no column names and
// the column counts differ, the table changed since: decoding would shift
// values into the wrong columns, so it stops with an error.
func (c *schemaCache) build(ctx context.Context, tm *replication.TableMapEvent) (*tableInfo, error) {
	ti := &tableInfo{schema: string(tm.Schema), table: string(tm.Table)}
	ti.tracked = c.filter.tracks(ti.schema, ti.table)
	n := int(tm.ColumnCount)
	if len(tm.ColumnType) != n || len(tm.ColumnMeta) != n {
		return nil, fmt.Errorf("TABLE_MAP of %s.%s: %d columns but %d types and %d metadata entries", ti.schema, ti.table, n, len(tm.ColumnType), len(tm.ColumnMeta))
	}
	ti.cols = make([]column, n)
	for i := range n {
		ti.cols[i] = newColumn("", tm.ColumnType[i], tm.ColumnMeta[i])
		if ti.cols[i].typ == gm.MYSQL_TYPE_JSON {
			ti.jsonCols++
		}
	}
	if !ti.tracked {
		// Types and metadata suffice to count its rows (see countRows).
		return ti, nil
	}
	hasNames := len(tm.ColumnName) == n
	if hasNames {
		for i, name := range tm.ColumnName {
			ti.cols[i].name = string(name)
		}
	}

	// Signedness: one bit per numeric column, most significant first.
	hasSign := len(tm.SignednessBitmap) > 0
	if hasSign {
		k := 0
		for i := range ti.cols {
			if !isNumericType(ti.cols[i].typ) {
				continue
			}
			if k/8 < len(tm.SignednessBitmap) {
				ti.cols[i].unsigned = tm.SignednessBitmap[k/8]&(0x80>>uint(k%8)) != 0
			}
			k++
		}
	}
	hasCharsets := len(tm.DefaultCharset) > 0 || len(tm.ColumnCharset) > 0
	textCount, enumCount, numCount := 0, 0, 0
	for i := range ti.cols {
		switch {
		case ti.cols[i].isText():
			textCount++
		case ti.cols[i].typ == gm.MYSQL_TYPE_ENUM || ti.cols[i].typ == gm.MYSQL_TYPE_SET:
			enumCount++
		case isNumericType(ti.cols[i].typ):
			numCount++
		}
	}
	if hasCharsets {
		for i, coll := range tm.CollationMap() {
			if i < n && ti.cols[i].isText() {
				ti.cols[i].cs = c.charsetOf(coll)
			}
		}
	}
	hasLabels := len(tm.EnumStrValue) > 0 || len(tm.SetStrValue) > 0
	if hasLabels {
		esColl := tm.EnumSetCollationMap()
		decode := func(i int, vals []string) []string {
			cs := c.charsetOf(esColl[i])
			if cs.kind == textUTF8 || cs.kind == textBinary {
				return vals
			}
			out := make([]string, len(vals))
			for j, v := range vals {
				// Labels in a legacy charset: transcode via the JSON text
				// encoder and strip the quotes again.
				q := appendText(nil, []byte(v), &cs, false)
				out[j] = unquoteSimple(q)
			}
			return out
		}
		for i, vals := range tm.EnumStrValueMap() {
			if i < n {
				ti.cols[i].labels = decode(i, vals)
			}
		}
		for i, vals := range tm.SetStrValueMap() {
			if i < n {
				ti.cols[i].labels = decode(i, vals)
			}
		}
	}
	for _, k := range tm.PrimaryKey {
		if int(k) < n {
			ti.keyIdx = append(ti.keyIdx, int(k))
		}
	}

	// information_schema fills the gaps.
	needInfo := !hasNames || (!hasSign && numCount > 0) || (!hasCharsets && textCount > 0) || (!hasLabels && enumCount > 0)
	if c.mariadb && !needInfo {
		for i := range ti.cols {
			col := &ti.cols[i]
			// JSON (LONGTEXT) and UUID/INET (BINARY) look like plain
			// strings in the binlog.
			if col.typ == gm.MYSQL_TYPE_BLOB && col.cs.kind != textBinary || col.typ == gm.MYSQL_TYPE_STRING && col.cs.kind == textBinary {
				needInfo = true
				break
			}
		}
	}
	if needInfo {
		it, err := c.lookup(ctx, ti.schema, ti.table)
		if err != nil {
			return nil, err
		}
		if err := c.applyInfo(ti, it, hasNames, hasSign, hasCharsets, hasLabels); err != nil {
			return nil, err
		}
	}

	ti.names = make([]string, n)
	for i := range ti.cols {
		ti.names[i] = ti.cols[i].name
	}
	for _, k := range ti.keyIdx {
		ti.keyNames = append(ti.keyNames, ti.names[k])
	}
	return ti, nil
}

// errNoMetadata explains why a table without column names in its TABLE_MAP
// stops the bind.
const noMetadataFix = "binlog_row_metadata=FULL puts the column names into the binlog and fixes this"

func (c *schemaCache) applyInfo(ti *tableInfo, it *infoTable, hasNames, hasSign, hasCharsets, hasLabels bool) error {
	n := len(ti.cols)
	if !hasNames {
		if it == nil {
			return fmt.Errorf("table %s.%s: the binlog does not carry its column names and the table no longer exists, so its values cannot be named; %s", ti.schema, ti.table, noMetadataFix)
		}
		if len(it.cols) != n {
			return fmt.Errorf("table %s.%s: the binlog row has %d columns but the table has %d now (it was altered after the row was written), so naming values by today's columns would shift them into the wrong columns; %s", ti.schema, ti.table, n, len(it.cols), noMetadataFix)
		}
		for i := range ti.cols {
			ti.cols[i].name = it.cols[i].name
		}
		if len(ti.keyIdx) == 0 {
			for _, pk := range it.pk {
				for i := range ti.cols {
					if ti.cols[i].name == pk {
						ti.keyIdx = append(ti.keyIdx, i)
					}
				}
			}
		}
	}
	if it == nil {
		return nil
	}
	for i := range ti.cols {
		col := &ti.cols[i]
		ic := it.column(col.name)
		if ic == nil {
			continue
		}
		if !hasSign && isNumericType(col.typ) {
			col.unsigned = strings.Contains(ic.columnType, "unsigned")
		}
		if !hasCharsets && col.isText() {
			if ic.charset == "" {
				col.cs = charset{kind: textBinary}
			} else {
				col.cs = charsetByName(ic.charset)
			}
		}
		if !hasLabels && (col.typ == gm.MYSQL_TYPE_ENUM || col.typ == gm.MYSQL_TYPE_SET) {
			col.labels = parseEnumLabels(ic.columnType)
		}
		switch {
		case ic.json && col.typ == gm.MYSQL_TYPE_BLOB:
			col.kind = kindJSONText
		case ic.dataType == "uuid" && col.typ == gm.MYSQL_TYPE_STRING:
			col.kind = kindUUID
		case ic.dataType == "inet6" && col.typ == gm.MYSQL_TYPE_STRING:
			col.kind = kindINET6
		case ic.dataType == "inet4":
			col.kind = kindINET4
		}
		if col.kind == kindINET4 && col.typ != gm.MYSQL_TYPE_STRING {
			col.kind = kindPlain
		}
	}
	return nil
}

// charsetOf maps a collation id to its charset.
func (c *schemaCache) charsetOf(coll uint64) charset {
	if coll == 63 {
		return charset{kind: textBinary}
	}
	if name, ok := c.collations[coll]; ok {
		return charsetByName(name)
	}
	return charset{kind: textUTF8}
}

// unquoteSimple strips the quotes of a JSON string produced by appendText
// and undoes its escapes (labels rarely hold any).
func unquoteSimple(q []byte) string {
	if len(q) < 2 {
		return ""
	}
	s := string(q[1 : len(q)-1])
	if !strings.Contains(s, `\`) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'n':
				out.WriteByte('\n')
			case 't':
				out.WriteByte('\t')
			case 'r':
				out.WriteByte('\r')
			default:
				out.WriteByte(s[i])
			}
			continue
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// parseEnumLabels parses the labels of an enum(...) or set(...) column type:
// quoted, comma-separated, with doubled or backslashed quotes inside.
func parseEnumLabels(columnType string) []string {
	open := strings.IndexByte(columnType, '(')
	if open < 0 {
		return nil
	}
	s := columnType[open+1:]
	var labels []string
	for {
		s = strings.TrimLeft(s, " ,")
		if s == "" || s[0] != '\'' {
			return labels
		}
		var label string
		label, s = unquote(s, true)
		labels = append(labels, label)
	}
}

// fetchInfo reads a table's columns (and, on MariaDB, which LONGTEXT
// columns are JSON) from information_schema.
func fetchInfo(db *sql.DB, mariadb bool) fetchInfoFunc {
	return func(ctx context.Context, schema, table string) (*infoTable, error) {
		rows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(CHARACTER_SET_NAME, ''), COLUMN_KEY
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, schema, table)
		if err != nil {
			return nil, err
		}
		it := &infoTable{}
		var pri []string
		for rows.Next() {
			var c infoColumn
			var key string
			if err := rows.Scan(&c.name, &c.dataType, &c.columnType, &c.charset, &key); err != nil {
				rows.Close()
				return nil, err
			}
			c.dataType = strings.ToLower(c.dataType)
			c.columnType = strings.ToLower(c.columnType)
			c.json = c.dataType == "json"
			if key == "PRI" {
				pri = append(pri, c.name)
			}
			it.cols = append(it.cols, c)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, err
		}
		if len(it.cols) == 0 {
			return nil, nil
		}
		// Primary key columns in key order.
		krows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`, schema, table)
		if err != nil {
			return nil, err
		}
		for krows.Next() {
			var name string
			if err := krows.Scan(&name); err != nil {
				krows.Close()
				return nil, err
			}
			it.pk = append(it.pk, name)
		}
		if err := errors.Join(krows.Err(), krows.Close()); err != nil {
			return nil, err
		}
		if len(it.pk) == 0 {
			it.pk = pri
		}
		if mariadb {
			crows, err := db.QueryContext(ctx, `SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?`, schema, table)
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
					if c := it.column(name); c != nil {
						c.json = true
					}
				}
			}
			if err := errors.Join(crows.Err(), crows.Close()); err != nil {
				return nil, err
			}
		}
		return it, nil
	}
}

// unquote reads the quoted identifier or string at the start of s, whose
// first byte is the quote, and returns it and the rest of s after it. A
// doubled quote stands for one; with backslash (string literals), a
// backslash escapes the next byte.
func unquote(s string, backslash bool) (text, rest string) {
	q := s[0]
	var b strings.Builder
	i := 1
	for i < len(s) {
		switch {
		case s[i] == q && i+1 < len(s) && s[i+1] == q:
			b.WriteByte(q)
			i += 2
			continue
		case s[i] == q:
			return b.String(), s[i+1:]
		case backslash && s[i] == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i += 2
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String(), ""
}

// jsonValidColumns returns the columns a CHECK clause passes to
// json_valid(`col`), the constraint MariaDB adds for its JSON alias.
func jsonValidColumns(clause string) []string {
	var out []string
	const fn = "json_valid("
	for {
		i := strings.Index(strings.ToLower(clause), fn)
		if i < 0 {
			return out
		}
		clause = strings.TrimLeft(clause[i+len(fn):], " ")
		if strings.HasPrefix(clause, "`") {
			name, _ := unquote(clause, false)
			out = append(out, name)
		} else if end := strings.IndexAny(clause, ") "); end > 0 {
			out = append(out, clause[:end])
		}
	}
}
