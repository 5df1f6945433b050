// Package token is trackerd's reversible escaping of a value into one NATS
// subject token: [A-Za-z0-9_-] stay, every other byte becomes '=' and two
// upper-case hex digits, and the empty string becomes "=". Subjects, event
// ids and checkpoint keys all escape their values so; the README's
// "Subjects" section states the rule for consumers.
//
// It is a leaf package (standard library only) so that config, which
// checks subject templates, tracker, which builds event ids, and wire,
// which renders subjects, share one implementation.
package token

import (
	"errors"
	"strings"
)

// Escape returns s as a single subject token.
func Escape(s string) string {
	if s == "" {
		return "="
	}
	for i := 0; i < len(s); i++ {
		if !Safe(s[i]) {
			return string(Append(make([]byte, 0, len(s)+8), s))
		}
	}
	return s
}

// Append appends Escape(s) to b.
func Append(b []byte, s string) []byte {
	if s == "" {
		return append(b, '=')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if Safe(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '=', upperHex[c>>4], upperHex[c&0xF])
	}
	return b
}

// ErrBadEscape is returned by Unescape for a token Escape cannot produce.
var ErrBadEscape = errors.New("not an escaped token")

// Unescape reverses Escape.
func Unescape(tok string) (string, error) {
	if tok == "=" {
		return "", nil
	}
	if !strings.Contains(tok, "=") {
		for i := 0; i < len(tok); i++ {
			if !Safe(tok[i]) {
				return "", ErrBadEscape
			}
		}
		if tok == "" {
			return "", ErrBadEscape
		}
		return tok, nil
	}
	b := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case Safe(c):
			b = append(b, c)
		case c == '=' && i+2 < len(tok) && isUpperHex(tok[i+1]) && isUpperHex(tok[i+2]):
			v := unhex(tok[i+1])<<4 | unhex(tok[i+2])
			if Safe(v) {
				return "", ErrBadEscape // Escape never encodes a safe byte
			}
			b = append(b, v)
			i += 2
		default:
			return "", ErrBadEscape
		}
	}
	return string(b), nil
}

// Safe reports whether Escape keeps byte c as it is: [A-Za-z0-9_-].
func Safe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

const upperHex = "0123456789ABCDEF"

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}
