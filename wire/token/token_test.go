package token

import (
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"orders", "orders"},
		{"Order_Items-2", "Order_Items-2"},
		{"", "="},
		{"a.b", "a=2Eb"},
		{"a b", "a=20b"},
		{"*", "=2A"},
		{">", "=3E"},
		{"=", "=3D"},
		{"Ünits", "=C3=9Cnits"},
		{"a/b", "a=2Fb"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := Escape(tc.in); got != tc.want {
				t.Fatalf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
			}
			back, err := Unescape(tc.want)
			if err != nil || back != tc.in {
				t.Fatalf("Unescape(%q) = %q, %v; want %q", tc.want, back, err, tc.in)
			}
		})
	}
	for _, bad := range []string{"", "a.b", "=2", "=2e", "=41", "a b", "=ZZ"} {
		if got, err := Unescape(bad); err == nil {
			t.Errorf("Unescape(%q) = %q, want an error", bad, got)
		}
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "orders", "a.b", "=", "=3D", "Ünits", "a b*>", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Escape(s)
		if e == "" || strings.ContainsAny(e, ".*> \t\r\n") {
			t.Fatalf("Escape(%q) = %q is not a single safe token", s, e)
		}
		back, err := Unescape(e)
		if err != nil || back != s {
			t.Fatalf("Unescape(Escape(%q)) = %q, %v", s, back, err)
		}
		// Escaping is injective: an escaped token that unescapes must
		// re-escape to itself.
		if u, err := Unescape(s); err == nil && Escape(u) != s {
			t.Fatalf("Escape(Unescape(%q)) = %q", s, Escape(u))
		}
	})
}
