// Package jsonw writes JSON strings for trackerd's hand-written encoders
// (the change's data and row values, the CloudEvent envelope), under one of
// three policies that differ where JSON leaves a choice: what to do with
// bytes that are not UTF-8, and whether to escape U+2028 and U+2029.
//
// All escape '"', '\\' and the control bytes below 0x20: \n, \r and \t by
// their short forms, the others (\b and \f included) as \u00xx with
// lower-case hex digits. None escapes <, > or &.
package jsonw

import (
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Policy says how a string is written where JSON writers differ.
type Policy uint8

const (
	// EncodingJSON writes the JSON value encoding/json writes without
	// HTML escaping: each byte that is not part of valid UTF-8 becomes
	// \ufffd, and U+2028 and U+2029 are escaped (valid JSON, but not valid
	// JavaScript). Byte for byte it is encoding/json's output but for \b
	// and \f, which encoding/json writes so since Go 1.22 and this policy
	// as \u0008 and \u000c, as trackerd always has.
	EncodingJSON Policy = iota
	// CloudEvents writes what github.com/cloudevents/sdk-go/v2's JSON
	// writer (json-iterator's ConfigFastest) writes, but for invalid
	// UTF-8: each run of bytes that is not valid UTF-8 is replaced by
	// U+FFFD first (written as it is, not escaped), where sdk-go copies the
	// bytes and writes invalid JSON. All other bytes, U+2028 and U+2029
	// included, are copied.
	CloudEvents
	// InvalidAsHex is EncodingJSON but for bytes that are not UTF-8: each
	// is written as the four characters \xHH (upper-case hex digits; in
	// JSON "\\xHH"), so that no byte is lost. MySQL text columns read with
	// NATIVE_UNICODE false are written so.
	InvalidAsHex
)

// AppendString appends s to b as a JSON string, quotes included.
func AppendString(b []byte, s string, p Policy) []byte {
	b = append(b, '"')
	b = AppendStringBody(b, s, p)
	return append(b, '"')
}

// AppendStringBody appends s to b as the inside of a JSON string: escaped,
// without the quotes, so that a caller can write one string from parts.
func AppendStringBody(b []byte, s string, p Policy) []byte {
	if p == CloudEvents && !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = appendEscapedByte(b, c)
			i++
			start = i
			continue
		}
		if p == CloudEvents {
			i++ // valid UTF-8 (made so above): copied
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = AppendInvalid(b, c, p)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', lowerHex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// AppendBytes is AppendString for text held in a byte slice, which it
// does not keep.
func AppendBytes(b, s []byte, p Policy) []byte {
	return AppendString(b, unsafe.String(unsafe.SliceData(s), len(s)), p)
}

// AppendRune appends the valid rune r (U+FFFD included) to b as the
// inside of a JSON string: escaped as the policy escapes it. For writers
// that decode text rune by rune (a single-byte charset).
func AppendRune(b []byte, r rune, p Policy) []byte {
	switch {
	case r < utf8.RuneSelf:
		c := byte(r)
		if c >= 0x20 && c != '"' && c != '\\' {
			return append(b, c)
		}
		return appendEscapedByte(b, c)
	case p != CloudEvents && (r == '\u2028' || r == '\u2029'):
		return append(b, '\\', 'u', '2', '0', '2', lowerHex[r&0xF])
	}
	return utf8.AppendRune(b, r)
}

// AppendInvalid appends, inside a JSON string, what the policy writes for
// a byte c of text that does not decode: \ufffd (EncodingJSON), U+FFFD
// itself (CloudEvents) or \\xHH (InvalidAsHex).
func AppendInvalid(b []byte, c byte, p Policy) []byte {
	switch p {
	case InvalidAsHex:
		return append(b, '\\', '\\', 'x', upperHex[c>>4], upperHex[c&0xF])
	case CloudEvents:
		return append(b, "\uFFFD"...)
	}
	return append(b, `\ufffd`...)
}

const (
	lowerHex = "0123456789abcdef"
	upperHex = "0123456789ABCDEF"
)

// appendEscapedByte appends the escape of an ASCII byte that a JSON string
// may not hold as it is.
func appendEscapedByte(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
}
