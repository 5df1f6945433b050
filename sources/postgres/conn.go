package postgres

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// setSessionParams sets the run-time parameters of every connection,
// replication and query alike, so that values arrive in the text forms the
// decoder expects.
func setSessionParams(p map[string]string) {
	p["TimeZone"] = "UTC"
	p["DateStyle"] = "ISO"
	p["IntervalStyle"] = "iso_8601"
	p["extra_float_digits"] = "3"
	p["bytea_output"] = "hex"
}

// ownedParam reports whether a URI query option is one trackerd sets itself
// and so does not pass through.
func ownedParam(k string) bool {
	switch strings.ToLower(k) {
	case "replication", "password", "client_encoding", "timezone", "datestyle",
		"intervalstyle", "extra_float_digits", "bytea_output":
		return true
	}
	return strings.HasPrefix(k, "pool_")
}

var optionKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// connSettings are a bind's two connection configurations: the replication
// connection and the query pool.
type connSettings struct {
	repl    *pgconn.Config
	pool    *pgxpool.Config
	secrets []string // scrubbed from every error
	user    string
	where   string // host:port/database, for messages
}

// defaultConnectTimeout bounds a connection attempt when the URI sets no
// connect_timeout and the bind no pool timeout.
const defaultConnectTimeout = 30 * time.Second

// kvQuote quotes a value for a libpq keyword/value connection string.
func kvQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}

// newConnSettings builds the connection configurations of b from its URI
// fields. The password never enters a connection string: pgconn keeps the
// string it parses in its errors, so the password is set on the parsed
// config afterwards.
func newConnSettings(b binds.Bind, extra map[string]string) (*connSettings, error) {
	u := b.URI
	cs := &connSettings{user: u.User}
	password := string(u.Password)
	var parts []string
	if u.Host != "" {
		parts = append(parts, "host="+kvQuote(u.Host))
	}
	if u.Port != 0 {
		parts = append(parts, "port="+strconv.Itoa(u.Port))
	}
	if u.User != "" {
		parts = append(parts, "user="+kvQuote(u.User))
	}
	if u.Database != "" {
		parts = append(parts, "dbname="+kvQuote(u.Database))
	}
	keys := make([]string, 0, len(u.Query))
	for k := range u.Query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	appName := ""
	for _, k := range keys {
		vs := u.Query[k]
		if len(vs) == 0 {
			continue
		}
		v := vs[len(vs)-1]
		switch strings.ToLower(k) {
		case "password":
			if password == "" {
				password = v
			}
			continue
		case "sslpassword":
			cs.secrets = append(cs.secrets, v)
		case "application_name":
			appName = v
		}
		if ownedParam(k) {
			continue
		}
		if !optionKey.MatchString(k) {
			return nil, tracker.ConfigError(fmt.Errorf("URI option %q is not a connection option name", k))
		}
		parts = append(parts, k+"="+kvQuote(v))
	}
	if password != "" {
		cs.secrets = append(cs.secrets, password)
	}
	kv := strings.Join(parts, " ")

	repl, err := pgconn.ParseConfig(kv)
	if err != nil {
		// Not wrapped: a ParseConfigError keeps the connection string.
		return nil, tracker.ConfigError(fmt.Errorf("URI options: %s", cs.scrub(err.Error())))
	}
	pool, err := pgxpool.ParseConfig(kv)
	if err != nil {
		return nil, tracker.ConfigError(fmt.Errorf("URI options: %s", cs.scrub(err.Error())))
	}
	if appName == "" {
		appName = "trackerd"
	}
	timeout := b.Pool.Timeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	for _, c := range []*pgconn.Config{repl, &pool.ConnConfig.Config} {
		if password != "" {
			c.Password = password
		}
		if c.ConnectTimeout == 0 {
			c.ConnectTimeout = timeout
		}
		c.RuntimeParams["application_name"] = appName
		setSessionParams(c.RuntimeParams)
	}
	for k, v := range extra {
		repl.RuntimeParams[k] = v
	}
	repl.RuntimeParams["replication"] = "database"
	// Read the stream in large chunks: pgproto3 alone reads 8 KiB at a
	// time, a system call each.
	repl.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, readBufferSize), w)
	}
	// A cancelled command on the replication connection (a slot creation
	// that timed out) is cancelled on the server too, so it does not
	// finish creating the slot later.
	repl.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 5 * time.Second}
	}

	pool.MaxConns = math.MaxInt32 // MAX_OVERFLOW -1: no limit
	if n := b.Pool.MaxOpen(); n > 0 {
		pool.MaxConns = int32(min(n, math.MaxInt32))
	}
	pool.MinConns = 0
	if b.Pool.Recycle > 0 {
		pool.MaxConnLifetime = b.Pool.Recycle
	}

	host := repl.Host
	if strings.HasPrefix(host, "/") {
		host = "socket " + host
	} else {
		host = host + ":" + strconv.Itoa(int(repl.Port))
	}
	cs.where = host + "/" + repl.Database
	if cs.user == "" {
		cs.user = repl.User
	}
	cs.repl, cs.pool = repl, pool
	return cs, nil
}

// scrub replaces every secret in s with ***.
func (cs *connSettings) scrub(s string) string {
	for _, p := range cs.secrets {
		if p != "" {
			s = strings.ReplaceAll(s, p, "***")
		}
	}
	return s
}

// scrubbedError carries a message with the secrets taken out, and the
// classification of the error it replaces (but not that error itself).
type scrubbedError struct {
	msg  string
	kind []error
}

func (e *scrubbedError) Error() string   { return e.msg }
func (e *scrubbedError) Unwrap() []error { return e.kind }

// safe returns err unchanged unless its message contains a secret; then it
// returns an error with the secret replaced that still matches the
// sentinels err matched.
func (cs *connSettings) safe(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if clean := cs.scrub(msg); clean != msg {
		var kind []error
		for _, s := range []error{tracker.ErrConfig, tracker.ErrFenced, tracker.ErrResnapshotRequired, context.Canceled, context.DeadlineExceeded} {
			if errors.Is(err, s) {
				kind = append(kind, s)
			}
		}
		return &scrubbedError{msg: clean, kind: kind}
	}
	return err
}

// connectRepl opens a replication connection (replication=database).
func (cs *connSettings) connectRepl(ctx context.Context) (*pgconn.PgConn, error) {
	conn, err := pgconn.ConnectConfig(ctx, cs.repl)
	if err != nil {
		return nil, cs.safe(cs.classifyConnect(err, true))
	}
	return conn, nil
}

// classifyConnect turns a connection error into one that says what to do,
// matching tracker.ErrConfig when retrying cannot help. It drops pgconn's
// ConnectError, which holds the configuration (and so the password).
func (cs *connSettings) classifyConnect(err error, replication bool) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		if inner := ce.Unwrap(); inner != nil {
			err = inner
		}
	}
	err = fmt.Errorf("connect to %s as %q: %w", cs.where, cs.user, oneLine{err})
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err // refused, unreachable, timed out: transient
	}
	switch pe.Code {
	case "28P01":
		return tracker.ConfigError(fmt.Errorf("%w; fix: check the user and password in the bind's URI", err))
	case "28000":
		fix := "check the user name, and that pg_hba.conf allows this host, user and database"
		if replication {
			fix += " (a replication=database connection matches pg_hba.conf's database column, not the keyword replication)"
		}
		return tracker.ConfigError(fmt.Errorf("%w; fix: %s", err, fix))
	case "3D000":
		return tracker.ConfigError(fmt.Errorf("%w; fix: create the database or correct the URI", err))
	case "42501":
		if replication {
			return tracker.ConfigError(fmt.Errorf("%w; fix: ALTER ROLE %s REPLICATION;", err, quoteIdent(cs.user)))
		}
		return tracker.ConfigError(fmt.Errorf("%w; fix: GRANT CONNECT ON DATABASE %s TO %s;", err, quoteIdent(cs.repl.Database), quoteIdent(cs.user)))
	case "53300":
		return fmt.Errorf("%w (raise max_connections or max_wal_senders, or close other sessions)", err)
	}
	return err
}

// oneLine renders an error that joins one error per connection attempt (as
// pgconn does for several hosts or addresses) on one line, without repeats.
type oneLine struct{ err error }

func (e oneLine) Error() string {
	lines := strings.Split(e.err.Error(), "\n")
	out := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(out, l) && !strings.Contains(strings.Join(out, "; "), l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

func (e oneLine) Unwrap() error { return e.err }

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, "\x00", ""), `"`, `""`) + `"`
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, "\x00", ""), "'", "''") + "'"
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// validSlotName reports whether name may be used in replication commands,
// which pglogrepl builds without quoting.
func validSlotName(name string) bool { return slotNameRE.MatchString(name) }

var activePIDRE = regexp.MustCompile(`active for PID (\d+)`)

// fencedError says that another process streams from the slot.
func fencedError(slot string, pid int) error {
	who := "another process"
	if pid > 0 {
		who = "PID " + strconv.Itoa(pid)
	}
	return fmt.Errorf("replication slot %s is in use by %s: another trackerd is following this bind: %w", slot, who, tracker.ErrFenced)
}

// pidFromError extracts n from "replication slot x is active for PID n".
func pidFromError(err error) int {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if m := activePIDRE.FindStringSubmatch(pe.Message); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return 0
}

// serverMajor parses server_version ("15.4 (Debian ...)", "16beta1", "9.6.24")
// into its major version (9 for 9.x).
func serverMajor(v string) (int, error) {
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(v[:i])
	if err != nil {
		return 0, fmt.Errorf("server_version %q: no major version", v)
	}
	return n, nil
}
