package mysql

import (
	"context"
	"slices"
	"strings"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/binds"
)

func TestTableFilter(t *testing.T) {
	for _, tc := range []struct {
		name             string
		db               string
		tables, excluded []string
		track            []string
		skip             []string
	}{
		{name: "one database", db: "shop", track: []string{"shop.a", "shop.b"}, skip: []string{"other.a", "mysql.user"}},
		{name: "every database", track: []string{"shop.a", "other.b"}, skip: []string{"mysql.user", "sys.x", "information_schema.tables", "performance_schema.t"}},
		{name: "tables", db: "shop", tables: []string{"a", "shop.b"}, track: []string{"shop.a", "shop.b"}, skip: []string{"shop.c", "other.a"}},
		{name: "explicit other database", db: "shop", tables: []string{"a", "audit.log"}, track: []string{"shop.a", "audit.log"}, skip: []string{"audit.other", "shop.log"}},
		{name: "excluded", db: "shop", excluded: []string{"secret", "shop.tmp"}, track: []string{"shop.a"}, skip: []string{"shop.secret", "shop.tmp"}},
		{name: "exclude beats include", db: "shop", tables: []string{"a"}, excluded: []string{"shop.a"}, skip: []string{"shop.a"}},
		{name: "system table named", tables: []string{"mysql.user"}, track: []string{"mysql.user"}, skip: []string{"mysql.db"}},
		{name: "dotted table name", db: "shop", tables: []string{"a.b"}, track: []string{"a.b"}, skip: []string{"shop.a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTableFilter(binds.Bind{URI: binds.URI{Database: tc.db}, Tables: tc.tables, ExcludeTables: tc.excluded})
			for _, q := range tc.track {
				db, table, _ := strings.Cut(q, ".")
				if !f.tracks(db, table) {
					t.Errorf("%s is not tracked", q)
				}
			}
			for _, q := range tc.skip {
				db, table, _ := strings.Cut(q, ".")
				if f.tracks(db, table) {
					t.Errorf("%s is tracked", q)
				}
			}
		})
	}
	// A table literally named "a.b" in the bind's database.
	f := newTableFilter(binds.Bind{URI: binds.URI{Database: "shop"}, Tables: []string{"a.b"}})
	if !f.tracks("shop", "a.b") {
		t.Error("table named a.b is not tracked")
	}
}

func TestParseEnumLabels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"enum('small','medium','large')", []string{"small", "medium", "large"}},
		{"set('a','b''c','d\\'e','')", []string{"a", "b'c", "d'e", ""}},
		{"enum('x,y', 'z')", []string{"x,y", "z"}},
		{"int(11)", nil},
		{"enum(", nil},
	} {
		if got := parseEnumLabels(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("parseEnumLabels(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestJSONValidColumns(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"json_valid(`j`)", []string{"j"}},
		{"JSON_VALID(`we``ird`) and json_valid( `b`)", []string{"we`ird", "b"}},
		{"json_valid(c)", []string{"c"}},
		{"`a` > 0", nil},
	} {
		if got := jsonValidColumns(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("jsonValidColumns(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// tableMap builds a TABLE_MAP event for schema tests.
func tableMap(full bool) *replication.TableMapEvent {
	tm := &replication.TableMapEvent{
		TableID: 1, Schema: []byte("shop"), Table: []byte("t"), ColumnCount: 4,
		ColumnType: []byte{gm.MYSQL_TYPE_LONG, gm.MYSQL_TYPE_VARCHAR, gm.MYSQL_TYPE_STRING, gm.MYSQL_TYPE_BLOB},
		ColumnMeta: []uint16{0, 80, stringMeta(gm.MYSQL_TYPE_ENUM, 1), 4},
	}
	if full {
		tm.ColumnName = [][]byte{[]byte("id"), []byte("name"), []byte("size"), []byte("doc")}
		tm.SignednessBitmap = []byte{0x80}
		tm.DefaultCharset = []uint64{45, 1, 8} // utf8mb4, but the 2nd text column latin1
		tm.EnumStrValue = [][][]byte{{[]byte("s"), []byte("m")}}
		tm.EnumSetDefaultCharset = []uint64{45}
		tm.PrimaryKey = []uint64{0}
		tm.PrimaryKeyPrefix = []uint64{0}
	}
	return tm
}

func TestSchemaFromFullMetadata(t *testing.T) {
	calls := 0
	fetch := func(context.Context, string, string) (*infoTable, error) {
		calls++
		return &infoTable{cols: []infoColumn{{name: "doc", json: true}}}, nil
	}
	for _, mariadb := range []bool{false, true} {
		calls = 0
		sc := newSchemaCache(newTableFilter(binds.Bind{}), mariadb, map[uint64]string{45: "utf8mb4", 8: "latin1"}, fetch)
		ti, err := sc.table(t.Context(), tableMap(true), []byte("raw"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ti.names, []string{"id", "name", "size", "doc"}) || !slices.Equal(ti.keyNames, []string{"id"}) {
			t.Errorf("names %v key %v", ti.names, ti.keyNames)
		}
		if !ti.cols[0].unsigned || ti.cols[1].cs.kind != textUTF8 || ti.cols[3].cs.kind != textLatin1 || !slices.Equal(ti.cols[2].labels, []string{"s", "m"}) {
			t.Errorf("metadata not applied: %+v", ti.cols)
		}
		// MySQL needs no look-up; MariaDB looks for JSON columns.
		if wantCalls := map[bool]int{false: 0, true: 1}[mariadb]; calls != wantCalls {
			t.Errorf("mariadb=%v: %d information_schema look-ups, want %d", mariadb, calls, wantCalls)
		}
		if mariadb != (ti.cols[3].kind == kindJSONText) {
			t.Errorf("mariadb=%v: doc kind %v", mariadb, ti.cols[3].kind)
		}
		// The same TABLE_MAP bytes come from the cache.
		again, _ := sc.table(t.Context(), tableMap(true), []byte("raw"))
		if again != ti {
			t.Error("same TABLE_MAP was rebuilt")
		}
	}
}

func TestSchemaWithoutMetadata(t *testing.T) {
	now := &infoTable{
		cols: []infoColumn{
			{name: "id", dataType: "int", columnType: "int(10) unsigned"},
			{name: "name", dataType: "varchar", columnType: "varchar(20)", charset: "latin1"},
			{name: "size", dataType: "enum", columnType: "enum('s','m')", charset: "utf8mb4"},
			{name: "doc", dataType: "longtext", columnType: "longtext", charset: "utf8mb4", json: true},
		},
		pk: []string{"id"},
	}
	altered := &infoTable{cols: now.cols[:3], pk: []string{"id"}}
	for _, tc := range []struct {
		name    string
		info    *infoTable
		wantErr string
	}{
		{name: "same columns", info: now},
		{name: "altered since", info: altered, wantErr: "binlog_row_metadata=FULL"},
		{name: "dropped since", info: nil, wantErr: "no longer exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := newSchemaCache(newTableFilter(binds.Bind{}), true, nil, func(context.Context, string, string) (*infoTable, error) {
				return tc.info, nil
			})
			ti, err := sc.table(t.Context(), tableMap(false), []byte("raw"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ti.names, []string{"id", "name", "size", "doc"}) || !slices.Equal(ti.keyNames, []string{"id"}) {
				t.Errorf("names %v key %v", ti.names, ti.keyNames)
			}
			c := ti.cols
			if !c[0].unsigned || c[1].cs.kind != textLatin1 || !slices.Equal(c[2].labels, []string{"s", "m"}) || c[3].kind != kindJSONText {
				t.Errorf("information_schema not applied: %+v", c)
			}
		})
	}
}

func TestSchemaUntracked(t *testing.T) {
	sc := newSchemaCache(newTableFilter(binds.Bind{URI: binds.URI{Database: "other"}}), true, nil, func(context.Context, string, string) (*infoTable, error) {
		t.Fatal("untracked table looked up")
		return nil, nil
	})
	ti, err := sc.table(t.Context(), tableMap(false), []byte("raw"))
	if err != nil || ti.tracked {
		t.Fatalf("got %+v, %v; want an untracked table", ti, err)
	}
}

func TestTruncateTarget(t *testing.T) {
	for _, tc := range []struct {
		q, db, wantDB, wantTable string
		ok                       bool
	}{
		{" TABLE t", "d", "d", "t", true},
		{" t", "d", "d", "t", true},
		{" TABLE `my db`.`we``ird`", "d", "my db", "we`ird", true},
		{" TABLE other.t;", "d", "other", "t", true},
		{" TABLE /* c */ t", "d", "d", "t", true},
		{"", "d", "", "", false},
	} {
		db, table, ok := truncateTarget([]byte(tc.q), tc.db)
		if db != tc.wantDB || table != tc.wantTable || ok != tc.ok {
			t.Errorf("truncateTarget(%q) = %q, %q, %v", tc.q, db, table, ok)
		}
	}
}

func TestFirstWord(t *testing.T) {
	for _, tc := range []struct{ q, want string }{
		{"BEGIN", "BEGIN"},
		{"  /* comment */ insert into t", "INSERT"},
		{"# line\nUPDATE t", "UPDATE"},
		{"-- x\n  delete from t", "DELETE"},
		{"(SELECT 1)", "SELECT"},
		{"/* unterminated", ""},
		{"XA START 'x'", "XA"},
	} {
		if got, _ := firstWord([]byte(tc.q)); got != tc.want {
			t.Errorf("firstWord(%q) = %q, want %q", tc.q, got, tc.want)
		}
	}
}
