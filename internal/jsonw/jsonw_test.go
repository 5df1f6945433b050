package jsonw

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var samples = []string{
	"", "plain", "quote\"back\\slash", "\x00\x01\x1f\x7f", "tab\t nl\n cr\r", "\b\f",
	"é ü 日本", "\u2028\u2029", "bad \xff utf8", "\xff\xfe run", "trunc \xe6\x97", "<>&", "\U0001F600",
}

// TestEncodingJSONDecodesAsEncodingJSON: the EncodingJSON policy writes the
// value encoding/json writes, and its bytes but for \b and \f.
func TestEncodingJSONDecodesAsEncodingJSON(t *testing.T) {
	for _, s := range samples {
		got := string(AppendString(nil, s, EncodingJSON))
		want, _ := json.Marshal(s)
		w := strings.NewReplacer(`\b`, `\u0008`, `\f`, `\u000c`, `\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(string(want))
		if got != w {
			t.Errorf("%q: wrote %s, want %s", s, got, w)
		}
	}
}

// TestCloudEventsPolicy pins what sdk-go's writer does (sinks/nats and wire
// compare whole events with sdk-go itself).
func TestCloudEventsPolicy(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", `"plain"`},
		{"q\"b\\", `"q\"b\\"`},
		{"\x00\x1f\n\r\t\b", `"\u0000\u001f\n\r\t\u0008"`},
		{"\u2028\u2029<>&", "\"\u2028\u2029<>&\""},
		{"a\xff\xfeb", "\"a\uFFFDb\""}, // one U+FFFD per run
		{"é日", `"é日"`},
	} {
		if got := string(AppendString(nil, tc.in, CloudEvents)); got != tc.want {
			t.Errorf("%q: wrote %s, want %s", tc.in, got, tc.want)
		}
	}
}

// FuzzAppendString checks both policies against the writers they replaced
// (tracker.AppendJSONString and sinks/nats's appendCEString, kept below as
// they were), and that the output is valid JSON for s.
func FuzzAppendString(f *testing.F) {
	for _, s := range samples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		std := AppendString([]byte("x"), s, EncodingJSON)
		if want := oldAppendJSONString([]byte("x"), s); string(std) != string(want) {
			t.Fatalf("EncodingJSON %q: %s, was %s", s, std, want)
		}
		ce := AppendString([]byte("x"), s, CloudEvents)
		if want := oldAppendCEString([]byte("x"), s); string(ce) != string(want) {
			t.Fatalf("CloudEvents %q: %s, was %s", s, ce, want)
		}
		for _, out := range [][]byte{std[1:], ce[1:]} {
			var back string
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatalf("%q -> %s: %v", s, out, err)
			}
			if utf8.ValidString(s) && back != s {
				t.Fatalf("%q -> %s -> %q", s, out, back)
			}
		}
	})
}

func BenchmarkAppendString(b *testing.B) {
	for _, p := range []struct {
		name string
		p    Policy
	}{{"EncodingJSON", EncodingJSON}, {"CloudEvents", CloudEvents}} {
		b.Run(p.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf = AppendString(buf[:0], "trackerd.after_commit public.orders 0/16B3748 \"quoted\" é", p.p)
			}
		})
	}
}

// The writers this package replaced, as they were (2026-12).

func oldAppendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func oldAppendCEString(b []byte, s string) []byte {
	const lowerHex = "0123456789abcdef"
	b = append(b, '"')
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
