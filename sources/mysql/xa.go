package mysql

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// XA transactions in the binlog (MariaDB 10.11 as SHOW BINLOG EVENTS shows
// it; MySQL 8 logs an XA START statement where MariaDB flags the GTID):
//
//	Gtid          XA START X'617831',X'',1 GTID 0-1-5   (FL_PREPARED_XA)
//	Table_map, Write_rows ...                           (the rows)
//	Query         XA END X'617831',X'',1
//	XA_prepare    XA PREPARE X'617831',X'',1
//	...           (other transactions)
//	Gtid          GTID 0-1-6                            (FL_COMPLETED_XA)
//	Query         XA COMMIT X'617831',X'',1             (or XA ROLLBACK)
//
// XA COMMIT ... ONE PHASE is logged by MariaDB as an ordinary transaction
// (BEGIN GTID, rows, Xid), by MySQL as XA START, rows, XA END and an
// XA_PREPARE_LOG_EVENT with its one-phase flag set. A read-only XA
// transaction is not logged at all.

// serializeXID renders an XA transaction id as the server serializes it in
// the binlog's XA statements: X'<gtrid hex>',X'<bqual hex>',<formatID>.
func serializeXID(gtrid, bqual []byte, formatID int32) string {
	var b strings.Builder
	b.Grow(2*len(gtrid) + 2*len(bqual) + 16)
	b.WriteString("X'")
	b.WriteString(strings.ToUpper(hex.EncodeToString(gtrid)))
	b.WriteString("',X'")
	b.WriteString(strings.ToUpper(hex.EncodeToString(bqual)))
	b.WriteString("',")
	b.WriteString(strconv.FormatInt(int64(formatID), 10))
	return b.String()
}

// parseXID parses the xid of an XA statement, gtrid[,bqual[,formatID]],
// each string a quoted literal ('a', "a"), a hex literal (X'61', 0x61) or
// a bit literal (b'0110'), and returns it serialized (see serializeXID).
// What follows the xid (ONE PHASE, a comment) is ignored.
func parseXID(q []byte) (string, error) {
	parts := make([][]byte, 0, 2)
	formatID := int64(1)
	rest := skipSpace(q)
	for i := 0; i < 3; i++ {
		rest = skipSpace(rest)
		if i == 2 {
			n := 0
			for n < len(rest) && (rest[n] >= '0' && rest[n] <= '9' || n == 0 && rest[n] == '-') {
				n++
			}
			v, err := strconv.ParseInt(string(rest[:n]), 10, 32)
			if err != nil {
				return "", fmt.Errorf("bad xid %q: format id: %w", q, err)
			}
			formatID = v
			break
		}
		s, r, err := xidLiteral(rest)
		if err != nil {
			return "", fmt.Errorf("bad xid %q: %w", q, err)
		}
		parts = append(parts, s)
		rest = skipSpace(r)
		if len(rest) == 0 || rest[0] != ',' {
			break
		}
		rest = rest[1:]
	}
	var bqual []byte
	if len(parts) > 1 {
		bqual = parts[1]
	}
	return serializeXID(parts[0], bqual, int32(formatID)), nil
}

var errXIDLiteral = errors.New("want a string, hex or bit literal")

// xidLiteral reads one string literal at the start of q.
func xidLiteral(q []byte) (val, rest []byte, err error) {
	if len(q) == 0 {
		return nil, nil, errXIDLiteral
	}
	switch c := q[0]; {
	case c == '\'' || c == '"':
		s, r := unquote(string(q), true)
		if len(r) == 0 && (len(q) < 2 || q[len(q)-1] != c) {
			return nil, nil, errors.New("unterminated string")
		}
		return []byte(s), []byte(r), nil
	case (c == 'X' || c == 'x') && len(q) > 1 && q[1] == '\'':
		end := bytes.IndexByte(q[2:], '\'')
		if end < 0 {
			return nil, nil, errors.New("unterminated hex literal")
		}
		v, err := hex.DecodeString(string(q[2 : 2+end]))
		if err != nil {
			return nil, nil, err
		}
		return v, q[2+end+1:], nil
	case c == '0' && len(q) > 1 && (q[1] == 'x' || q[1] == 'X'):
		n := 2
		for n < len(q) && isHexDigit(q[n]) {
			n++
		}
		digits := string(q[2:n])
		if len(digits)%2 == 1 {
			digits = "0" + digits
		}
		v, err := hex.DecodeString(digits)
		if err != nil {
			return nil, nil, err
		}
		return v, q[n:], nil
	case (c == 'B' || c == 'b') && len(q) > 1 && q[1] == '\'':
		end := bytes.IndexByte(q[2:], '\'')
		if end < 0 {
			return nil, nil, errors.New("unterminated bit literal")
		}
		bitsText := string(q[2 : 2+end])
		var v []byte
		for len(bitsText) > 0 {
			k := len(bitsText) % 8
			if k == 0 {
				k = 8
			}
			x, err := strconv.ParseUint(bitsText[:k], 2, 8)
			if err != nil {
				return nil, nil, err
			}
			v = append(v, byte(x))
			bitsText = bitsText[k:]
		}
		return v, q[2+end+1:], nil
	}
	return nil, nil, errXIDLiteral
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// onePhase reports whether an XA COMMIT statement's arguments end with
// ONE PHASE (after the xid: a quoted xid ends with its quote).
func onePhase(args []byte) bool {
	t := bytes.TrimRight(args, " \t\r\n;")
	const suffix = "ONE PHASE"
	n := len(t) - len(suffix)
	if n < 1 || !bytes.EqualFold(t[n:], []byte(suffix)) {
		return false
	}
	switch t[n-1] {
	case ' ', '\t', '\r', '\n':
		return true
	}
	return false
}
