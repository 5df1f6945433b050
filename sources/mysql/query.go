package mysql

import (
	"bytes"
	"strings"
)

// The SQL of binlog QUERY events, read as far as the stream needs it (see
// stream.query): the first keyword, TRUNCATE's target, and a head that is
// safe to log. Comments and white space are skipped; nothing else of SQL
// is parsed.

// skipSpace skips white space, "(" and comments at the start of q.
func skipSpace(q []byte) []byte {
	for {
		for len(q) > 0 && (q[0] == ' ' || q[0] == '\t' || q[0] == '\n' || q[0] == '\r' || q[0] == '(') {
			q = q[1:]
		}
		switch {
		case len(q) >= 2 && q[0] == '/' && q[1] == '*':
			end := bytes.Index(q[2:], []byte("*/"))
			if end < 0 {
				return nil
			}
			q = q[2+end+2:]
		case len(q) >= 1 && q[0] == '#', len(q) >= 3 && q[0] == '-' && q[1] == '-' && (q[2] == ' ' || q[2] == '\t'):
			nl := bytes.IndexByte(q, '\n')
			if nl < 0 {
				return nil
			}
			q = q[nl+1:]
		default:
			return q
		}
	}
}

// firstWord returns the first keyword of a statement, upper-cased, after
// white space and comments, and the rest of the statement.
func firstWord(q []byte) (string, []byte) {
	q = skipSpace(q)
	i := 0
	for i < len(q) && (q[i] >= 'a' && q[i] <= 'z' || q[i] >= 'A' && q[i] <= 'Z' || q[i] == '_') {
		i++
	}
	switch w := q[:i]; {
	case len(w) == 5 && bytes.EqualFold(w, []byte("BEGIN")):
		return "BEGIN", q[i:]
	case len(w) == 6 && bytes.EqualFold(w, []byte("COMMIT")):
		return "COMMIT", q[i:]
	}
	return strings.ToUpper(string(q[:i])), q[i:]
}

// statementHead is the start of a statement for a log line: its verb and
// target, cut before any value ("(", quotes, VALUES, SET, WHERE), so that
// no row data reaches the log.
func statementHead(q []byte) string {
	q = skipSpace(q)
	if len(q) > 80 {
		q = q[:80]
	}
	s := string(q)
	cut := len(s)
	if i := strings.IndexAny(s, "('\"=\n"); i >= 0 {
		cut = i
	}
	upper := strings.ToUpper(s[:cut])
	for _, kw := range []string{" VALUES", " VALUE", " SET ", " WHERE ", " SELECT "} {
		if i := strings.Index(upper, kw); i >= 0 && i < cut {
			cut = i
			upper = upper[:i]
		}
	}
	return strings.TrimSpace(s[:cut])
}

// truncateTarget parses "[TABLE] [db.]table" after TRUNCATE.
func truncateTarget(rest []byte, defaultDB string) (db, table string, ok bool) {
	w, r := firstWord(rest)
	if w != "TABLE" {
		r = rest
	}
	s := strings.TrimSpace(string(skipSpace(r)))
	names := []string{}
	for len(names) < 2 {
		s = strings.TrimLeft(s, " \t\n")
		if s == "" {
			break
		}
		var name string
		if s[0] == '`' {
			name, s = unquote(s, false)
		} else {
			end := strings.IndexAny(s, ". \t\n;")
			if end < 0 {
				end = len(s)
			}
			name, s = s[:end], s[end:]
		}
		names = append(names, name)
		s = strings.TrimLeft(s, " \t\n")
		if s == "" || s[0] != '.' {
			break
		}
		s = s[1:]
	}
	switch len(names) {
	case 1:
		return defaultDB, names[0], names[0] != ""
	case 2:
		return names[0], names[1], names[1] != ""
	}
	return "", "", false
}
