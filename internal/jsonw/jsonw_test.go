package jsonw

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var samples = []string{
	"", "plain", "\x80\x81\x82 runes", "\xff undefined", "quote\"back\\slash", "\x00\x01\x1f\x7f", "tab\t nl\n cr\r", "\b\f",
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

// FuzzAppendString checks the policies against the writers they replaced
// (tracker.AppendJSONString, sinks/nats's appendCEString, sources/mysql's
// appendJSONText and its rune writer, kept below as they were), and that
// the output is valid JSON for s.
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
		for _, esc := range []bool{false, true} {
			p := EncodingJSON
			if esc {
				p = InvalidAsHex
			}
			if got, want := AppendBytes([]byte("x"), []byte(s), p), oldMySQLText([]byte("x"), []byte(s), esc); string(got) != string(want) {
				t.Fatalf("policy %d %q: %s, was %s", p, s, got, want)
			}
			// Rune by rune, as a single-byte charset is written.
			var got, want []byte
			for i := 0; i < len(s); i++ {
				r := rune(s[i])
				if s[i] >= 0x80 {
					r = rune(s[i]) - 0x80 + 0x2028 // 0x80 and 0x81: U+2028 and U+2029
				}
				if s[i] == 0xff {
					got, want = AppendInvalid(got, s[i], p), oldMySQLInvalid(want, s[i], esc)
					continue
				}
				got, want = AppendRune(got, r, p), oldMySQLRune(want, r)
			}
			if string(got) != string(want) {
				t.Fatalf("policy %d runes of %q: %s, was %s", p, s, got, want)
			}
		}
		hex := AppendString([]byte("x"), s, InvalidAsHex)
		for _, out := range [][]byte{std[1:], ce[1:], hex[1:]} {
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

func oldMySQLText(dst, b []byte, escapeInvalid bool) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, b[start:i]...)
			dst = oldMySQLByte(dst, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, b[start:i]...)
			dst = oldMySQLInvalid(dst, c, escapeInvalid)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, b[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', lowerHex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, b[start:]...)
	return append(dst, '"')
}

func oldMySQLInvalid(dst []byte, c byte, escape bool) []byte {
	if escape {
		return append(dst, '\\', '\\', 'x', upperHex[c>>4], upperHex[c&0xF])
	}
	return append(dst, `\ufffd`...)
}

func oldMySQLByte(dst []byte, c byte) []byte {
	if c >= 0x20 && c != '"' && c != '\\' {
		return append(dst, c)
	}
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
}

func oldMySQLRune(dst []byte, r rune) []byte {
	if r < utf8.RuneSelf {
		return oldMySQLByte(dst, byte(r))
	}
	if r == '\u2028' || r == '\u2029' {
		return append(dst, '\\', 'u', '2', '0', '2', lowerHex[r&0xF])
	}
	return utf8.AppendRune(dst, r)
}
