package mysql

import (
	"strings"
	"testing"

	"github.com/trackerd/trackerd/tracker"
)

func TestComparePos(t *testing.T) {
	s := &Source{}
	xa := position{GTID: "0-1-5", File: "bin.000002", Pos: 900, XA: []xaPrepared{{XID: "X'61',X'',1", Key: "gtid-0-1-4", File: "bin.000002", Pos: 100}}}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{position{File: "bin.000001", Pos: 500}.String(), position{GTID: "0-1-3", File: "bin.000001", Pos: 500}.String(), 0},
		{position{File: "bin.000001", Pos: 499}.String(), position{File: "bin.000001", Pos: 500}.String(), -1},
		{position{File: "bin.000002", Pos: 4}.String(), position{File: "bin.000001", Pos: 99999}.String(), 1},
		{position{File: "bin.999999", Pos: 4}.String(), position{File: "bin.1000000", Pos: 4}.String(), -1},
		{xa.String(), position{File: "bin.000002", Pos: 901}.String(), -1},
		{`{"pos":7,"file":"bin.000002"}`, position{File: "bin.000002", Pos: 7}.String(), 0}, // not appendJSON's order: parsed
	} {
		got, err := s.ComparePos(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("ComparePos(%s, %s) = %d, %v; want %d", tc.a, tc.b, got, err, tc.want)
		}
		if back, _ := s.ComparePos(tc.b, tc.a); back != -tc.want {
			t.Errorf("ComparePos(%s, %s) = %d, want %d", tc.b, tc.a, back, -tc.want)
		}
	}
	for _, bad := range []string{"", "{}", "bin.000001:4", `{"gtid":"0-1-1"}`} {
		if _, err := s.ComparePos(bad, position{File: "b", Pos: 1}.String()); err == nil {
			t.Errorf("ComparePos(%q) gave no error", bad)
		}
	}
}

func TestChunkQuery(t *testing.T) {
	cols := []snapCol{}
	for _, c := range []struct{ name, dt, ct, cs, coll string }{
		{"a", "int", "int(11)", "", ""},
		{"b`x", "varchar", "varchar(10)", "latin1", "latin1_swedish_ci"},
		{"c", "varbinary", "varbinary(4)", "", ""},
		{"d", "datetime", "datetime(3)", "", ""},
	} {
		sc, err := newSnapCol(c.name, c.dt, c.ct, c.cs, c.coll, 3)
		if err != nil {
			t.Fatal(err)
		}
		cols = append(cols, sc)
	}
	st := &snapTable{cols: cols, keyIdx: []int{0, 1, 2}, keyNames: []string{"a", "b`x", "c"}}
	tbl := tracker.SnapshotTable{Schema: "db", Table: "t", Key: st.keyNames}
	after := `{"key":["a","b` + "`" + `x","c"],"after":["5","e9","00ff"]}`
	q, err := chunkQuery(tbl, st, after, "a > 1 -- c", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := "SELECT `a`,`b``x`,`c`,`d` FROM `db`.`t` WHERE ((`a` > 5) OR (`a` = 5 AND `b``x` > _latin1 X'e9' COLLATE latin1_swedish_ci) OR (`a` = 5 AND `b``x` = _latin1 X'e9' COLLATE latin1_swedish_ci AND `c` > X'00ff')) AND (a > 1 -- c\n) ORDER BY `a`,`b``x`,`c` LIMIT 10"
	if q != want {
		t.Errorf("query\n%s\nwant\n%s", q, want)
	}
	for _, bad := range []string{`{"key":["a"],"after":["5"]}`, `{"key":["a","b` + "`" + `x","c"],"after":["5 OR 1","e9","00"]}`, `{"key":["a","b` + "`" + `x","c"],"after":["5","zz","00"]}`, "junk"} {
		if _, err := chunkQuery(tbl, st, bad, "", 10); err == nil || !strings.Contains(err.Error(), "cursor") && !strings.Contains(err.Error(), "key") {
			t.Errorf("cursor %s: %v", bad, err)
		}
	}
}

func TestAppendSnapValue(t *testing.T) {
	for _, tc := range []struct {
		dt, ct string
		dec    int
		in     string
		want   string
	}{
		{"bigint", "bigint(20)", 0, "9007199254740993", `"9007199254740993"`},
		{"bigint", "bigint(20) unsigned", 0, "18446744073709551615", `"18446744073709551615"`},
		{"float", "float", 0, "1.2345677614212036", `1.2345678`},
		{"double", "double", 0, "0.30000000000000004", `0.30000000000000004`},
		{"time", "time(3)", 3, "-00:00:00.001", `"-00:00:00.001"`},
		{"time", "time", 0, "838:59:59", `"838:59:59"`},
		{"datetime", "datetime(6)", 6, "2024-02-29 23:59:58.123400", `"2024-02-29T23:59:58.1234"`},
		{"datetime", "datetime(3)", 3, "0000-00-00 00:00:00.000", `"0000-00-00 00:00:00.000"`},
		{"timestamp", "timestamp(1)", 1, "2024-05-01 10:00:00.5", `"2024-05-01T10:00:00.5Z"`},
		{"timestamp", "timestamp", 0, "0000-00-00 00:00:00", `"0000-00-00 00:00:00"`},
		{"enum", "enum('a','B')", 0, "2", `"B"`},
		{"enum", "enum('a','B')", 0, "0", `""`},
		{"set", "set('a','B','c')", 0, "5", `["a","c"]`},
		{"year", "year(4)", 0, "0000", `0`},
		{"bit", "bit(9)", 0, "\x01\x02", `258`},
	} {
		sc, err := newSnapCol("x", tc.dt, tc.ct, "", "", tc.dec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendSnapValue(nil, &sc, []byte(tc.in), false)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s %q: %s, %v; want %s", tc.ct, tc.in, got, err, tc.want)
		}
	}
}
