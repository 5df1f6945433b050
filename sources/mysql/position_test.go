package mysql

import (
	"reflect"
	"testing"
)

func TestPositionRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    position
		want string
	}{
		{"mariadb", position{GTID: "0-1-1234", File: "mariadb-bin.000003", Pos: 5678}, `{"gtid":"0-1-1234","file":"mariadb-bin.000003","pos":5678}`},
		{"no gtid", position{File: "mysql-bin.000001", Pos: 4}, `{"file":"mysql-bin.000001","pos":4}`},
		{"odd file name", position{File: "bin \"x\".01", Pos: 1}, `{"file":"bin \"x\".01","pos":1}`},
		{"prepared xa", position{GTID: "0-1-9", File: "b.000002", Pos: 900, XA: []xaPrepared{
			{XID: "X'6131',X'',1", Key: "gtid-0-1-5", GTID: "0-1-5", File: "b.000001", Pos: 300},
			{XID: "X'6132',X'6271',7", Key: "pos-b.000002-100", File: "b.000002", Pos: 100, Empty: true},
		}}, `{"gtid":"0-1-9","file":"b.000002","pos":900,"xa":[{"xid":"X'6131',X'',1","key":"gtid-0-1-5","gtid":"0-1-5","file":"b.000001","pos":300},{"xid":"X'6132',X'6271',7","key":"pos-b.000002-100","file":"b.000002","pos":100,"empty":true}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.String(); got != tc.want {
				t.Errorf("String: got %s, want %s", got, tc.want)
			}
			back, err := parsePosition(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tc.p) {
				t.Errorf("parse: got %+v, want %+v", back, tc.p)
			}
		})
	}
	for _, bad := range []string{"", "0/16B3748", `{"pos":1}`, `{"file":"f","pos":-1}`, `{"file":"f","extra":1}`, `{"file":"f","pos":1,"xa":[{"xid":"x"}]}`} {
		if _, err := parsePosition(bad); err == nil {
			t.Errorf("parsePosition(%q): want an error", bad)
		}
	}
}

func TestMariaDBPos(t *testing.T) {
	p, err := parseMariaDBPos("1-2-30, 0-1-5")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "0-1-5,1-2-30" {
		t.Errorf("got %s", got)
	}
	for _, tc := range []struct {
		name string
		g    gtid
		want bool
	}{
		{"earlier in domain", gtid{valid: true, mariadb: true, domain: 0, server: 1, seq: 4}, true},
		{"same", gtid{valid: true, mariadb: true, domain: 0, server: 1, seq: 5}, true},
		{"later", gtid{valid: true, mariadb: true, domain: 0, server: 1, seq: 6}, false},
		{"other server", gtid{valid: true, mariadb: true, domain: 0, server: 9, seq: 1}, false},
		{"other domain", gtid{valid: true, mariadb: true, domain: 7, server: 1, seq: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.contains(tc.g); got != tc.want {
				t.Errorf("contains(%s) = %v", tc.g, got)
			}
		})
	}
	p.add(gtid{valid: true, mariadb: true, domain: 0, server: 1, seq: 6})
	p.add(gtid{valid: true, mariadb: true, domain: 5, server: 3, seq: 1})
	if got := p.String(); got != "0-1-6,1-2-30,5-3-1" {
		t.Errorf("after add: %s", got)
	}
	for _, bad := range []string{"0-1", "a-b-c", "0-1-2-3", "-1-2-3"} {
		if _, err := parseMariaDBPos(bad); err == nil {
			t.Errorf("parseMariaDBPos(%q): want an error", bad)
		}
	}
}

func TestMySQLSet(t *testing.T) {
	const u1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	const u2 = "4e11fa47-71ca-11e1-9e33-c80aa9429562"
	s, err := parseMySQLSet(u2 + ":1-5:7,\n" + strings3(u1) + ":1-100")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), u1+":1-100,"+u2+":1-5:7"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	s.add(gtid{valid: true, sid: u2, gno: 6})
	if got, want := s.String(), u1+":1-100,"+u2+":1-7"; got != want {
		t.Errorf("after add: got %s, want %s", got, want)
	}
	s.add(gtid{valid: true, sid: u1, tag: "blue", gno: 3})
	if got, want := s.String(), u1+":1-100:blue:3,"+u2+":1-7"; got != want {
		t.Errorf("after tagged add: got %s, want %s", got, want)
	}
	back, err := parseMySQLSet(s.String())
	if err != nil || back.String() != s.String() {
		t.Errorf("reparse: %v %v", back, err)
	}
	for _, tc := range []struct {
		g    gtid
		want bool
	}{
		{gtid{valid: true, sid: u1, gno: 100}, true},
		{gtid{valid: true, sid: u1, gno: 101}, false},
		{gtid{valid: true, sid: u1, tag: "blue", gno: 3}, true},
		{gtid{valid: true, sid: u2, gno: 8}, false},
	} {
		if got := s.contains(tc.g); got != tc.want {
			t.Errorf("contains(%s) = %v", tc.g, got)
		}
	}
	purged, _ := parseMySQLSet(u1 + ":1-50")
	if g, missing := s.missing(purged); missing {
		t.Errorf("missing %s from a covered set", g)
	}
	purged, _ = parseMySQLSet(u1 + ":1-150")
	if _, missing := s.missing(purged); !missing {
		t.Error("a purged range beyond the set is not reported")
	}
	for _, bad := range []string{"nope:1-2", u1, u1 + ":5-2", u1 + ":0", u1 + ":x"} {
		if _, err := parseMySQLSet(bad); err == nil {
			t.Errorf("parseMySQLSet(%q): want an error", bad)
		}
	}
}

// strings3 upper-cases a UUID, as some servers print them.
func strings3(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 32
		}
	}
	return string(b)
}

func TestGTIDKeys(t *testing.T) {
	for _, tc := range []struct {
		g          gtid
		str, txKey string
	}{
		{gtid{valid: true, mariadb: true, domain: 0, server: 1, seq: 42}, "0-1-42", "gtid-0-1-42"},
		{gtid{valid: true, sid: "3e11fa47-71ca-11e1-9e33-c80aa9429562", gno: 7}, "3e11fa47-71ca-11e1-9e33-c80aa9429562:7", "gtid-3e11fa47-71ca-11e1-9e33-c80aa9429562-7"},
		{gtid{valid: true, sid: "3e11fa47-71ca-11e1-9e33-c80aa9429562", tag: "blue", gno: 7}, "3e11fa47-71ca-11e1-9e33-c80aa9429562:blue:7", "gtid-3e11fa47-71ca-11e1-9e33-c80aa9429562-blue-7"},
	} {
		if got := tc.g.String(); got != tc.str {
			t.Errorf("String: got %s, want %s", got, tc.str)
		}
		if got := tc.g.txKey(); got != tc.txKey {
			t.Errorf("txKey: got %s, want %s", got, tc.txKey)
		}
	}
}
