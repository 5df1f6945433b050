package binds

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/trackerd/trackerd/config"
)

// URI is a parsed SQLAlchemy-style database URL:
// dialect[+driver]://user:password@host:port/database?options.
//
// Its String, GoString, LogValue and MarshalText hide the password (and the
// values of password-like query options, see config.IsSecretParam); only
// Reveal shows it.
type URI struct {
	// Dialect is the lower-cased dialect: postgresql, postgres, mysql or
	// mariadb.
	Dialect string
	// Driver is the lower-cased part after "+", which trackerd ignores
	// ("psycopg2" in postgresql+psycopg2://); "" when absent.
	Driver string
	// User is the percent-decoded user name.
	User string
	// Password is the percent-decoded password.
	Password Secret
	// Host is the host name or address, IPv6 without its brackets, not
	// decoded; "" for the driver's default (a Unix socket, or the query's
	// host option).
	Host string
	// Port is the port; 0 means the dialect's default.
	Port int
	// Database is the database name, not decoded; may be "" (for MySQL:
	// every database).
	Database string
	// Query holds the options after "?", decoded as Python's parse_qsl
	// does ("+" is a space); a repeated key keeps every value in order.
	// nil when there are none.
	Query map[string][]string
}

// Secret is a password. It prints as "***" however it is formatted,
// logged or marshalled ("" when empty); Reveal gives the real value.
type Secret string

const hidden = "***"

func (s Secret) masked() string {
	if s == "" {
		return ""
	}
	return hidden
}

// String returns "***", or "" for an empty secret.
func (s Secret) String() string { return s.masked() }

// GoString returns "***", or "" for an empty secret, for %#v.
func (s Secret) GoString() string { return s.masked() }

// Format writes "***" (or "") for every verb; %q quotes it.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = f.Write([]byte(strconv.Quote(s.masked())))
		return
	}
	_, _ = f.Write([]byte(s.masked()))
}

// LogValue hides the secret from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.masked()) }

// MarshalJSON encodes the secret as "***".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.masked())), nil }

// MarshalText encodes the secret as ***.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.masked()), nil }

// Reveal returns the secret itself. Use it only to connect.
func (s Secret) Reveal() string { return string(s) }

// ErrUnsupportedDialect is wrapped by the URIError of a URI whose dialect
// trackerd cannot follow.
var ErrUnsupportedDialect = errors.New("unsupported dialect")

// URIError is a URI that does not parse or that trackerd cannot follow. Its
// message holds the URI with its password hidden and never the password,
// and it never wraps a *url.Error (which prints the raw URL).
type URIError struct {
	// Key names the setting the URI came from ("DATABASE_URI",
	// "BINDS.orders.uri"); "" when Parse was called directly.
	Key string
	// Source says where the setting came from ("env TRACKER_DATABASE_URI",
	// see config.Config.SourceOf); may be "".
	Source string
	// URI is the URI as given, redacted with config.RedactURI.
	URI string
	// Problem says what is wrong.
	Problem string
	// Hint says how to fix it; may be "".
	Hint string

	err error // a sentinel such as ErrUnsupportedDialect, or nil
}

// Error reads `binds: invalid URI "postgresql://u:***@h/db": <problem>; <hint>`,
// with the key and source after "binds: " when known:
// `binds: DATABASE_URI (env TRACKER_DATABASE_URI): invalid URI ...`.
func (e *URIError) Error() string {
	var b strings.Builder
	b.WriteString("binds: ")
	if e.Key != "" {
		b.WriteString(e.Key)
		if e.Source != "" {
			b.WriteString(" (")
			b.WriteString(e.Source)
			b.WriteString(")")
		}
		b.WriteString(": ")
	}
	b.WriteString("invalid URI ")
	b.WriteString(strconv.Quote(e.URI))
	b.WriteString(": ")
	b.WriteString(e.Problem)
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap returns the sentinel the error stands for, if any
// (ErrUnsupportedDialect).
func (e *URIError) Unwrap() error { return e.err }

// Kind returns the source kind the URI's dialect selects, or "" for a
// dialect trackerd does not follow (Parse refuses those).
func (u URI) Kind() Kind {
	switch u.Dialect {
	case "postgresql", "postgres":
		return Postgres
	case "mysql", "mariadb":
		return MySQL
	}
	return ""
}

// Parse parses a SQLAlchemy URL as SQLAlchemy 2.0's make_url does, and
// refuses dialects trackerd cannot follow. Errors are *URIError.
//
// The grammar, from sqlalchemy/engine/url.py:
//
//   - scheme [A-Za-z0-9_+]+ then "://": the dialect, and a driver after
//     "+"; both are lower-cased;
//   - optional user information ending at "@": the user name runs to the
//     first ':' or '/', the password from that ':' to the next '@' (so an
//     '@' in a password must be written %40, while ':' and '/' may stay
//     raw), both percent-decoded with "+" kept as "+"; without a password,
//     the user name ends at the last '@' before the first ':' or '/';
//   - host: "[IPv6]" or a run of characters other than '/', ':' and '?',
//     not decoded, possibly empty (a Unix socket);
//   - ":port": decimal, 1 to 65535 (empty means none);
//   - "/database" up to '?', not decoded;
//   - "?query" decoded as Python's parse_qsl: '&'-separated, "+" is a
//     space, pairs without a value are dropped, repeated keys kept.
//
// Where trackerd is stricter: control characters are refused anywhere; an
// '@' in the host (a password with a raw '@'), brackets or white space in a
// host, a database name ending in white space, and text after an IPv6
// host's ']' that is not a port, database or query are refused; white
// space around the whole URI is trimmed. And a raw '@' anywhere after a
// password is refused: "u:ab@c/dpw9@h/db" is, to SQLAlchemy, password
// "ab", host "c" and database "dpw9@h/db", but it is a password "ab@c/dpw9"
// whose '@' was not written %40, and accepting it would print that
// password's tail as the host and database in every message. Percent-decoding keeps bytes
// as they are (Python would turn invalid UTF-8 into U+FFFD), and a '%' not
// followed by two hex digits stays a literal '%', as in Python.
//
// Accepted dialects: postgresql and postgres (PostgreSQL), mysql and
// mariadb (MySQL/MariaDB). sqlite and any other dialect give a URIError
// wrapping ErrUnsupportedDialect.
func Parse(raw string) (URI, error) {
	s := strings.TrimSpace(raw)
	// Errors show the input through config.RedactURI, which hides from the
	// first ':' after "://" to the last '@': SQLAlchemy's password and more
	// (a password holding a raw '@' too).
	fail := func(problem, hint string) (URI, error) {
		return URI{}, &URIError{URI: config.RedactURI(s), Problem: problem, Hint: hint}
	}
	if s == "" {
		return fail("empty", "want dialect[+driver]://user:password@host:port/database")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return fail("contains a control character", "")
		}
	}

	// Scheme.
	n := 0
	for n < len(s) && isSchemeByte(s[n]) {
		n++
	}
	if n == 0 || !strings.HasPrefix(s[n:], "://") {
		return fail("no dialect://", "want dialect[+driver]://user:password@host:port/database, such as postgresql://user:password@localhost/app")
	}
	var u URI
	scheme := strings.ToLower(s[:n])
	u.Dialect, u.Driver, _ = strings.Cut(scheme, "+")
	if u.Dialect == "" || strings.HasSuffix(scheme, "+") {
		return fail(fmt.Sprintf("bad scheme %q", scheme), "want dialect or dialect+driver, such as postgresql+psycopg2")
	}
	if e := checkDialect(u.Dialect); e != nil {
		e.URI = config.RedactURI(s)
		return URI{}, e
	}
	rest := s[n+3:]

	// User information.
	k := strings.IndexAny(rest, ":/")
	if k < 0 {
		k = len(rest)
	}
	if k < len(rest) && rest[k] == ':' {
		if at := strings.IndexByte(rest[k+1:], '@'); at >= 0 {
			at += k + 1
			u.User = unquote(rest[:k])
			u.Password = Secret(unquote(rest[k+1 : at]))
			rest = rest[at+1:]
			k = -1
			if strings.ContainsRune(rest, '@') {
				// The error shows s through RedactURI, which hides
				// everything up to the last '@'.
				return fail("an '@' follows the password", "an '@' in the password must be written %40 (and one in a query value too)")
			}
		}
	}
	if k >= 0 {
		if at := strings.LastIndexByte(rest[:k], '@'); at >= 0 {
			u.User = unquote(rest[:at])
			rest = rest[at+1:]
		}
	}

	// Host.
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		rb := strings.LastIndexByte(rest[:end], ']')
		if rb < 2 {
			return fail("unclosed or empty [ ] in the host", "write an IPv6 address as [::1]")
		}
		u.Host = rest[1:rb]
		rest = rest[rb+1:]
	} else {
		end := strings.IndexAny(rest, "/:?")
		if end < 0 {
			end = len(rest)
		}
		u.Host = rest[:end]
		rest = rest[end:]
	}
	if strings.ContainsRune(u.Host, '@') {
		return fail("the host contains '@'", "an '@' in the password must be written %40")
	}
	if strings.ContainsAny(u.Host, "[]") {
		return fail("the host contains '[' or ']'", "write an IPv6 address as [::1]")
	}
	if strings.ContainsAny(u.Host, " \t") {
		return fail("the host contains white space", "")
	}

	// Port.
	if strings.HasPrefix(rest, ":") {
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		port := rest[1:end]
		rest = rest[end:]
		if port != "" {
			p, err := strconv.Atoi(port)
			switch {
			case err != nil || !isDigits(port):
				return fail("the port is not a number", "want :port with a port from 1 to 65535; an '@' in the password must be written %40")
			case p < 1 || p > 65535:
				return fail(fmt.Sprintf("port %d is out of range", p), "want 1 to 65535")
			}
			u.Port = p
		}
	}

	// Database and query.
	if strings.HasPrefix(rest, "/") {
		end := strings.IndexByte(rest, '?')
		if end < 0 {
			end = len(rest)
		}
		u.Database = rest[1:end]
		rest = rest[end:]
		if strings.TrimRight(u.Database, " \t") != u.Database {
			// Surrounding white space is trimmed from the whole URI, so
			// it could not survive a round trip.
			return fail("the database name ends with white space", "")
		}
	}
	if strings.HasPrefix(rest, "?") {
		u.Query = parseQuery(rest[1:])
		rest = ""
	}
	if rest != "" { // "[::1]x": SQLAlchemy would silently drop the x
		return fail("unexpected text after the host", "want host:port/database")
	}
	return u, nil
}

// checkDialect refuses dialects trackerd cannot follow.
func checkDialect(d string) *URIError {
	switch d {
	case "postgresql", "postgres", "mysql", "mariadb":
		return nil
	case "sqlite":
		return &URIError{Problem: "SQLite has no replication stream for trackerd to follow",
			Hint: "use a PostgreSQL or MySQL/MariaDB database", err: ErrUnsupportedDialect}
	}
	return &URIError{Problem: fmt.Sprintf("dialect %q is not supported", d),
		Hint: "want postgresql, postgres, mysql or mariadb (with any +driver)", err: ErrUnsupportedDialect}
}

func isSchemeByte(c byte) bool {
	return c == '_' || c == '+' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unquote percent-decodes as Python's urllib.parse.unquote: "+" stays "+",
// and a '%' not followed by two hex digits stays as it is.
func unquote(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b = append(b, hi<<4|lo)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// parseQuery decodes a query as Python's parse_qsl with its defaults.
func parseQuery(q string) map[string][]string {
	var m map[string][]string
	for pair := range strings.SplitSeq(q, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || v == "" {
			continue // no value: dropped (keep_blank_values=False)
		}
		k = unquote(strings.ReplaceAll(k, "+", " "))
		v = unquote(strings.ReplaceAll(v, "+", " "))
		if m == nil {
			m = make(map[string][]string)
		}
		m[k] = append(m[k], v)
	}
	return m
}

// quote percent-encodes every byte but the unreserved ones
// (A-Z a-z 0-9 - . _ ~); used for the user name and the password.
func quote(s string) string {
	return escape(s, false)
}

// quotePlus is Python's quote_plus: as quote, with a space as "+"; used for
// query keys and values.
func quotePlus(s string) string {
	return escape(s, true)
}

func escape(s string, plus bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		case c == ' ' && plus:
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// String renders the URI as SQLAlchemy's render_as_string(hide_password=True)
// does: the password as ***, query keys sorted, and the values of
// password-like query options as *** too.
func (u URI) String() string { return u.render(false) }

// GoString renders the URI for %#v, password hidden.
func (u URI) GoString() string { return "binds.URI(" + strconv.Quote(u.String()) + ")" }

// Reveal renders the URI with its password, percent-encoded, for building
// connections. Parse(u.Reveal()) gives u back.
func (u URI) Reveal() string { return u.render(true) }

// LogValue renders the URI for log/slog with its password hidden.
func (u URI) LogValue() slog.Value { return slog.StringValue(u.String()) }

// MarshalText renders the URI with its password hidden, so that JSON and
// other text encodings never carry it.
func (u URI) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// HostPort returns host:port for dialing, with IPv6 hosts in brackets and
// defaultPort when the URI has none: "[::1]:5432", "db:3306". With an empty
// host it returns ":port"; a Unix socket directory is in Query["host"].
func (u URI) HostPort(defaultPort int) string {
	p := u.Port
	if p == 0 {
		p = defaultPort
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(p))
}

func (u URI) render(reveal bool) string {
	var b strings.Builder
	b.WriteString(u.Dialect)
	if u.Driver != "" {
		b.WriteByte('+')
		b.WriteString(u.Driver)
	}
	b.WriteString("://")
	if u.User != "" || u.Password != "" {
		b.WriteString(quote(u.User))
		if u.Password != "" {
			b.WriteByte(':')
			if reveal {
				b.WriteString(quote(string(u.Password)))
			} else {
				b.WriteString(hidden)
			}
		}
		b.WriteByte('@')
	}
	if strings.ContainsRune(u.Host, ':') {
		b.WriteByte('[')
		b.WriteString(u.Host)
		b.WriteByte(']')
	} else {
		b.WriteString(u.Host)
	}
	if u.Port != 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(u.Port))
	}
	if u.Database != "" {
		b.WriteByte('/')
		b.WriteString(u.Database)
	}
	if len(u.Query) > 0 {
		b.WriteByte('?')
		keys := make([]string, 0, len(u.Query))
		for k := range u.Query {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		first := true
		for _, k := range keys {
			for _, v := range u.Query[k] {
				if !first {
					b.WriteByte('&')
				}
				first = false
				b.WriteString(quotePlus(k))
				b.WriteByte('=')
				if !reveal && config.IsSecretParam(k) {
					b.WriteString(hidden)
				} else {
					b.WriteString(quotePlus(v))
				}
			}
		}
	}
	return b.String()
}
