package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	driver "github.com/go-sql-driver/mysql"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// defaultRecycle is the longest life of a query connection when the bind
// does not set POOL_RECYCLE: Flask-SQLAlchemy's 7200 s for MySQL, below the
// server's default 8 h wait_timeout.
const defaultRecycle = 7200 * time.Second

// connConfig is how to reach a bind's server, from its URI.
type connConfig struct {
	user     string
	password string
	// host and port for TCP; socket for a Unix socket (unix_socket=).
	host    string
	port    int
	socket  string
	db      string
	charset string
	tls     *tls.Config
	// ignored names query options trackerd does not use.
	ignored []string
}

// addr is host:port, or the socket path.
func (c *connConfig) addr() string {
	if c.socket != "" {
		return c.socket
	}
	return net.JoinHostPort(c.host, strconv.Itoa(c.port))
}

// where names the server in messages, without credentials.
func (c *connConfig) where() string {
	return c.user + "@" + c.addr()
}

// URI query options this package understands. Others (PyMySQL and
// mysqlclient options with no meaning for a replication client) are
// ignored, named in a debug log line.
func newConnConfig(u binds.URI) (*connConfig, error) {
	c := &connConfig{
		user:     u.User,
		password: string(u.Password),
		host:     u.Host,
		port:     u.Port,
		db:       u.Database,
		charset:  "utf8mb4",
	}
	if c.port == 0 {
		c.port = 3306
	}
	if c.user == "" {
		return nil, errors.New("the URI names no user")
	}
	get := func(k string) (string, bool) {
		v, ok := u.Query[k]
		if !ok || len(v) == 0 {
			return "", ok
		}
		return v[len(v)-1], true
	}
	if s, ok := get("unix_socket"); ok && s != "" {
		c.socket = s
	}
	if c.host == "" {
		if h, _ := get("host"); h != "" {
			c.host = h
		}
	}
	if c.host == "" && c.socket == "" {
		// No host: the client library's default, the local server's
		// socket where there is one.
		for _, p := range []string{"/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock"} {
			if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
				c.socket = p
				break
			}
		}
	}
	if c.host == "" {
		c.host = "localhost"
	}
	if s, ok := get("charset"); ok && s != "" {
		if !validIdent(s) {
			return nil, fmt.Errorf("charset %q is not a character set name", s)
		}
		c.charset = s
	}
	tlsCfg, err := tlsFromQuery(u, c.host)
	if err != nil {
		return nil, err
	}
	c.tls = tlsCfg
	known := []string{"unix_socket", "host", "charset", "ssl", "ssl_mode", "ssl-mode", "sslmode", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert", "ssl_verify_identity", "ssl_check_hostname"}
	for k := range u.Query {
		if !slices.Contains(known, k) {
			c.ignored = append(c.ignored, k)
		}
	}
	slices.Sort(c.ignored)
	return c, nil
}

func validIdent(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return s != ""
}

// tlsFromQuery builds a TLS configuration from the SQLAlchemy/PyMySQL and
// mysqlclient spellings: ssl_mode (DISABLED, PREFERRED, REQUIRED,
// VERIFY_CA, VERIFY_IDENTITY), ssl=true, ssl_ca, ssl_cert, ssl_key,
// ssl_verify_cert, ssl_verify_identity. No option: no TLS.
func tlsFromQuery(u binds.URI, host string) (*tls.Config, error) {
	q := func(k string) string {
		if v := u.Query[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	mode := strings.ToUpper(firstNonEmpty(q("ssl_mode"), q("ssl-mode"), q("sslmode")))
	ca, cert, key := q("ssl_ca"), q("ssl_cert"), q("ssl_key")
	verifyCert := parseBoolish(q("ssl_verify_cert"))
	verifyIdentity := parseBoolish(firstNonEmpty(q("ssl_verify_identity"), q("ssl_check_hostname")))
	switch mode {
	case "", "PREFERRED":
		// PREFERRED would need a fallback to plain text; trackerd uses TLS
		// only when asked to.
		if mode == "" && ca == "" && cert == "" && !parseBoolish(q("ssl")) {
			return nil, nil
		}
		if mode == "PREFERRED" && ca == "" && cert == "" {
			return nil, nil
		}
	case "DISABLED":
		return nil, nil
	case "REQUIRED", "REQUIRE":
	case "VERIFY_CA":
		verifyCert = true
	case "VERIFY_IDENTITY":
		verifyCert, verifyIdentity = true, true
	default:
		return nil, fmt.Errorf("ssl_mode %q: want DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY", mode)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("ssl_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ssl_ca %s: no PEM certificate", ca)
		}
		cfg.RootCAs = pool
		if q("ssl_verify_cert") == "" {
			verifyCert = true
		}
	}
	if cert != "" || key != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("ssl_cert/ssl_key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	switch {
	case verifyIdentity:
	case verifyCert:
		// Check the chain, not the host name.
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyChain(raw, roots)
		}
	default:
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

func verifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("server sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func parseBoolish(s string) bool {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on", "required":
		return true
	}
	return false
}

// openPool opens the bind's query pool (schema look-ups, checks, lag).
func openPool(c *connConfig, p binds.Pool, log *slog.Logger) (*sql.DB, error) {
	cfg := driver.NewConfig()
	cfg.User = c.user
	cfg.Passwd = c.password
	if c.socket != "" {
		cfg.Net = "unix"
	} else {
		cfg.Net = "tcp"
	}
	cfg.Addr = c.addr()
	cfg.DBName = c.db
	cfg.TLS = c.tls
	cfg.Timeout = 10 * time.Second
	cfg.ReadTimeout = 60 * time.Second
	cfg.WriteTimeout = 60 * time.Second
	cfg.Loc = time.UTC
	cfg.Logger = driverLogger{log}
	if err := cfg.Apply(driver.Charset(c.charset, "")); err != nil {
		return nil, err
	}
	conn, err := driver.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	if p.Size > 0 {
		db.SetMaxIdleConns(p.Size)
	}
	db.SetMaxOpenConns(p.MaxOpen()) // 0 (MAX_OVERFLOW -1): no limit
	recycle := p.Recycle
	if recycle <= 0 {
		recycle = defaultRecycle
	}
	db.SetConnMaxLifetime(recycle)
	return db, nil
}

// driverLogger sends go-sql-driver's messages to slog at debug level: it
// logs connection errors it also returns.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) {
	l.log.Debug("mysql driver: " + strings.TrimSpace(fmt.Sprint(v...)))
}

// Server error codes trackerd reacts to.
const (
	erDBAccessDenied     = 1044
	erAccessDenied       = 1045
	erBadDB              = 1049
	erSpecificAccess     = 1227
	erMasterFatalReading = 1236
	erAccessDeniedNoPass = 1698
	erTableAccessDenied  = 1142
)

// serverCode returns the server error code in err, 0 if none.
func serverCode(err error) int {
	var me *driver.MySQLError
	if errors.As(err, &me) {
		return int(me.Number)
	}
	var ge *gm.MyError
	if errors.As(err, &ge) {
		return int(ge.Code)
	}
	return 0
}

// serverMessage returns the server's error message in err, "" if none.
func serverMessage(err error) string {
	var me *driver.MySQLError
	if errors.As(err, &me) {
		return me.Message
	}
	var ge *gm.MyError
	if errors.As(err, &ge) {
		return ge.Message
	}
	return ""
}

// classifyConnect wraps an error from connecting or querying as a
// configuration error when retrying cannot fix it.
func classifyConnect(err error, c *connConfig) error {
	if tlsProblem(err) {
		return tracker.ConfigError(fmt.Errorf("TLS: the server's certificate is not trusted (check ssl_ca, and ssl_mode: VERIFY_IDENTITY also checks the host name): %w", err))
	}
	if errors.Is(err, driver.ErrNoTLS) {
		return tracker.ConfigError(fmt.Errorf("TLS: the URI asks for TLS (ssl_mode) but %s does not offer it: %w", c.addr(), err))
	}
	switch serverCode(err) {
	case erAccessDenied, erAccessDeniedNoPass:
		if c.tls == nil {
			return tracker.ConfigError(fmt.Errorf("authentication failed (wrong user or password, or a user that must connect over TLS: add ?ssl_mode=REQUIRED, or VERIFY_IDENTITY with ssl_ca): %w", err))
		}
		return tracker.ConfigError(fmt.Errorf("authentication failed (wrong user or password): %w", err))
	case erBadDB:
		return tracker.ConfigError(fmt.Errorf("database %q does not exist on %s: %w", c.db, c.addr(), err))
	case erDBAccessDenied, erSpecificAccess, erTableAccessDenied:
		return tracker.ConfigError(fmt.Errorf("missing privilege: %w", err))
	}
	return err
}

// tlsProblem reports an error verifying the server's certificate.
func tlsProblem(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// classifyStream sorts an error that ended a binlog stream: those a
// reconnect cannot fix (configuration, purged binlogs, a reader with our
// server_id, an event go-mysql cannot parse) come back marked permanent
// (srckit.IsPermanent) and reworded; others, worth a reconnect, as they are.
func classifyStream(err error, c *connConfig, serverID uint32) error {
	if err == nil {
		return nil
	}
	// What a reconnect cannot fix on any connection (credentials,
	// privileges, TLS) is classifyConnect's to name.
	if cerr := classifyConnect(err, c); errors.Is(cerr, tracker.ErrConfig) {
		return fmt.Errorf("binlog connection to %s: %w", c.where(), cerr)
	}
	msg := serverMessage(err)
	switch serverCode(err) {
	case erMasterFatalReading:
		lower := strings.ToLower(msg)
		if strings.Contains(lower, "same server_uuid/server_id") || strings.Contains(lower, "same server_id") {
			return fmt.Errorf("%w: another binlog reader with server_id %d connected to %s (%s); give each reader its own server_id", tracker.ErrFenced, serverID, c.addr(), msg)
		}
		if strings.Contains(lower, "max_allowed_packet") {
			return tracker.ConfigError(fmt.Errorf("binlog event larger than max_allowed_packet on %s; raise max_allowed_packet: %w", c.addr(), err))
		}
		return fmt.Errorf("%w: the server cannot send the binlog from the checkpoint (binlogs purged, or reset): %s", tracker.ErrResnapshotRequired, msg)
	}
	var ee *replication.EventError
	if errors.As(err, &ee) {
		return srckit.Permanent(fmt.Errorf("parse binlog event: %w", err))
	}
	if msg := err.Error(); strings.HasPrefix(msg, "panic ") {
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return srckit.Permanent(fmt.Errorf("binlog parser panicked: %s", msg))
	}
	return err
}

// withTimeout bounds a pool query by POOL_TIMEOUT (30 s by default).
func withTimeout(ctx context.Context, p binds.Pool) (context.Context, context.CancelFunc) {
	d := p.Timeout
	if d <= 0 {
		d = 30 * time.Second
	}
	return context.WithTimeout(ctx, d)
}
