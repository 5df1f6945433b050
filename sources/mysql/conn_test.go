package mysql

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	driver "github.com/go-sql-driver/mysql"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

func TestNewConnConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		uri     binds.URI
		addr    string
		socket  string
		charset string
		tls     bool
		ignored string
		err     string
	}{
		{name: "defaults", uri: binds.URI{User: "u", Host: "db"}, addr: "db:3306", charset: "utf8mb4"},
		{name: "port and charset", uri: binds.URI{User: "u", Host: "db", Port: 3307, Query: map[string][]string{"charset": {"latin1"}}}, addr: "db:3307", charset: "latin1"},
		{name: "socket", uri: binds.URI{User: "u", Query: map[string][]string{"unix_socket": {"/tmp/x.sock"}}}, addr: "/tmp/x.sock", socket: "/tmp/x.sock", charset: "utf8mb4"},
		{name: "host option", uri: binds.URI{User: "u", Query: map[string][]string{"host": {"h2"}}}, addr: "h2:3306", charset: "utf8mb4"},
		{name: "ipv6", uri: binds.URI{User: "u", Host: "::1"}, addr: "[::1]:3306", charset: "utf8mb4"},
		{name: "ssl required", uri: binds.URI{User: "u", Host: "db", Query: map[string][]string{"ssl_mode": {"REQUIRED"}}}, addr: "db:3306", charset: "utf8mb4", tls: true},
		{name: "ssl true", uri: binds.URI{User: "u", Host: "db", Query: map[string][]string{"ssl": {"true"}}}, addr: "db:3306", charset: "utf8mb4", tls: true},
		{name: "ssl disabled", uri: binds.URI{User: "u", Host: "db", Query: map[string][]string{"ssl_mode": {"DISABLED"}}}, addr: "db:3306", charset: "utf8mb4"},
		{name: "unknown options ignored", uri: binds.URI{User: "u", Host: "db", Query: map[string][]string{"connect_timeout": {"5"}, "autocommit": {"1"}}}, addr: "db:3306", charset: "utf8mb4", ignored: "autocommit,connect_timeout"},
		{name: "bad ssl mode", uri: binds.URI{User: "u", Host: "db", Query: map[string][]string{"ssl_mode": {"MAYBE"}}}, err: "ssl_mode"},
		{name: "missing ca", uri: binds.URI{User: "u", Host: "db", Query: map[string][]string{"ssl_ca": {"/nonexistent/ca.pem"}}}, err: "ssl_ca"},
		{name: "bad charset", uri: binds.URI{User: "u", Host: "db", Query: map[string][]string{"charset": {"utf8'; DROP"}}}, err: "charset"},
		{name: "no user", uri: binds.URI{Host: "db"}, err: "no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newConnConfig(tc.uri)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error about %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.addr() != tc.addr || c.socket != tc.socket || c.charset != tc.charset || (c.tls != nil) != tc.tls || strings.Join(c.ignored, ",") != tc.ignored {
				t.Errorf("got addr %s socket %q charset %s tls %v ignored %v", c.addr(), c.socket, c.charset, c.tls != nil, c.ignored)
			}
		})
	}
}

func TestClassifyStream(t *testing.T) {
	c := &connConfig{user: "u", host: "db", port: 3306}
	for _, tc := range []struct {
		name  string
		err   error
		fatal bool
		is    error
	}{
		{"purged", &driver.MySQLError{Number: 1236, Message: "Could not find first log file name in binary log index file"}, true, tracker.ErrResnapshotRequired},
		{"same server id", &driver.MySQLError{Number: 1236, Message: "A slave with the same server_uuid/server_id as this slave has connected to the master"}, true, tracker.ErrFenced},
		{"auth", &driver.MySQLError{Number: 1045, Message: "Access denied"}, true, tracker.ErrConfig},
		{"privilege", &driver.MySQLError{Number: 1227, Message: "Access denied; you need the REPLICATION SLAVE privilege"}, true, tracker.ErrConfig},
		{"lost connection", errors.New("connection was bad"), false, nil},
		{"killed", &driver.MySQLError{Number: 1927, Message: "Connection was killed"}, false, nil},
		{"parser panic", errors.New("panic runtime error\nstack: ..."), true, nil},
		{"untrusted certificate", fmt.Errorf("handshake: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true, tracker.ErrConfig},
		{"custom verification", fmt.Errorf("handshake: %w", x509.UnknownAuthorityError{}), true, tracker.ErrConfig},
		{"wrong host name", x509.HostnameError{Host: "db"}, true, tracker.ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyStream(tc.err, c, 7)
			if fatal := srckit.IsPermanent(err); fatal != tc.fatal {
				t.Errorf("fatal = %v, want %v (%v)", fatal, tc.fatal, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v does not match %v", err, tc.is)
			}
		})
	}
}

func TestClassifyConnect(t *testing.T) {
	plain := &connConfig{user: "u", host: "db", port: 3306}
	withTLS := &connConfig{user: "u", host: "db", port: 3306, tls: &tls.Config{}}
	denied := &driver.MySQLError{Number: 1045, Message: "Access denied for user 'u'@'10.0.0.1' (using password: YES)"}
	for _, tc := range []struct {
		name string
		c    *connConfig
		err  error
		want string // in the message; "" for an error left as it is
	}{
		{"denied without TLS", plain, denied, "must connect over TLS: add ?ssl_mode=REQUIRED"},
		{"denied over TLS", withTLS, denied, "wrong user or password)"},
		{"no TLS on the server", withTLS, driver.ErrNoTLS, "does not offer it"},
		{"untrusted certificate", withTLS, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "check ssl_ca"},
		{"unknown database", plain, &driver.MySQLError{Number: 1049, Message: "Unknown database"}, "does not exist"},
		{"network", plain, errors.New("dial tcp: connection refused"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyConnect(tc.err, tc.c)
			if tc.want == "" {
				if err != tc.err {
					t.Fatalf("got %v, want the error unchanged", err)
				}
				return
			}
			if !errors.Is(err, tracker.ErrConfig) || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a configuration error wrapping %v and saying %q", err, tc.err, tc.want)
			}
		})
	}
}

func TestPrerequisites(t *testing.T) {
	good := func() *serverInfo {
		return &serverInfo{
			version: "10.11.19-MariaDB", mariadb: true, serverID: 1, user: "trk@%",
			vars:  map[string]string{"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"},
			privs: privileges{global: map[string]bool{"REPLICATION SLAVE": true, "BINLOG MONITOR": true, "SELECT": true}},
		}
	}
	b := binds.Bind{ServerID: 99, URI: binds.URI{Dialect: "mysql", Database: "shop"}}
	failed := func(si *serverInfo, b binds.Bind) []string {
		var out []string
		for _, r := range prerequisites(si, b) {
			if !r.OK {
				if r.Fix == "" {
					t.Errorf("%s fails without a fix", r.Name)
				}
				out = append(out, r.Name)
			}
		}
		return out
	}
	if f := failed(good(), b); len(f) != 0 {
		t.Errorf("good server fails %v", f)
	}
	for _, tc := range []struct {
		name   string
		change func(*serverInfo, *binds.Bind)
		want   string
	}{
		{"statement format", func(si *serverInfo, _ *binds.Bind) { si.vars["binlog_format"] = "MIXED" }, "binlog_format"},
		{"no binlog", func(si *serverInfo, _ *binds.Bind) { si.vars["log_bin"] = "OFF" }, "log_bin"},
		{"minimal image", func(si *serverInfo, _ *binds.Bind) { si.vars["binlog_row_image"] = "MINIMAL" }, "binlog_row_image"},
		{"no replication", func(si *serverInfo, _ *binds.Bind) { delete(si.privs.global, "REPLICATION SLAVE") }, "REPLICATION SLAVE privilege"},
		{"no monitor", func(si *serverInfo, _ *binds.Bind) { delete(si.privs.global, "BINLOG MONITOR") }, "BINLOG MONITOR privilege"},
		{"no select", func(si *serverInfo, _ *binds.Bind) { delete(si.privs.global, "SELECT") }, "SELECT privilege"},
		{"mariadb URI at MySQL", func(si *serverInfo, b *binds.Bind) {
			si.mariadb = false
			si.version = "8.0.36"
			b.URI.Dialect = "mariadb"
		}, "server flavor"},
		{"own server id", func(si *serverInfo, b *binds.Bind) { b.ServerID = 1 }, "reader server_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			si, bb := good(), b
			tc.change(si, &bb)
			if f := failed(si, bb); len(f) != 1 || f[0] != tc.want {
				t.Errorf("failed %v, want [%s]", f, tc.want)
			}
		})
	}
	// binlog_row_metadata other than FULL is a warning, not a failure, and
	// a reader connected with the bind's server_id too: check's warn status,
	// never an ok line that says "warning" (operator review row 5).
	si := good()
	si.vars["binlog_row_metadata"] = "NO_LOG"
	si.replicas = []replica{{serverID: b.ServerID, host: "10.0.0.9"}}
	warned := map[string]bool{}
	for _, r := range prerequisites(si, b) {
		if strings.Contains(strings.ToLower(r.Detail), "warning") {
			t.Errorf("%s: the detail says warning: %+v", r.Name, r)
		}
		if r.Warn {
			warned[r.Name] = true
			if !r.OK || r.Fix == "" {
				t.Errorf("%s: a warning must hold and give advice: %+v", r.Name, r)
			}
		}
		if r.Name == "reader server_id" && !strings.HasPrefix(r.Detail, ReaderConnected) {
			t.Errorf("reader server_id: detail %q does not begin with ReaderConnected", r.Detail)
		}
	}
	if !warned["binlog_row_metadata"] || !warned["reader server_id"] {
		t.Errorf("warnings %v, want binlog_row_metadata and reader server_id", warned)
	}
	// A mysql:// URI at MariaDB is fine.
	si = good()
	if f := failed(si, binds.Bind{ServerID: 99, URI: binds.URI{Dialect: "mysql"}}); len(f) != 0 {
		t.Errorf("mysql:// at MariaDB fails %v", f)
	}
}

// TestOpenPoolLimits: POOL_SIZE + MAX_OVERFLOW bound the query pool, and
// MAX_OVERFLOW -1 means no limit, as SQLAlchemy's max_overflow=-1 (fault
// review F13; it used to mean no overflow at all).
func TestOpenPoolLimits(t *testing.T) {
	c, err := newConnConfig(binds.URI{User: "u", Host: "db.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pool binds.Pool
		want int // 0: no limit
	}{
		{binds.Pool{Size: 10, MaxOverflow: 10}, 20},
		{binds.Pool{Size: 3, MaxOverflow: 0}, 3},
		{binds.Pool{Size: 0, MaxOverflow: 4}, 4},
		{binds.Pool{Size: 3, MaxOverflow: -1}, 0},
	} {
		db, err := openPool(c, tc.pool, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if got := db.Stats().MaxOpenConnections; got != tc.want {
			t.Errorf("pool %+v: at most %d connections, want %d", tc.pool, got, tc.want)
		}
		db.Close()
	}
}
