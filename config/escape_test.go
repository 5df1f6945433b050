package config_test

import (
	"testing"

	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
)

// FuzzEscapeValue keeps config's copy of the subject escaping rule (config
// cannot import tracker) equal to tracker.Escape.
func FuzzEscapeValue(f *testing.F) {
	for _, s := range []string{"", "orders", "a.b", "é=*> _-", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := config.EscapeValue(s), tracker.Escape(s); got != want {
			t.Fatalf("EscapeValue(%q) = %q, tracker.Escape = %q", s, got, want)
		}
	})
}
