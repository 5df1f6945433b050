package binds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

type uriCase struct {
	name string
	raw  string
	want URI
	// For errors: a substring of the message, whether it is an
	// unsupported dialect, and text that must not appear in it.
	wantErr     string
	unsupported bool
	secret      string
}

func uriCases() []uriCase {
	return []uriCase{
		{name: "ok - postgresql with port", raw: "postgresql://scott:tiger@localhost:5432/mydatabase",
			want: URI{Dialect: "postgresql", User: "scott", Password: "tiger", Host: "localhost", Port: 5432, Database: "mydatabase"}},
		{name: "ok - psycopg2 with query", raw: "postgresql+psycopg2://scott:tiger@192.168.0.199:5432/test?sslmode=require",
			want: URI{Dialect: "postgresql", Driver: "psycopg2", User: "scott", Password: "tiger", Host: "192.168.0.199", Port: 5432, Database: "test",
				Query: map[string][]string{"sslmode": {"require"}}}},
		{name: "ok - unix socket, no host", raw: "postgresql+psycopg2://user:password@/dbname",
			want: URI{Dialect: "postgresql", Driver: "psycopg2", User: "user", Password: "password", Database: "dbname"}},
		{name: "ok - socket directory in query", raw: "postgresql://user@/dbname?host=/var/run/postgresql",
			want: URI{Dialect: "postgresql", User: "user", Database: "dbname", Query: map[string][]string{"host": {"/var/run/postgresql"}}}},
		{name: "ok - percent-encoded @ and /", raw: "postgresql+pg8000://dbuser:kx%40jj5%2Fg@pghost10/appdb",
			want: URI{Dialect: "postgresql", Driver: "pg8000", User: "dbuser", Password: "kx@jj5/g", Host: "pghost10", Database: "appdb"}},
		{name: "ok - raw : and / in password", raw: "postgresql://u:p:a/ss@h/db",
			want: URI{Dialect: "postgresql", User: "u", Password: "p:a/ss", Host: "h", Database: "db"}},
		{name: "ok - plus stays plus in password", raw: "postgresql://u:a+b%20c@h/db",
			want: URI{Dialect: "postgresql", User: "u", Password: "a+b c", Host: "h", Database: "db"}},
		{name: "ok - IPv6 with port", raw: "postgresql://u:p@[::1]:5432/db",
			want: URI{Dialect: "postgresql", User: "u", Password: "p", Host: "::1", Port: 5432, Database: "db"}},
		{name: "ok - IPv6 without port", raw: "postgresql://[fe80::1%25eth0]/db",
			want: URI{Dialect: "postgresql", Host: "fe80::1%25eth0", Database: "db"}},
		{name: "ok - no port", raw: "mysql://root@127.0.0.1/test",
			want: URI{Dialect: "mysql", User: "root", Host: "127.0.0.1", Database: "test"}},
		{name: "ok - pymysql", raw: "mysql+pymysql://scott:tiger@localhost/foo",
			want: URI{Dialect: "mysql", Driver: "pymysql", User: "scott", Password: "tiger", Host: "localhost", Database: "foo"}},
		{name: "ok - mariadbconnector", raw: "mariadb+mariadbconnector://u:p@h:3307/db",
			want: URI{Dialect: "mariadb", Driver: "mariadbconnector", User: "u", Password: "p", Host: "h", Port: 3307, Database: "db"}},
		{name: "ok - postgres alias", raw: "postgres://postgres@127.0.0.1:5432/test",
			want: URI{Dialect: "postgres", User: "postgres", Host: "127.0.0.1", Port: 5432, Database: "test"}},
		{name: "ok - empty password", raw: "postgresql://u:@h/db",
			want: URI{Dialect: "postgresql", User: "u", Host: "h", Database: "db"}},
		{name: "ok - no userinfo", raw: "postgresql://h/db",
			want: URI{Dialect: "postgresql", Host: "h", Database: "db"}},
		{name: "ok - repeated query keys in order", raw: "postgresql://h/db?alt_host=h2&alt_host=h1&x=1+2%2B3",
			want: URI{Dialect: "postgresql", Host: "h", Database: "db", Query: map[string][]string{"alt_host": {"h2", "h1"}, "x": {"1 2+3"}}}},
		{name: "ok - blank query values dropped", raw: "postgresql://h/db?a=&b&&c=1",
			want: URI{Dialect: "postgresql", Host: "h", Database: "db", Query: map[string][]string{"c": {"1"}}}},
		{name: "ok - upper-case scheme", raw: "PostgreSQL+Psycopg2://u:p@h/db",
			want: URI{Dialect: "postgresql", Driver: "psycopg2", User: "u", Password: "p", Host: "h", Database: "db"}},
		{name: "ok - @ in user name without password", raw: "mysql://a@b@h/db",
			want: URI{Dialect: "mysql", User: "a@b", Host: "h", Database: "db"}},
		{name: "ok - invalid escape kept", raw: "postgresql://u:100%@h/db",
			want: URI{Dialect: "postgresql", User: "u", Password: "100%", Host: "h", Database: "db"}},
		{name: "ok - MySQL without database", raw: "mysql://root@h",
			want: URI{Dialect: "mysql", User: "root", Host: "h"}},
		{name: "ok - empty port", raw: "postgresql://h:/db",
			want: URI{Dialect: "postgresql", Host: "h", Database: "db"}},
		{name: "ok - nothing after scheme", raw: "postgresql://",
			want: URI{Dialect: "postgresql"}},
		{name: "ok - surrounding space trimmed", raw: "  postgresql://h/db\n",
			want: URI{Dialect: "postgresql", Host: "h", Database: "db"}},
		{name: "ok - database not decoded", raw: "mysql://h/a%20b",
			want: URI{Dialect: "mysql", Host: "h", Database: "a%20b"}},

		{name: "error - empty", raw: "", wantErr: "empty"},
		{name: "error - garbage", raw: "not a uri", wantErr: "no dialect://"},
		{name: "error - one slash", raw: "postgresql:/u:secretpw@h/db", wantErr: "no dialect://", secret: "secretpw"},
		{name: "error - sqlite file", raw: "sqlite:///foo.db", unsupported: true, wantErr: "SQLite has no replication stream for trackerd to follow"},
		{name: "error - sqlite memory", raw: "sqlite://", unsupported: true, wantErr: "SQLite has no replication stream"},
		{name: "error - unknown dialect", raw: "oracle+cx_oracle://u:secretpw@h/db", unsupported: true,
			wantErr: "want postgresql, postgres, mysql or mariadb", secret: "secretpw"},
		{name: "error - port out of range", raw: "postgresql://u:secretpw@h:99999/db", wantErr: "port 99999 is out of range", secret: "secretpw"},
		{name: "error - port zero", raw: "postgresql://u:secretpw@h:0/db", wantErr: "port 0 is out of range", secret: "secretpw"},
		{name: "error - port not a number", raw: "postgresql://u:secretpw@h:54x2/db", wantErr: "port is not a number", secret: "secretpw"},
		{name: "error - raw @ in password", raw: "postgresql://u:se@cretpw@h/db", wantErr: "%40", secret: "cretpw"},
		{name: "error - password without host reads as port", raw: "postgresql://u:secretpw/db", wantErr: "port is not a number", secret: "secretpw"},
		{name: "error - control character", raw: "postgresql://u:secret\npw@h/db", wantErr: "control character", secret: "secret"},
		{name: "error - empty driver", raw: "postgresql+://h/db", wantErr: "bad scheme"},
		{name: "error - unclosed bracket", raw: "postgresql://u:secretpw@[::1/db", wantErr: "unclosed or empty [", secret: "secretpw"},
		{name: "error - empty brackets", raw: "postgresql://u:secretpw@[]/db", wantErr: "unclosed or empty [", secret: "secretpw"},
		{name: "error - text after IPv6 host", raw: "postgresql://u:secretpw@[::1]x/db", wantErr: "unexpected text after the host", secret: "secretpw"},
		{name: "error - bracket in host", raw: "postgresql://u:secretpw@a]b/db", wantErr: "'[' or ']'", secret: "secretpw"},
		// Fault review M1: a raw password "ab@c/dpw9" is, to SQLAlchemy,
		// password "ab", host "c" and database "dpw9@h/db".
		{name: "error - raw @ then / in password", raw: "postgresql://root:ab@c/dpw9@h/db", wantErr: "an '@' follows the password", secret: "dpw9"},
		{name: "error - raw @ then : in password", raw: "postgresql://root:ab@c:5432/dpw9@h/db", wantErr: "%40", secret: "dpw9"},
		{name: "error - raw @ then ? in password", raw: "mysql://root:ab@c?dpw9@h/db", wantErr: "%40", secret: "dpw9"},
		{name: "error - raw @ in a query value after a password", raw: "postgresql://u:secretpw@h/db?application_name=a@b", wantErr: "%40", secret: "secretpw"},
		{name: "ok - @ in the database without a password", raw: "postgresql://u@h/db@x",
			want: URI{Dialect: "postgresql", User: "u", Host: "h", Database: "db@x"}},
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range uriCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, err := Parse(tc.raw)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse(%q): %v", tc.raw, err)
				}
				if !reflect.DeepEqual(u, tc.want) {
					t.Fatalf("Parse(%q)\n got %#v\nwant %#v", tc.raw, fields(u), fields(tc.want))
				}
				back, err := Parse(u.Reveal())
				if err != nil || !reflect.DeepEqual(back, u) {
					t.Fatalf("round trip via %q: %#v, %v", u.Reveal(), fields(back), err)
				}
				return
			}
			var ue *URIError
			if !errors.As(err, &ue) {
				t.Fatalf("Parse(%q) = %v, want a *URIError", tc.raw, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not say %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "binds: invalid URI ") {
				t.Errorf("error %q does not start with binds: invalid URI", err)
			}
			if got := errors.Is(err, ErrUnsupportedDialect); got != tc.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupportedDialect) = %v, want %v", got, tc.unsupported)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q shows the password %q", err, tc.secret)
			}
		})
	}
}

// fields shows a URI with its password, for test failures.
func fields(u URI) string {
	return fmt.Sprintf("{%q %q %q pw=%q %q %d %q %v}", u.Dialect, u.Driver, u.User, string(u.Password), u.Host, u.Port, u.Database, u.Query)
}

func TestURIString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, raw, want string
	}{
		{"password hidden", "postgresql+psycopg2://scott:tiger@192.168.0.199:5432/test?sslmode=require",
			"postgresql+psycopg2://scott:***@192.168.0.199:5432/test?sslmode=require"},
		{"query keys sorted, repeats in order", "postgresql://h/db?b=2&a=1&a=0", "postgresql://h/db?a=1&a=0&b=2"},
		{"password query option hidden", "postgresql://u@h/db?sslmode=require&password=topsecret&sslpassword=alsosecret",
			"postgresql://u@h/db?password=***&sslmode=require&sslpassword=***"},
		{"IPv6 in brackets", "postgresql://u:p@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"},
		{"user encoded", "mysql://a%40b@h/db", "mysql://a%40b@h/db"},
		{"empty password", "postgresql://u:@h/db", "postgresql://u@h/db"},
		{"no userinfo", "mysql://h", "mysql://h"},
		{"space in query value", "postgresql://h/db?application_name=my+app", "postgresql://h/db?application_name=my+app"},
		{"driver lower-cased", "MySQL+PyMySQL://u:p@h/db", "mysql+pymysql://u:***@h/db"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, err := Parse(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestURIRevealEncodesPassword(t *testing.T) {
	t.Parallel()
	u := URI{Dialect: "postgresql", User: "us er", Password: "p@ss/w:rd%", Host: "h", Database: "db"}
	const want = "postgresql://us%20er:p%40ss%2Fw%3Ard%25@h/db"
	if got := u.Reveal(); got != want {
		t.Fatalf("Reveal() = %q, want %q", got, want)
	}
	back, err := Parse(want)
	if err != nil || !reflect.DeepEqual(back, u) {
		t.Fatalf("Parse(Reveal()) = %s, %v", fields(back), err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-topsecret"
	u, err := Parse("postgresql://user:" + pw + "@db.example:5432/app?password=" + pw)
	if err != nil {
		t.Fatal(err)
	}
	s := u.Password
	renderings := map[string]string{
		"%s":        fmt.Sprintf("%s", s),
		"%v":        fmt.Sprintf("%v", s),
		"%+v":       fmt.Sprintf("%+v", s),
		"%#v":       fmt.Sprintf("%#v", s),
		"%q":        fmt.Sprintf("%q", s),
		"%x":        fmt.Sprintf("%x", s),
		"%X":        fmt.Sprintf("%X", s),
		"%d":        fmt.Sprintf("%d", s),
		"%10s":      fmt.Sprintf("%10s", s),
		"Sprint":    fmt.Sprint(s),
		"uri %v":    fmt.Sprintf("%v", u),
		"uri %+v":   fmt.Sprintf("%+v", u),
		"uri %#v":   fmt.Sprintf("%#v", u),
		"uri %s":    fmt.Sprintf("%s", u),
		"uri %q":    fmt.Sprintf("%q", u),
		"ptr %+v":   fmt.Sprintf("%+v", &u),
		"bind %+v":  fmt.Sprintf("%+v", Bind{Key: "k", URI: u}),
		"bind %#v":  fmt.Sprintf("%#v", Bind{Key: "k", URI: u}),
		"String":    s.String(),
		"GoString":  s.GoString(),
		"uri.Query": u.String(),
	}
	for _, v := range []any{s, u, Bind{Key: "k", URI: u}, struct{ P Secret }{s}, map[string]any{"u": u}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		renderings[fmt.Sprintf("json %T", v)] = string(b)
	}
	for _, v := range []any{s, u, Bind{Key: "k", URI: u}} {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "v", v)
		renderings[fmt.Sprintf("slog json %T", v)] = buf.String()
		buf.Reset()
		slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "v", v)
		renderings[fmt.Sprintf("slog text %T", v)] = buf.String()
	}
	for name, r := range renderings {
		if strings.Contains(r, pw) || strings.Contains(r, "hunter2") {
			t.Errorf("%s shows the password: %s", name, r)
		}
	}
	if got := fmt.Sprintf("%s|%q|%v", s, s, s); got != `***|"***"|***` {
		t.Errorf("Secret formats as %s", got)
	}
	if s.Reveal() != pw {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
	var empty Secret
	if got := fmt.Sprintf("%s|%v|%q", empty, empty, empty); got != `||""` {
		t.Errorf("empty Secret formats as %s", got)
	}
	if b, _ := json.Marshal(empty); string(b) != `""` {
		t.Errorf("empty Secret marshals as %s", b)
	}
}

func TestHostPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw  string
		def  int
		want string
	}{
		{"postgresql://u@[::1]:5433/db", 5432, "[::1]:5433"},
		{"postgresql://u@[::1]/db", 5432, "[::1]:5432"},
		{"mysql://db.example/app", 3306, "db.example:3306"},
		{"postgresql://u@/db?host=/tmp", 5432, ":5432"},
	}
	for _, tc := range tests {
		u, err := Parse(tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.HostPort(tc.def); got != tc.want {
			t.Errorf("%s: HostPort(%d) = %q, want %q", tc.raw, tc.def, got, tc.want)
		}
	}
}

func TestURIErrorWithKey(t *testing.T) {
	t.Parallel()
	e := &URIError{Key: "BINDS.orders.uri", Source: "env TRACKER_BINDS", URI: "postgresql://u:***@h/db", Problem: "p", Hint: "h"}
	const want = `binds: BINDS.orders.uri (env TRACKER_BINDS): invalid URI "postgresql://u:***@h/db": p; h`
	if e.Error() != want {
		t.Fatalf("Error() = %q, want %q", e.Error(), want)
	}
}

// sqlalchemyURL is SQLAlchemy 2.0's URL pattern (engine/url.py, _parse_url)
// with \w spelled out as ASCII. Go's regexp picks submatches with the same
// leftmost-first preference as Python's, so it is an oracle for Parse.
var sqlalchemyURL = regexp.MustCompile(`^(?P<name>[A-Za-z0-9_+]+)://` +
	`(?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?` +
	`(?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?` +
	`(?:/(?P<database>[^\?]*))?` +
	`(?:\?(?P<query>.*))?`)

// FuzzParse checks, for any input: Parse never panics; errors are
// *URIError; when parsing succeeds, it agrees with SQLAlchemy's pattern,
// Parse(u.Reveal()) gives u back, and no rendering depends on the password
// (String, GoString, LogValue, JSON and fmt give the same text with another
// password); when it fails, the message does not change when the password
// changes. The last two are the exact form of "never shows the password":
// a literal search for the password text would flag a password such as
// "u:***" that the redacted rendering happens to contain.
func FuzzParse(f *testing.F) {
	for _, tc := range uriCases() {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := Parse(raw)
		s := strings.TrimSpace(raw)
		m := sqlalchemyURL.FindStringSubmatchIndex(s)
		if err != nil {
			var ue *URIError
			if !errors.As(err, &ue) {
				t.Fatalf("error %v (%T) is not a *URIError", err, err)
			}
			if m == nil || m[6] < 0 || m[7] == m[6] {
				return // no password to hide
			}
			if strings.ContainsFunc(s[m[6]:m[7]], func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return // replacing it would remove the control character, the error's cause
			}
			other := s[:m[6]] + strings.Repeat("Q", m[7]-m[6]) + s[m[7]:]
			_, err2 := Parse(other)
			if err2 != nil && err2.Error() != err.Error() {
				t.Fatalf("the error depends on the password:\n%v\n%v", err, err2)
			}
			return
		}

		if m == nil {
			t.Fatalf("Parse(%q) succeeded where SQLAlchemy's pattern does not match", s)
		}
		group := func(i int) (string, bool) {
			if m[2*i] < 0 {
				return "", false
			}
			return s[m[2*i]:m[2*i+1]], true
		}
		name, _ := group(1)
		user, _ := group(2)
		password, _ := group(3)
		host, ok := group(4)
		if !ok {
			host, _ = group(5)
		}
		port, _ := group(6)
		database, _ := group(7)
		if m[1] != len(s) {
			t.Fatalf("Parse(%q) succeeded, SQLAlchemy's pattern stops at %d", s, m[1])
		}
		want := URI{User: unquote(user), Password: Secret(unquote(password)), Host: host, Database: database}
		want.Dialect, want.Driver, _ = strings.Cut(strings.ToLower(name), "+")
		if port != "" {
			want.Port, _ = strconv.Atoi(port)
		}
		if q, ok := group(8); ok {
			want.Query = parseQuery(q)
		}
		if !reflect.DeepEqual(u, want) {
			t.Fatalf("Parse(%q)\n got %s\nwant %s (SQLAlchemy)", s, fields(u), fields(want))
		}

		back, err := Parse(u.Reveal())
		if err != nil || !reflect.DeepEqual(back, u) {
			t.Fatalf("round trip of %q via %q: %s, %v", s, u.Reveal(), fields(back), err)
		}

		if u.Password == "" {
			return
		}
		other := u
		other.Password = "Q"
		for _, r := range []struct{ name, a, b string }{
			{"String", u.String(), other.String()},
			{"GoString", u.GoString(), other.GoString()},
			{"LogValue", u.LogValue().String(), other.LogValue().String()},
			{"%+v", fmt.Sprintf("%+v", u), fmt.Sprintf("%+v", other)},
			{"%#v", fmt.Sprintf("%#v", u), fmt.Sprintf("%#v", other)},
			{"json", mustJSON(t, u), mustJSON(t, other)},
		} {
			if r.a != r.b {
				t.Fatalf("%s depends on the password: %q vs %q", r.name, r.a, r.b)
			}
		}
		if pw := string(u.Password); len(pw) >= 6 && !strings.Contains(other.String(), pw) && strings.Contains(u.String(), pw) {
			t.Fatalf("String() %q shows the password", u.String())
		}
	})
}

// FuzzParseUserinfo builds URIs from a user name, a password and the rest,
// percent-encoding the first two as a careful user would: the user and
// password must come back exactly, and no error or rendering may show the
// password (≥ 6 bytes and absent from the rest), raw or encoded.
func FuzzParseUserinfo(f *testing.F) {
	f.Add("scott", "tiger-tiger", "localhost:5432/db")
	f.Add("u", "p@ss/w:rd", "[::1]:99999/db")
	f.Add("", "secret?pass", "h:abc/db?password=x")
	f.Add("a@b", "kx@jj5/g", "h@x/db")
	f.Fuzz(func(t *testing.T, user, password, rest string) {
		raw := "postgresql://" + quote(user) + ":" + quote(password) + "@" + rest
		u, err := Parse(raw)
		if err == nil {
			if u.User != user || string(u.Password) != password {
				t.Fatalf("Parse(%q) gave user %q password %q", raw, u.User, string(u.Password))
			}
		}
		if len(password) < 6 || strings.Contains(rest, password) || strings.Contains(rest, quote(password)) ||
			strings.Contains(quote(user), password) || strings.Contains("postgresql://", password) {
			return
		}
		if err == nil && strings.Contains(fmt.Sprint(u.Query), password) {
			return // decoded query text is rendered again, re-encoded
		}
		// What the message shows of the rest (escaped by strconv.Quote, say)
		// may spell the password by accident: compare with the same input
		// under another password.
		otherRaw := "postgresql://" + quote(user) + ":" + strings.Repeat("Q", len(password)) + "@" + rest
		u2, err2 := Parse(otherRaw)
		var shown, shown2 []string
		if err != nil {
			if err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("the error depends on the password:\n%v\n%v", err, err2)
			}
			shown, shown2 = []string{err.Error()}, []string{err2.Error()}
		} else {
			shown = []string{u.String(), u.LogValue().String(), fmt.Sprintf("%#v", u)}
			shown2 = []string{u2.String(), u2.LogValue().String(), fmt.Sprintf("%#v", u2)}
		}
		for i, s := range shown {
			for _, p := range []string{password, quote(password)} {
				if strings.Contains(s, p) && !strings.Contains(shown2[i], p) {
					t.Fatalf("%q shows the password %q", s, password)
				}
			}
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRawAtPasswordNeverShown: the fault review's M1 example, whose error
// printed "c:5432/dpw9@h.invalid:5432/db", shows no part of the password.
func TestRawAtPasswordNeverShown(t *testing.T) {
	t.Parallel()
	_, err := Parse("postgresql://root:ab@c/dpw9@h.invalid/db")
	if err == nil {
		t.Fatal("Parse accepted a password with a raw '@' followed by '/'")
	}
	const want = `binds: invalid URI "postgresql://root:***@h.invalid/db": an '@' follows the password; an '@' in the password must be written %40 (and one in a query value too)`
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}
