package postgres

import (
	"testing"
)

func TestPosition(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // String() of the parsed position, "" for an error
		confirm lsn
	}{
		{"", "0/0", 0},
		{"0/16B3F48", "0/16B3F48", 0x16B3F48},
		{"0/10;prepared=0/8", "0/10;prepared=0/8", 0x8},
		{"0/10;prepared=0/20,0/8,0/8", "0/10;prepared=0/8,0/20", 0x8},
		{"1/0;prepared=0/FFFFFFFF", "1/0;prepared=0/FFFFFFFF", 0xFFFFFFFF},
		{"0/10;prepared=0/30", "0/10;prepared=0/30", 0x10}, // prepared after the last commit
		{"0/10;prepared=", "", 0},
		{";prepared=0/8", "", 0},
		{"0/10;prepared=0/8,", "", 0},
		{"0/10;prepared=x", "", 0},
		{"0/10;other=0/8", "", 0},
		{"0/10 junk", "", 0},
	} {
		p, err := parsePosition(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parsePosition(%q) = %v, want an error", tc.in, p)
			}
			continue
		}
		if err != nil {
			t.Errorf("parsePosition(%q): %v", tc.in, err)
			continue
		}
		if p.String() != tc.want || p.confirm() != tc.confirm {
			t.Errorf("parsePosition(%q) = %s confirming %s, want %s confirming %s", tc.in, p, formatLSN(p.confirm()), tc.want, formatLSN(tc.confirm))
		}
	}
}

func FuzzPosition(f *testing.F) {
	for _, s := range []string{"0/10", "0/10;prepared=0/8,0/20", "", ";prepared=", "A/B;prepared=C/D"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePosition(s)
		if err != nil {
			return
		}
		q, err := parsePosition(p.String())
		if err != nil || q.String() != p.String() || q.confirm() != p.confirm() || p.confirm() > p.through {
			t.Fatalf("%q: %s round-trips to %s (%v), confirming %s", s, p, q, err, formatLSN(p.confirm()))
		}
	})
}

func TestCarriedPosition(t *testing.T) {
	c := newCarried()
	if got := c.positionAt(0x50).String(); got != "0/50" {
		t.Fatalf("nothing prepared: %s", got)
	}
	c.prepared[7] = &txState{prepareLSN: 0x40}
	c.prepared[8] = &txState{prepareLSN: 0x20}
	c.relisted[0x10] = true
	if got := c.positionAt(0x50).String(); got != "0/50;prepared=0/10,0/20,0/40" {
		t.Fatalf("prepared: %s", got)
	}
}

// Confirm moves the slot no further than the oldest prepare, and Lag's
// bytes count from there: the server keeps the WAL from there.
func TestConfirmPrepared(t *testing.T) {
	s := &Source{}
	s.serverEnd.Store(0x400)
	s.Confirm("0/200;prepared=0/180,0/1F0")
	if got := lsn(s.confirmed.Load()); got != 0x180 {
		t.Fatalf("confirmed %s, want the oldest prepare 0/180", formatLSN(got))
	}
	if lag := s.Lag(); lag.Bytes != 0x280 {
		t.Fatalf("lag %+v: want the bytes from the oldest prepare", lag)
	}
	s.Confirm("0/300")
	if got := lsn(s.confirmed.Load()); got != 0x300 {
		t.Fatalf("confirmed %s, want 0/300 once nothing is prepared", formatLSN(got))
	}
}

func TestFullXid(t *testing.T) {
	for _, tc := range []struct {
		xid  uint32
		next uint64
		want uint64
		ok   bool
	}{
		{100, 1000, 100, true},
		{999, 1000, 999, true},
		{4000000000, 5<<32 | 1000, 4<<32 | 4000000000, true}, // before the wrap into epoch 5
		{500, 5<<32 | 1000, 5<<32 | 500, true},
		{4000000000, 1000, 0, false}, // before the first epoch
	} {
		got, ok := fullXid(tc.xid, tc.next)
		if got != tc.want || ok != tc.ok {
			t.Errorf("fullXid(%d, %#x) = %#x %t, want %#x %t", tc.xid, tc.next, got, ok, tc.want, tc.ok)
		}
	}
}
