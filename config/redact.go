package config

import "strings"

// Redaction. config never parses database URIs (package binds does, and
// binds imports config, not the other way round), but it must show bad
// values without their passwords. RedactURI is the one helper both packages
// use for text that failed to parse; a URI that parses is rendered by
// binds.URI.String instead.

// RedactURI returns s with everything that may be a password replaced by
// ***. It is deliberately generous, since it is used on text that may not
// parse:
//
//   - in scheme://user:password@host..., everything from the first ':' after
//     "://" to the LAST '@' is hidden, so a password holding an unescaped '@',
//     '/' or '?' is hidden whole (SQLAlchemy's grammar ends the password at
//     the first '@'; hiding more is the safe side);
//   - with no '@', a "user:password/db" typed without its host would read as
//     host:port, so a port that is not all digits is hidden;
//   - the values of query parameters named like passwords (see
//     IsSecretParam) are hidden.
//
// Text without any of these is returned unchanged.
func RedactURI(s string) string {
	prefix, rest := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		prefix, rest = s[:i+3], s[i+3:]
	}
	tail := 0 // where the host part starts in rest
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if c := strings.IndexByte(rest[:at], ':'); c >= 0 {
			rest = rest[:c+1] + "***" + rest[at:]
			tail = c + 1 + len("***") + 1
		} else {
			tail = at + 1
		}
	} else {
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		auth := rest[:end]
		from := 0
		if strings.HasPrefix(auth, "[") {
			if rb := strings.IndexByte(auth, ']'); rb >= 0 {
				from = rb
			}
		}
		if c := strings.IndexByte(auth[from:], ':'); c >= 0 {
			c += from
			if port := auth[c+1:]; port != "" && !allDigits(port) {
				rest = rest[:c+1] + "***" + rest[end:]
			}
		}
	}
	if q := strings.IndexByte(rest[tail:], '?'); q >= 0 {
		q += tail
		rest = rest[:q+1] + redactQuery(rest[q+1:])
	}
	return prefix + rest
}

// redactUserinfo hides the whole user information of a URL such as
// nats://token@host or nats://user:password@host: a NATS token sits where a
// user name would. It is applied to NATS_URL values.
func redactUserinfo(s string) string {
	prefix, rest := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		prefix, rest = s[:i+3], s[i+3:]
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		return prefix + "***" + rest[at:]
	}
	return RedactURI(s)
}

// redactQuery hides the values of password-like parameters in a query
// string (without its '?').
func redactQuery(q string) string {
	if q == "" {
		return q
	}
	parts := strings.Split(q, "&")
	changed := false
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if ok && IsSecretParam(k) {
			parts[i] = k + "=***"
			changed = true
		}
	}
	if !changed {
		return q
	}
	return strings.Join(parts, "&")
}

// IsSecretParam reports whether a URI query parameter of this name holds a
// secret whose value must be hidden: password, sslpassword, passwd, pwd,
// pass, and any name containing "password", "secret" or "token"
// (case-insensitive).
func IsSecretParam(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "pwd", "passwd", "pass":
		return true
	}
	return strings.Contains(n, "password") || strings.Contains(n, "secret") ||
		strings.Contains(n, "token")
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
