package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// clearPGEnv keeps libpq environment variables out of a test.
func clearPGEnv(t *testing.T) {
	for _, k := range []string{"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGAPPNAME", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE", "PGCONNECT_TIMEOUT"} {
		t.Setenv(k, "")
	}
	t.Setenv("PGPASSFILE", "/nonexistent")
}

const secret = "s3cr3t-Pa55word:/@x"

func testBind(query map[string][]string) binds.Bind {
	return binds.Bind{
		Key: "orders", Kind: binds.Postgres, Slot: "trackerd_app_orders", Publication: "trackerd_app_orders",
		URI: binds.URI{Dialect: "postgresql", User: "app", Password: secret, Host: "db.example", Port: 6543,
			Database: "app", Query: query},
		Pool: binds.Pool{Size: 3, MaxOverflow: 4, Timeout: 7 * time.Second, Recycle: time.Hour},
	}
}

func TestConnSettings(t *testing.T) {
	clearPGEnv(t)
	cs, err := newConnSettings(testBind(map[string][]string{
		"sslmode":              {"disable"},
		"application_name":     {"orders-tracker"},
		"TimeZone":             {"Asia/Kolkata"},
		"client_encoding":      {"latin1"},
		"search_path":          {"a,b"},
		"replication":          {"false"},
		"pool_max_conns":       {"99"},
		"connect_timeout":      {"3"},
		"statement_timeout":    {"0"},
		"target_session_attrs": {"any"},
	}), map[string]string{"logical_decoding_work_mem": "64kB"})
	if err != nil {
		t.Fatal(err)
	}
	r, p := cs.repl, &cs.pool.ConnConfig.Config
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"host", r.Host, "db.example"},
		{"port", r.Port, uint16(6543)},
		{"user", r.User, "app"},
		{"database", r.Database, "app"},
		{"password", r.Password, secret},
		{"pool password", p.Password, secret},
		{"replication", r.RuntimeParams["replication"], "database"},
		{"pool is not replication", p.RuntimeParams["replication"], ""},
		{"application_name", r.RuntimeParams["application_name"], "orders-tracker"},
		{"TimeZone wins over the URI", r.RuntimeParams["TimeZone"], "UTC"},
		{"DateStyle", r.RuntimeParams["DateStyle"], "ISO"},
		{"IntervalStyle", p.RuntimeParams["IntervalStyle"], "iso_8601"},
		{"extra_float_digits", r.RuntimeParams["extra_float_digits"], "3"},
		{"bytea_output", r.RuntimeParams["bytea_output"], "hex"},
		{"client_encoding not passed", r.RuntimeParams["client_encoding"] == "latin1", false},
		{"search_path passed", r.RuntimeParams["search_path"], "a,b"},
		{"test params on replication only", r.RuntimeParams["logical_decoding_work_mem"] + p.RuntimeParams["logical_decoding_work_mem"], "64kB"},
		{"connect_timeout", r.ConnectTimeout, 3 * time.Second},
		{"max conns", cs.pool.MaxConns, int32(7)},
		{"recycle", cs.pool.MaxConnLifetime, time.Hour},
		{"where", cs.where, "db.example:6543/app"},
	} {
		if fmt.Sprint(tc.got) != fmt.Sprint(tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestConnSettingsPoolLimit: MAX_OVERFLOW -1 means no limit, as
// SQLAlchemy's max_overflow=-1 (fault review F13; it used to mean
// POOL_SIZE - 1).
func TestConnSettingsPoolLimit(t *testing.T) {
	clearPGEnv(t)
	for _, tc := range []struct {
		pool binds.Pool
		want int32
	}{
		{binds.Pool{Size: 5, MaxOverflow: 10}, 15},
		{binds.Pool{Size: 5, MaxOverflow: 0}, 5},
		{binds.Pool{Size: 0, MaxOverflow: 0}, 1},
		{binds.Pool{Size: 5, MaxOverflow: -1}, math.MaxInt32},
	} {
		b := testBind(nil)
		b.Pool = tc.pool
		cs, err := newConnSettings(b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cs.pool.MaxConns != tc.want {
			t.Errorf("pool %+v: MaxConns %d, want %d", tc.pool, cs.pool.MaxConns, tc.want)
		}
	}
}

func TestConnSettingsDefaults(t *testing.T) {
	clearPGEnv(t)
	b := testBind(map[string][]string{"host": {"/var/run/postgresql"}})
	b.URI.Host, b.URI.Port = "", 0
	b.URI.Password = ""
	b.Pool = binds.Pool{}
	cs, err := newConnSettings(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cs.repl.Host != "/var/run/postgresql" || cs.repl.Port != 5432 || cs.repl.Password != "" ||
		cs.repl.RuntimeParams["application_name"] != "trackerd" || cs.repl.ConnectTimeout != defaultConnectTimeout || cs.pool.MaxConns != 1 {
		t.Fatalf("host %q port %d app %q timeout %v max %d", cs.repl.Host, cs.repl.Port, cs.repl.RuntimeParams["application_name"], cs.repl.ConnectTimeout, cs.pool.MaxConns)
	}
	if cs.where != "socket /var/run/postgresql/app" {
		t.Fatalf("where %q", cs.where)
	}
}

func TestConnSettingsErrors(t *testing.T) {
	clearPGEnv(t)
	for _, tc := range []struct {
		name  string
		query map[string][]string
		want  string
	}{
		{"bad sslmode", map[string][]string{"sslmode": {"bogus"}, "sslpassword": {"key-" + secret}}, "sslmode"},
		{"bad option name", map[string][]string{"a b": {"1"}}, "not a connection option"},
		{"bad port option", map[string][]string{"port": {"x" + secret}}, "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newConnSettings(testBind(tc.query), nil)
			if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a configuration error about %s", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error holds a secret: %v", err)
			}
			var pce *pgconn.ParseConfigError
			if errors.As(err, &pce) {
				t.Fatal("the error wraps pgconn's ParseConfigError, which keeps the connection string")
			}
		})
	}
}

func TestSafe(t *testing.T) {
	cs := &connSettings{secrets: []string{secret}}
	err := cs.safe(tracker.ConfigError(fmt.Errorf("login with %s refused", secret)))
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "login with *** refused") || !errors.Is(err, tracker.ErrConfig) {
		t.Fatalf("safe = %v", err)
	}
	plain := errors.New("nothing secret")
	if cs.safe(plain) != plain {
		t.Fatal("safe changed an error without secrets")
	}
}

func pgErr(code, msg string) error {
	return &pgconn.PgError{Severity: "FATAL", Code: code, Message: msg}
}

func TestClassifyConnect(t *testing.T) {
	cs := &connSettings{user: "app", where: "db:5432/app", repl: &pgconn.Config{Database: "app"}}
	for _, tc := range []struct {
		name   string
		err    error
		config bool
		fix    string
	}{
		{"wrong password", pgErr("28P01", "password authentication failed"), true, "user and password"},
		{"pg_hba", pgErr("28000", "no pg_hba.conf entry"), true, "pg_hba.conf"},
		{"no database", pgErr("3D000", `database "app" does not exist`), true, "create the database"},
		{"no REPLICATION", pgErr("42501", "must be superuser or replication role to start walsender"), true, `ALTER ROLE "app" REPLICATION`},
		{"too many connections", pgErr("53300", "too many"), false, "max_wal_senders"},
		{"refused", errors.New("dial tcp: connection refused"), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := cs.classifyConnect(tc.err, true)
			if errors.Is(err, tracker.ErrConfig) != tc.config || !strings.Contains(err.Error(), tc.fix) {
				t.Fatalf("classify = %v (config %t), want config %t with %q", err, errors.Is(err, tracker.ErrConfig), tc.config, tc.fix)
			}
			if !strings.Contains(err.Error(), "db:5432/app") {
				t.Fatalf("%v does not say where", err)
			}
		})
	}
}

func TestClassifyStream(t *testing.T) {
	s := &Source{b: binds.Bind{Slot: "s1", Publication: "p1"}, cs: &connSettings{user: "app"}}
	for _, tc := range []struct {
		name      string
		err       error
		target    error
		permanent bool
		text      string
	}{
		{"slot in use", pgErr("55006", `replication slot "s1" is active for PID 4242`), tracker.ErrFenced, true, "in use by PID 4242"},
		{"slot dropped", pgErr("42704", `replication slot "s1" does not exist`), tracker.ErrResnapshotRequired, true, "no longer exists"},
		{"publication dropped", pgErr("42704", `publication "p1" does not exist`), tracker.ErrConfig, true, "recreate publication"},
		{"slot invalidated", pgErr("55000", `can no longer get changes from replication slot "s1"`), tracker.ErrResnapshotRequired, true, "invalidated"},
		{"wal_level", pgErr("55000", `logical decoding requires wal_level >= logical`), tracker.ErrConfig, true, "ALTER SYSTEM"},
		{"terminated", pgErr("57P01", "terminating connection due to administrator command"), nil, false, "57P01"},
		{"network", errors.New("read: connection reset by peer"), nil, false, "reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.classifyStream(tc.err)
			if tc.target != nil && !errors.Is(err, tc.target) || srckit.IsPermanent(err) != tc.permanent || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("classifyStream = %v (permanent %t)", err, srckit.IsPermanent(err))
			}
		})
	}
}

func TestCheckRole(t *testing.T) {
	for _, tc := range []struct {
		name string
		ri   roleInfo
		want string
	}{
		{"ok", roleInfo{walLevel: "logical", name: "app", replication: true}, ""},
		{"superuser", roleInfo{walLevel: "logical", name: "app", super: true}, ""},
		{"wal_level replica", roleInfo{walLevel: "replica", name: "app", super: true}, "ALTER SYSTEM SET wal_level = logical"},
		{"no replication", roleInfo{walLevel: "logical", name: "App"}, `ALTER ROLE "App" REPLICATION`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRole(tc.ri)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkRole = %v, want a configuration error with %q", err, tc.want)
			}
		})
	}
}

func TestCheckSlot(t *testing.T) {
	good := slotInfo{plugin: "pgoutput", slotType: "logical", database: "app", walStatus: "reserved"}
	for _, tc := range []struct {
		name   string
		mod    func(*slotInfo)
		target error
	}{
		{"ok", func(*slotInfo) {}, nil},
		{"other plugin", func(s *slotInfo) { s.plugin = "wal2json" }, tracker.ErrConfig},
		{"physical", func(s *slotInfo) { s.slotType, s.plugin = "physical", "" }, tracker.ErrConfig},
		{"other database", func(s *slotInfo) { s.database = "other" }, tracker.ErrConfig},
		{"lost", func(s *slotInfo) { s.walStatus = "lost" }, tracker.ErrResnapshotRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			si := good
			tc.mod(&si)
			err := checkSlot("s1", "app", si)
			if tc.target == nil && err != nil || tc.target != nil && !errors.Is(err, tc.target) {
				t.Fatalf("checkSlot = %v, want %v", err, tc.target)
			}
		})
	}
}

func TestPluginArgs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		major int
		b     binds.Bind
		want  string
	}{
		{"PostgreSQL 13", 13, binds.Bind{Publication: "pub"}, `proto_version '1', publication_names '"pub"'`},
		{"PostgreSQL 14", 14, binds.Bind{Publication: "pub"}, `proto_version '2', publication_names '"pub"', messages 'true'`},
		{"streaming 14", 14, binds.Bind{Publication: "pub", Streaming: true}, `proto_version '2', publication_names '"pub"', messages 'true', streaming 'on'`},
		{"PostgreSQL 15: two-phase", 15, binds.Bind{Publication: "pub"}, `proto_version '3', publication_names '"pub"', messages 'true', two_phase 'on'`},
		{"streaming 15", 15, binds.Bind{Publication: "pub", Streaming: true}, `proto_version '3', publication_names '"pub"', messages 'true', streaming 'on', two_phase 'on'`},
		{"quoting", 14, binds.Bind{Publication: `My"Pub's, x`}, `proto_version '2', publication_names '"My""Pub''s, x"', messages 'true'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Source{b: tc.b, major: tc.major, twoPhase: tc.major >= 15}
			if got := strings.Join(s.pluginArgs(tc.b.Streaming), ", "); got != tc.want {
				t.Fatalf("pluginArgs = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		slot string
		ok   bool
	}{
		{"trackerd_app_default", true}, {"a", true}, {strings.Repeat("a", 63), true},
		{"", false}, {strings.Repeat("a", 64), false}, {"Upper", false}, {"x; DROP", false}, {"a-b", false},
	} {
		if validSlotName(tc.slot) != tc.ok {
			t.Errorf("validSlotName(%q) = %t", tc.slot, !tc.ok)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"15.20 (Debian 15.20-0+deb12u1)", 15, true}, {"16beta1", 16, true}, {"9.6.24", 9, true}, {"x", 0, false},
	} {
		got, err := serverMajor(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("serverMajor(%q) = %d, %v", tc.in, got, err)
		}
	}
}

func TestAppendStatus(t *testing.T) {
	now := time.Date(2000, 1, 1, 0, 0, 1, 0, time.UTC)
	b := appendStatus(nil, 0x20, 0x10, now, true)
	if len(b) != 39 || b[0] != 'd' || binary.BigEndian.Uint32(b[1:]) != 38 || b[5] != 'r' {
		t.Fatalf("header % x", b[:6])
	}
	write, flush, apply := binary.BigEndian.Uint64(b[6:]), binary.BigEndian.Uint64(b[14:]), binary.BigEndian.Uint64(b[22:])
	clock := binary.BigEndian.Uint64(b[30:])
	if write != 0x20 || flush != 0x10 || apply != 0x10 || clock != 1e6 || b[38] != 1 {
		t.Fatalf("write %x flush %x apply %x clock %d reply %d", write, flush, apply, clock, b[38])
	}
}

func TestConfirmAndLag(t *testing.T) {
	s := &Source{}
	if lag := s.Lag(); lag.Bytes != -1 || lag.Behind != 0 {
		t.Fatalf("lag before anything: %+v", lag)
	}
	s.raiseConfirmed(0x100)
	s.serverEnd.Store(0x500)
	if lag := s.Lag(); lag.Bytes != 0x400 {
		t.Fatalf("lag: %+v", lag)
	}
	s.Confirm("0/200")
	s.Confirm("junk")
	s.Confirm("0/150") // behind: ignored
	if got := lsn(s.confirmed.Load()); got != 0x200 {
		t.Fatalf("confirmed %x", got)
	}
	// Behind is the tracker's to compute (tracker.Lag): the source leaves it 0.
	if lag := s.Lag(); lag.Bytes != 0x300 || lag.Behind != 0 {
		t.Fatalf("lag after confirming the first: %+v", lag)
	}
	s.Confirm("0/600")
	if lag := s.Lag(); lag.Bytes != 0 {
		t.Fatalf("lag after confirming past the server's end: %+v", lag)
	}
}
