package postgres

import (
	"errors"

	"github.com/jackc/pglogrepl"
)

// lsn is a PostgreSQL WAL position.
type lsn = pglogrepl.LSN

const upperHexDigits = "0123456789ABCDEF"

// appendLSN appends l in PostgreSQL's text form "X/X" (upper-case hex, no
// leading zeros), as pg_lsn prints it.
func appendLSN(b []byte, l lsn) []byte {
	b = appendHex32(b, uint32(l>>32))
	b = append(b, '/')
	return appendHex32(b, uint32(l))
}

func appendHex32(b []byte, v uint32) []byte {
	if v == 0 {
		return append(b, '0')
	}
	var tmp [8]byte
	i := len(tmp)
	for v != 0 {
		i--
		tmp[i] = upperHexDigits[v&0xF]
		v >>= 4
	}
	return append(b, tmp[i:]...)
}

// formatLSN returns l as "X/X".
func formatLSN(l lsn) string {
	var buf [17]byte
	return string(appendLSN(buf[:0], l))
}

// txKey returns the transaction key of the README, "Subjects and events" for a
// transaction whose first LSN is first: "lsn-" and 16 upper-case hex digits.
func txKey(first lsn) string {
	var buf [20]byte
	b := append(buf[:0], "lsn-"...)
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, upperHexDigits[(uint64(first)>>uint(shift))&0xF])
	}
	return string(b)
}

var errBadLSN = errors.New("not an LSN (want X/X in hex)")

// parseLSN parses "X/X"; the empty string is 0.
func parseLSN(s string) (lsn, error) {
	if s == "" {
		return 0, nil
	}
	var hi, lo uint64
	var digits int
	part := &hi
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c == '/' && part == &hi && digits > 0:
			part = &lo
			digits = 0
			continue
		default:
			return 0, errBadLSN
		}
		if digits == 8 {
			return 0, errBadLSN
		}
		*part = *part<<4 | d
		digits++
	}
	if part != &lo || digits == 0 {
		return 0, errBadLSN
	}
	return lsn(hi<<32 | lo), nil
}
