package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
	"github.com/trackerd/trackerd/wire/token"
)

func change(bind, schema, table string, op tracker.Op, key ...string) *tracker.Change {
	c := &tracker.Change{Bind: bind, Schema: schema, Table: table, Op: op}
	for i, k := range key {
		c.Key.Names = append(c.Key.Names, "k"+string(rune('0'+i)))
		if k == "<absent>" {
			c.Key.Values = append(c.Key.Values, nil)
			continue
		}
		c.Key.Values = append(c.Key.Values, json.RawMessage(k))
	}
	return c
}

func TestSubjects(t *testing.T) {
	orders := change("default", "public", "orders", tracker.OpInsert, "42")
	tests := []struct {
		name   string
		prefix string
		conv   map[string]string
		phase  tracker.Phase
		c      *tracker.Change
		want   string
	}{
		{"ok - default", "trackerd", nil, tracker.PhaseAfterCommit, orders, "trackerd.after_commit.default.public.orders.insert"},
		{"ok - before_commit", "trackerd", nil, tracker.PhaseBeforeCommit, orders, "trackerd.before_commit.default.public.orders.insert"},
		{"ok - escaped values", "trackerd", nil, tracker.PhaseAfterCommit,
			change("shop eu", "shop-eu", "order.items", tracker.OpDelete), "trackerd.after_commit.shop=20eu.shop-eu.order=2Eitems.delete"},
		{"ok - non-ASCII, wildcards, empty", "trackerd", nil, tracker.PhaseAfterCommit,
			change("b", "", "Ünits*>=", tracker.OpUpdate), "trackerd.after_commit.b.=.=C3=9Cnits=2A=3E=3D.update"},
		{"ok - rollback", "trackerd", nil, tracker.PhaseRollback,
			&tracker.Change{Bind: "default", TxKey: "xid-1"}, "trackerd.rollback.default.=.=.rollback"},
		{"ok - multi-token prefix", "acme.cdc", nil, tracker.PhaseAfterCommit, orders, "acme.cdc.after_commit.default.public.orders.insert"},
		{"ok - custom template, user token", "t", map[string]string{"subject": "%(prefix)s.%(env)s.%(table)s-%(op)s", "env": "prod eu"},
			tracker.PhaseAfterCommit, orders, "t.prod=20eu.orders-insert"},
		{"ok - per-phase template", "t", map[string]string{"subject": "%(prefix)s.%(signal)s.%(table)s", "rollback": "%(prefix)s.rb.%(bind)s"},
			tracker.PhaseRollback, &tracker.Change{Bind: "x"}, "t.rb.x"},
		{"ok - per-phase template, other phase", "t", map[string]string{"subject": "%(prefix)s.%(signal)s.%(table)s", "rollback": "%(prefix)s.rb.%(bind)s"},
			tracker.PhaseBeforeCommit, orders, "t.before_commit.orders"},
		{"ok - key tokens", "t", map[string]string{"subject": "%(prefix)s.%(table)s.%(key_0)s.%(key_1)s.%(key_0_N)s"},
			tracker.PhaseAfterCommit, change("b", "s", "tab", tracker.OpInsert, `"a.b"`, "7", `"x\"y"`), "t.tab.a=2Eb.7.a=2Eb,7,x=22y"},
		{"ok - key tokens missing", "t", map[string]string{"subject": "%(prefix)s.%(key_0)s.%(key_3)s.%(key_0_N)s"},
			tracker.PhaseAfterCommit, change("b", "s", "tab", tracker.OpInsert, "null"), "t.~.~.~"},
		{"ok - empty string key", "t", map[string]string{"subject": "%(prefix)s.%(key_0)s.%(key_0_N)s"},
			tracker.PhaseAfterCommit, change("b", "s", "tab", tracker.OpInsert, `""`, "null", "<absent>"), "t.=.=,~,~"},
		{"ok - percent literal", "t", map[string]string{"subject": "%(prefix)s.100%%.%(table)s"},
			tracker.PhaseAfterCommit, orders, "t.100%.orders"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := wire.NewSubjects(tc.prefix, tc.conv)
			if err != nil {
				t.Fatalf("NewSubjects: %v", err)
			}
			if got := string(s.Append(nil, tc.phase, tc.c)); got != tc.want {
				t.Errorf("subject = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestKeyTokensApart: different keys of one table never render the same
// key token (fault review F12: "_" joined values, and "" and null, did).
func TestKeyTokensApart(t *testing.T) {
	s, err := wire.NewSubjects("t", map[string]string{"subject": "%(prefix)s.%(key_0_N)s"})
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2][]string{
		{{`"a_b"`, `"c"`}, {`"a"`, `"b_c"`}},
		{{`""`}, {"null"}},
		{{`""`}, {"<absent>"}},
		{{`"a"`, `""`}, {`"a"`, "null"}},
		{{`"a,b"`}, {`"a"`, `"b"`}},
		{{`"~"`}, {"null"}},
		{{`"="`}, {`""`}},
		{{`"a"`, `""`, `"b"`}, {`"a"`, `"b"`}},
	} {
		a := string(s.Append(nil, tracker.PhaseAfterCommit, change("b", "s", "t", tracker.OpInsert, pair[0]...)))
		b := string(s.Append(nil, tracker.PhaseAfterCommit, change("b", "s", "t", tracker.OpInsert, pair[1]...)))
		if a == b {
			t.Errorf("keys %v and %v share the subject %q", pair[0], pair[1], a)
		}
	}
}

func TestSubjectsErrors(t *testing.T) {
	tests := []struct {
		name    string
		prefix  string
		conv    map[string]string
		wantErr string
	}{
		{"error - empty prefix", "", nil, "SUBJECT_PREFIX"},
		{"error - prefix with a wildcard", "a.*", nil, "wildcard"},
		{"error - prefix with a space", "a b", nil, "white space"},
		{"error - prefix with an empty token", "a..b", nil, "empty subject token"},
		{"error - unknown token", "t", map[string]string{"subject": "%(prefix)s.%(tabel)s"}, "unknown token %(tabel)s"},
		{"error - not starting with the prefix", "t", map[string]string{"subject": "%(signal)s.%(prefix)s"}, `must begin with "%(prefix)s."`},
		{"error - prefix glued to a token", "t", map[string]string{"subject": "%(prefix)s%(signal)s"}, `must begin with "%(prefix)s."`},
		{"error - prefix only", "t", map[string]string{"after_commit": "%(prefix)s"}, "NAMING_CONVENTION.after_commit"},
		{"error - user token shadows a built-in", "t", map[string]string{"table": "x"}, "built-in"},
		{"error - empty user token", "t", map[string]string{"env": ""}, "needs a value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wire.NewSubjects(tc.prefix, tc.conv)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewSubjects: err = %v, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, tracker.ErrConfig) {
				t.Errorf("err = %v: does not match tracker.ErrConfig", err)
			}
		})
	}
}

func TestSubjectsFilter(t *testing.T) {
	def, err := wire.NewSubjects("trackerd", nil)
	if err != nil {
		t.Fatal(err)
	}
	glued, err := wire.NewSubjects("t", map[string]string{"subject": "%(prefix)s.%(signal)s.%(schema)s_%(table)s.%(key_0)s"})
	if err != nil {
		t.Fatal(err)
	}
	perPhase, err := wire.NewSubjects("t", map[string]string{"rollback": "%(prefix)s.rb.%(bind)s"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		s       *wire.Subjects
		f       wire.Filter
		want    string
		wantErr string
	}{
		{name: "ok - everything", s: def, want: "trackerd.*.*.*.*.*"},
		{name: "ok - one table, escaped", s: def, f: wire.Filter{Phase: "after_commit", Bind: "shop eu", Schema: "public", Table: "order.items"},
			want: "trackerd.after_commit.shop=20eu.public.order=2Eitems.*"},
		{name: "ok - star is any", s: def, f: wire.Filter{Phase: "*", Bind: "b", Op: "delete"}, want: "trackerd.*.b.*.*.delete"},
		{name: "ok - wildcard in a glued token", s: glued, f: wire.Filter{Phase: "before_commit", Schema: "s"}, want: "t.before_commit.*.*"},
		{name: "ok - glued token, both given", s: glued, f: wire.Filter{Phase: "before_commit", Schema: "s", Table: "x"}, want: "t.before_commit.s_x.*"},
		{name: "ok - per-phase, one phase", s: perPhase, f: wire.Filter{Phase: "rollback", Bind: "b"}, want: "t.rb.b"},
		{name: "error - per-phase, any phase", s: perPhase, f: wire.Filter{Bind: "b"}, wantErr: "one phase at a time"},
		{name: "error - bad phase", s: def, f: wire.Filter{Phase: "during"}, wantErr: `filter phase "during"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.Filter(tc.f)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Filter: err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Filter = %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzSubjectEscape: an escaped token is one valid, non-empty subject
// token, and unescaping it gives the value back.
func FuzzSubjectEscape(f *testing.F) {
	for _, s := range []string{"", "orders", "order.items", "shop eu", "Ünits", "*", ">", "a=b", "=", "=2E", "\x00\xff", "tab\tle", "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := token.Escape(s)
		if tok == "" {
			t.Fatalf("Escape(%q) is empty", s)
		}
		for _, r := range tok {
			if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || r > unicode.MaxASCII || unicode.IsControl(r) {
				t.Fatalf("Escape(%q) = %q holds %q", s, tok, r)
			}
		}
		back, err := token.Unescape(tok)
		if err != nil || back != s {
			t.Fatalf("Unescape(Escape(%q)) = %q, %v", s, back, err)
		}
		// Rendered into a subject, it is exactly one token.
		subjects, err := wire.NewSubjects("p", nil)
		if err != nil {
			t.Fatal(err)
		}
		subj := string(subjects.Append(nil, tracker.PhaseAfterCommit, &tracker.Change{Bind: s, Schema: s, Table: s, Op: tracker.Op(s)}))
		if n := strings.Count(subj, "."); n != 5 {
			t.Fatalf("subject %q of value %q has %d dots, want 5", subj, s, n)
		}
	})
}

// FuzzKeyTokenInjective: two keys of one table render the same key_0_N
// token only when they are the same key (fault review F12).
func FuzzKeyTokenInjective(f *testing.F) {
	f.Add("a_b", "c", "a", "b_c", 2, 2)
	f.Add("", "", "", "", 1, 0)
	f.Add("x", "", "x", "", 2, 1)
	f.Fuzz(func(t *testing.T, a0, a1, b0, b1 string, na, nb int) {
		s, err := wire.NewSubjects("t", map[string]string{"subject": "%(prefix)s.%(key_0_N)s"})
		if err != nil {
			t.Fatal(err)
		}
		// n picks the key: 0 values, one, two, or a null in second place.
		key := func(v0, v1 string, n int) []string {
			q0, _ := json.Marshal(v0)
			q1, _ := json.Marshal(v1)
			switch ((n % 4) + 4) % 4 {
			case 0:
				return nil
			case 1:
				return []string{string(q0)}
			case 2:
				return []string{string(q0), string(q1)}
			}
			return []string{string(q0), "null"}
		}
		ka, kb := key(a0, a1, na), key(b0, b1, nb)
		ta := string(s.Append(nil, tracker.PhaseAfterCommit, change("b", "s", "t", tracker.OpInsert, ka...)))
		tb := string(s.Append(nil, tracker.PhaseAfterCommit, change("b", "s", "t", tracker.OpInsert, kb...)))
		same := strings.Join(ka, "\x00") == strings.Join(kb, "\x00") && len(ka) == len(kb)
		if (ta == tb) != same {
			t.Fatalf("keys %q and %q render %q and %q", ka, kb, ta, tb)
		}
	})
}

func BenchmarkSubject(b *testing.B) {
	s, err := wire.NewSubjects("trackerd", nil)
	if err != nil {
		b.Fatal(err)
	}
	c := change("default", "public", "orders", tracker.OpInsert, "42")
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		buf = s.Append(buf[:0], tracker.PhaseAfterCommit, c)
	}
}

// TestControlSubjects: lifecycle events go to <prefix>.control.<bind>.snapshot
// whatever the template, snapshot rows to the template with op snapshot,
// and the stream's subject captures both.
func TestControlSubjects(t *testing.T) {
	lc := func(bind string) *tracker.Event {
		return &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: &tracker.Change{Bind: bind},
			Lifecycle: &tracker.Lifecycle{Type: tracker.LifecycleStarted, Bind: bind, Snapshot: "s1"}}
	}
	row := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: change("default", "public", "orders", tracker.OpSnapshot, "42"), Snapshot: "s1"}
	tests := []struct {
		name   string
		prefix string
		conv   map[string]string
		ev     *tracker.Event
		want   string
	}{
		{"ok - lifecycle", "trackerd", nil, lc("default"), "trackerd.control.default.snapshot"},
		{"ok - lifecycle, bind escaped", "acme.cdc", nil, lc("shop eu.1"), "acme.cdc.control.shop=20eu=2E1.snapshot"},
		{"ok - lifecycle ignores the template", "t", map[string]string{"subject": "%(prefix)s.x.%(table)s.%(schema)s.%(op)s"}, lc("b"), "t.control.b.snapshot"},
		{"ok - snapshot row", "trackerd", nil, row, "trackerd.after_commit.default.public.orders.snapshot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := wire.NewSubjects(tc.prefix, tc.conv)
			if err != nil {
				t.Fatal(err)
			}
			got := string(s.AppendEvent(nil, tc.ev))
			if got != tc.want {
				t.Errorf("subject = %q, want %q", got, tc.want)
			}
			if !strings.HasPrefix(got, strings.TrimSuffix(s.StreamSubject(), ">")) {
				t.Errorf("%q is outside the stream's %s", got, s.StreamSubject())
			}
			if err := wire.CheckPattern(got); err != nil {
				t.Errorf("%q: %v", got, err)
			}
		})
	}
	s, err := wire.NewSubjects("trackerd", nil)
	if err != nil {
		t.Fatal(err)
	}
	for bind, want := range map[string]string{"": "trackerd.control.*.snapshot", "*": "trackerd.control.*.snapshot", "a.b": "trackerd.control.a=2Eb.snapshot"} {
		if got := s.ControlFilter(bind); got != want {
			t.Errorf("ControlFilter(%q) = %q, want %q", bind, got, want)
		}
	}
	// A change filter never matches the control subject.
	p, err := s.Filter(wire.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(p, ".") == strings.Count("trackerd.control.default.snapshot", ".") {
		t.Errorf("the change pattern %q has as many tokens as the control subject", p)
	}
}
