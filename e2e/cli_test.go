package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pgURI returns the test server's URI with another user and password.
func pgURI(t testing.TB, user, password string) string {
	u, err := url.Parse(server(t, "TRACKERD_TEST_POSTGRES_URL"))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// pgRole creates a login role that must use its password (a member of
// trackerd_pwauth, see scripts/setup-servers.sh) and owns a fresh schema with
// table t.
func pgRole(t *testing.T, replication bool, password string) (role string, b *pgBind) {
	t.Helper()
	db := pgAdmin(t)
	role = uniq("e2e_role")
	attr := "NOREPLICATION"
	if replication {
		attr = "REPLICATION"
	}
	pgExec(t, db, fmt.Sprintf(`CREATE ROLE %q LOGIN %s PASSWORD '%s' IN ROLE trackerd_pwauth`, role, attr, password))
	pgExec(t, db, fmt.Sprintf(`GRANT CREATE ON DATABASE test TO %q`, role))
	b = newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, note text"})
	pgExec(t, db, fmt.Sprintf(`ALTER SCHEMA %q OWNER TO %q`, b.schema, role))
	pgExec(t, db, fmt.Sprintf(`ALTER TABLE %q.t OWNER TO %q`, b.schema, role))
	b.uri = pgURI(t, role, password)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, server(t, "TRACKERD_TEST_POSTGRES_URL"))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		// After the bind's own cleanup (registered earlier, run later):
		// drop what the role still owns, then the role.
		dropSlot(ctx, t, c, b.slot)
		c.Exec(ctx, fmt.Sprintf(`DROP PUBLICATION IF EXISTS %q`, b.pub))
		c.Exec(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %q CASCADE`, b.schema))
		c.Exec(ctx, fmt.Sprintf(`REVOKE CREATE ON DATABASE test FROM %q`, role))
		c.Exec(ctx, fmt.Sprintf(`DROP OWNED BY %q`, role))
		c.Exec(ctx, fmt.Sprintf(`DROP ROLE IF EXISTS %q`, role))
	})
	return role, b
}

func TestPasswordNeverLeaks(t *testing.T) {
	const password = "S3cr3t-P@ss/w:rd!Zq"
	bs := newBus(t)
	role, b := pgRole(t, true, password)
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	env["TRACKER_ECHO"] = "true"
	env["TRACKER_LOG_LEVEL"] = "debug"
	env["TRACKER_DEBUG"] = "true"
	p := start(t, env, "run")
	p.waitLog(`msg=streaming`, 60*time.Second)
	db := pgAdmin(t)
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.t VALUES (1, 'hello')`, b.schema))
	bs.waitCount(t, 2, 30*time.Second)

	// The check command and a failing start, too.
	chk := start(t, env, "check")
	chk.exitCode(60 * time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	bad := bs.env(t)
	wrongBind := *b
	wrongBind.uri = pgURI(t, role, "wrong-"+password)
	bad["TRACKER_BINDS"] = wrongBind.bindsJSON(t, "t")
	wrong := start(t, bad, "run")
	if code := wrong.exitCode(60 * time.Second); code != 2 {
		t.Errorf("wrong password: exit code %d, want 2", code)
	}
	if !strings.Contains(wrong.out.String(), "password") {
		t.Errorf("wrong password: the error does not say so:\n%s", wrong.out.String())
	}

	var all bytes.Buffer
	all.WriteString(p.out.String())
	all.WriteString(chk.out.String())
	all.WriteString(wrong.out.String())
	for _, m := range bs.read(t) {
		all.Write(m.Data)
		for k, v := range m.Header {
			all.WriteString(k + strings.Join(v, ","))
		}
	}
	for _, form := range []string{password, url.QueryEscape(password), url.PathEscape(password), "S3cr3t"} {
		if strings.Contains(all.String(), form) {
			t.Fatalf("the password (as %q) appears in trackerd's output or events", form)
		}
	}
}

func TestBadInput(t *testing.T) {
	pg := server(t, "TRACKERD_TEST_POSTGRES_URL")
	const deadPG = "postgresql://postgres@127.0.0.1:1/test"
	bs := newBus(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		code int
		want []string
	}{
		{"invalid URI", map[string]string{"TRACKER_DATABASE_URI": "postgresql://u:pw-hidden@host:notaport/db"}, 2, []string{"DATABASE_URI", "port"}},
		{"unknown dialect", map[string]string{"TRACKER_DATABASE_URI": "oracle://u@host/db"}, 2, []string{"oracle", "postgresql"}},
		{"sqlite", map[string]string{"TRACKER_DATABASE_URI": "sqlite:///app.db"}, 2, []string{"SQLite has no replication stream"}},
		{"no bind", map[string]string{}, 2, []string{"DATABASE_URI", "BINDS", "looked at flag --database-uri, --binds; env TRACKER_DATABASE_URI"}},
		// The next cases name a server that does not answer: were the
		// check gone, trackerd would exit 1 instead of following a real
		// database with a slot left behind.
		{"templates that let tables share a subject", map[string]string{"TRACKER_DATABASE_URI": deadPG,
			"TRACKER_NAMING_CONVENTION": `{"subject":"%(prefix)s.%(signal)s.%(schema)s%(table)s.%(op)s"}`}, 2,
			[]string{"NAMING_CONVENTION.subject", "%(schema)s and %(table)s are in one subject token side by side", "put a '.' between them"}},
		{"PostgreSQL URI without a database", map[string]string{"TRACKER_DATABASE_URI": strings.TrimSuffix(deadPG, "/test")}, 2,
			[]string{"DATABASE_URI", "names no database", "add /dbname"}},
		{"raw @ and / in a password", map[string]string{"TRACKER_DATABASE_URI": "postgresql://root:pw-hidden@c/pw-hidden@h.invalid/db"}, 2,
			[]string{`"postgresql://root:***@h.invalid/db"`, "%40"}},
		{"MAX_OVERFLOW below -1", map[string]string{"TRACKER_DATABASE_URI": deadPG, "TRACKER_MAX_OVERFLOW": "-2"}, 2, []string{"MAX_OVERFLOW", "-1 for no limit"}},
		{"DUPLICATE_WINDOW at the ack timeout", map[string]string{"TRACKER_DATABASE_URI": deadPG, "TRACKER_DUPLICATE_WINDOW": "5"}, 2,
			[]string{"DUPLICATE_WINDOW", "stores every re-send", "at least 30s"}},
		{"bad signal", map[string]string{"TRACKER_DATABASE_URI": pg, "TRACKER_SIGNALS": "on_commit"}, 2, []string{"SIGNALS", "on_commit", "before_commit"}},
		{"bad bool", map[string]string{"TRACKER_DATABASE_URI": pg, "SQLALCHEMY_TRACK_MODIFICATIONS": "maybe"}, 2, []string{"TRACK_MODIFICATIONS", "maybe"}},
		{"unknown template token", map[string]string{"TRACKER_DATABASE_URI": pg, "TRACKER_NAMING_CONVENTION": `{"subject":"%(prefix)s.%(colour)s"}`}, 2, []string{"colour"}},
		{"unreachable host", map[string]string{"TRACKER_DATABASE_URI": "postgresql://postgres@127.0.0.1:1/test"}, 1, []string{"127.0.0.1:1"}},
		{"unknown database", map[string]string{"TRACKER_DATABASE_URI": strings.Replace(pg, "/test", "/no_such_db_e2e", 1)}, 2, []string{"no_such_db_e2e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := bs.env(t)
			delete(env, "TRACKER_TRACK_MODIFICATIONS")
			if _, ok := tc.env["SQLALCHEMY_TRACK_MODIFICATIONS"]; !ok {
				env["TRACKER_TRACK_MODIFICATIONS"] = "true"
			}
			for k, v := range tc.env {
				env[k] = v
			}
			p := start(t, env, "run")
			if code := p.exitCode(60 * time.Second); code != tc.code {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tc.code, p.out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(p.out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, p.out.String())
				}
			}
			if strings.Contains(p.out.String(), "pw-hidden") {
				t.Errorf("a password appears in the output:\n%s", p.out.String())
			}
		})
	}
}

// TestFlaskApplicationConfig runs trackerd on a Flask application's own
// configuration (operator review rows 3, 10, 11 and 13): its config file,
// with keys of Flask's and its extensions, its FLASK_SQLALCHEMY_ variables,
// options for the default bind without moving its URI, and the NATS tools'
// bare NATS_URL.
func TestFlaskApplicationConfig(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	file := filepath.Join(t.TempDir(), "config.toml")
	toml := fmt.Sprintf("SECRET_KEY = %q\nMAIL_SERVER = %q\nSESSION_COOKIE_SECURE = true\nSQLALCHEMY_DATABASE_URI = %q\n",
		"dev-secret", "smtp.example.com", b.uri)
	if err := os.WriteFile(file, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := bs.env(t)
	env["NATS_URL"] = env["TRACKER_NATS_URL"]
	delete(env, "TRACKER_NATS_URL")
	delete(env, "TRACKER_TRACK_MODIFICATIONS")
	env["FLASK_SQLALCHEMY_TRACK_MODIFICATIONS"] = "true"
	defaultOptions, _ := json.Marshal(map[string]any{"default": map[string]any{
		"slot": b.slot, "publication": b.pub, "tables": []string{b.schema + ".t"}}})
	env["FLASK_SQLALCHEMY_BINDS"] = string(defaultOptions)
	env["TRACKER_LOG_LEVEL"] = "debug"
	p := start(t, env, "run", "--config", file)
	p.waitLog(`msg=streaming bind=default`, 60*time.Second)
	pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %q.t VALUES (1)`, b.schema))
	bs.waitCount(t, 2, 30*time.Second)
	out := p.out.String()
	if strings.Contains(out, "embedded NATS") || strings.Contains(out, "NATS_URL is not set") {
		t.Errorf("trackerd did not use NATS_URL:\n%s", out)
	}
	for _, k := range []string{"SECRET_KEY", "MAIL_SERVER", "SESSION_COOKIE_SECURE"} {
		if !strings.Contains(out, `msg="config file key skipped: not a trackerd key" key=`+k) {
			t.Errorf("no debug line for the skipped key %s:\n%s", k, out)
		}
	}
	for _, m := range bs.read(t) {
		if !strings.HasPrefix(m.Subject, bs.prefix+".") || !strings.Contains(m.Subject, ".default."+b.schema+".t.insert") {
			t.Errorf("subject %s", m.Subject)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestRoleWithoutReplication(t *testing.T) {
	bs := newBus(t)
	role, b := pgRole(t, false, "norepl-Pw-123")
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	p := start(t, env, "run")
	if code := p.exitCode(60 * time.Second); code != 2 {
		t.Fatalf("exit code %d, want 2:\n%s", code, p.out.String())
	}
	out := p.out.String()
	if !strings.Contains(out, "REPLICATION") || !strings.Contains(out, role) {
		t.Fatalf("the error does not name the role and the REPLICATION attribute:\n%s", out)
	}
}

func TestSecondInstanceIsFencedOut(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	first := start(t, env, "run")
	first.waitLog(`msg=streaming`, 60*time.Second)
	env2 := bs.env(t) // its own data dir, same bind, slot and bucket
	env2["TRACKER_BINDS"] = env["TRACKER_BINDS"]
	second := start(t, env2, "run")
	if code := second.exitCode(60 * time.Second); code != 1 {
		t.Fatalf("second instance: exit code %d, want 1:\n%s", code, second.out.String())
	}
	if !strings.Contains(second.out.String(), "in use") {
		t.Fatalf("second instance does not say the slot is in use:\n%s", second.out.String())
	}
	// The first keeps going.
	db := pgAdmin(t)
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.t VALUES (1)`, b.schema))
	bs.waitCount(t, 2, 30*time.Second)
}

func TestTableWithoutPrimaryKeyIsWarned(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"nopk": "a int, b text"})
	p := startPG(t, bs, b, nil, "nopk")
	out := p.out.String()
	if !strings.Contains(out, "nopk") || !strings.Contains(strings.ToLower(out), "primary key") {
		t.Fatalf("no warning about the table without a primary key:\n%s", out)
	}
	db := pgAdmin(t)
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.nopk VALUES (1, 'x')`, b.schema))
	bs.waitCount(t, 2, 30*time.Second)
}

func TestTrackModifications(t *testing.T) {
	pg := server(t, "TRACKERD_TEST_POSTGRES_URL")
	const warning = "TRACK_MODIFICATIONS is not set: trackerd is tracking every bind. Set it to true or false to suppress this warning."
	t.Run("false exits 0", func(t *testing.T) {
		bs := newBus(t)
		env := bs.env(t)
		env["TRACKER_DATABASE_URI"] = pg
		env["TRACKER_TRACK_MODIFICATIONS"] = "false"
		p := start(t, env, "run")
		if code := p.exitCode(30 * time.Second); code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
		if !strings.Contains(p.out.String(), "disabled") || strings.Contains(p.out.String(), warning) {
			t.Fatalf("output:\n%s", p.out.String())
		}
	})
	// Operator review row 12: a Flask app's own setting stops trackerd
	// loudly, saying where it came from and how to override it.
	t.Run("a Flask app's False warns", func(t *testing.T) {
		bs := newBus(t)
		env := bs.env(t)
		delete(env, "TRACKER_TRACK_MODIFICATIONS")
		env["SQLALCHEMY_DATABASE_URI"] = pg
		env["SQLALCHEMY_TRACK_MODIFICATIONS"] = "False"
		p := start(t, env, "run")
		if code := p.exitCode(30 * time.Second); code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
		for _, w := range []string{"level=WARN", "TRACK_MODIFICATIONS is false (env SQLALCHEMY_TRACK_MODIFICATIONS)", "set TRACKER_TRACK_MODIFICATIONS=true"} {
			if !strings.Contains(p.out.String(), w) {
				t.Errorf("output lacks %q:\n%s", w, p.out.String())
			}
		}
	})
	t.Run("unset warns once and tracks", func(t *testing.T) {
		bs := newBus(t)
		b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
		env := bs.env(t)
		delete(env, "TRACKER_TRACK_MODIFICATIONS")
		env["SQLALCHEMY_TRACK_MODIFICATIONS"] = "" // empty counts as unset
		env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
		p := start(t, env, "run")
		p.waitLog(`msg=streaming`, 60*time.Second)
		if n := strings.Count(p.out.String(), warning); n != 1 {
			t.Fatalf("warning appears %d times, want once:\n%s", n, p.out.String())
		}
		pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %q.t VALUES (1)`, b.schema))
		bs.waitCount(t, 2, 30*time.Second)
	})
}

func TestNATSOutage(t *testing.T) {
	ns := startNATS(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, payload text"})
	bs := &bus{url: ns.url(), stream: "OUTAGE", prefix: "outage", bucket: "outage_cp"}
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	p := start(t, env, "run")
	p.waitLog(`msg=streaming`, 60*time.Second)
	db := pgAdmin(t)
	write := func(from, to int) {
		t.Helper()
		pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.t SELECT g, repeat('x', 100) FROM generate_series(%d, %d) g`, b.schema, from, to))
	}
	connect := func() {
		nc, err := natsgo.Connect(ns.url())
		if err != nil {
			t.Fatal(err)
		}
		bs.nc = nc
		bs.js, _ = jetstream.New(nc)
	}
	connect()
	write(1, 1000)
	bs.waitCount(t, 2000, 30*time.Second)
	bs.nc.Close()

	ns.stop()
	for i := 0; i < 5; i++ { // writes go on while NATS is down
		write(1001+i*1000, 2000+i*1000)
	}
	time.Sleep(5 * time.Second)
	select {
	case <-p.done:
		t.Fatalf("trackerd exited while NATS was down:\n%s", p.out.String())
	default:
	}
	ns.start()
	connect()
	defer bs.nc.Close()
	bs.waitCount(t, 12000, 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, bs.read(t), 6000)
}

func TestEmbeddedNATSAndOversizedValue(t *testing.T) {
	b := newPGBind(t, map[string]string{"docs": "id int PRIMARY KEY, title text, body text"})
	data := t.TempDir()
	env := map[string]string{
		"TRACKER_BINDS":               b.bindsJSON(t, "docs"),
		"TRACKER_DATA_DIR":            data,
		"TRACKER_EMBEDDED_NATS_ADDR":  "127.0.0.1:0",
		"TRACKER_HTTP_ADDR":           "off",
		"TRACKER_TRACK_MODIFICATIONS": "true",
	}
	p := start(t, env, "run")
	p.waitLog(`msg=streaming`, 60*time.Second)
	raw, err := os.ReadFile(filepath.Join(data, "nats.url"))
	if err != nil {
		t.Fatalf("embedded server URL file: %v", err)
	}
	bs := &bus{url: strings.TrimSpace(string(raw)), stream: "TRACKERD", prefix: "trackerd"}
	nc, err := natsgo.Connect(bs.url, embeddedAuth(t, data))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bs.nc = nc
	bs.js, _ = jetstream.New(nc)

	// `trackerd tail` finds the embedded server through DATA_DIR.
	tail := start(t, map[string]string{"TRACKER_DATA_DIR": data, "TRACKER_DATABASE_URI": b.uri}, "tail", "-v", "-n", "2")
	tail.waitLog("trackerd tail: subscribed to ", 30*time.Second)

	db := pgAdmin(t)
	big := strings.Repeat("0123456789abcdef", 2<<20/16) // 2 MiB: over the default 1 MiB max_payload
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.docs VALUES (1, 'small title', $1)`, b.schema), big)
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.docs VALUES (2, 'next', 'fits')`, b.schema))
	bs.waitCount(t, 4, 30*time.Second)
	ms := bs.read(t)
	c := ms[0].Change
	if len(c.Truncated) != 1 || c.Truncated[0] != "body" {
		t.Fatalf("oversized event: truncated = %v, want [body]", c.Truncated)
	}
	if _, ok := c.After["body"]; ok || string(c.After["title"]) != `"small title"` {
		t.Fatalf("oversized event after = %v", c.After)
	}
	if string(ms[3].Change.After["body"]) != `"fits"` {
		t.Fatalf("the bind stalled after the oversized event: %v", summary(ms))
	}
	if code := tail.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("tail exit code %d:\n%s", code, tail.out.String())
	}
	events := 0
	for _, line := range tail.lines() {
		if strings.HasPrefix(line, "{") {
			events++
			if !strings.Contains(line, `"specversion":"1.0"`) {
				t.Fatalf("tail printed a line that is not a CloudEvent: %s", line)
			}
		}
	}
	if events != 2 {
		t.Fatalf("tail printed %d events, want 2:\n%s", events, tail.out.String())
	}
	// The README's quick start: `tail --from start` after the writes shows
	// what the stream holds.
	stored := start(t, map[string]string{"TRACKER_DATA_DIR": data, "TRACKER_DATABASE_URI": b.uri}, "tail", "--from", "start", "-n", "4")
	if code := stored.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("tail --from start exit code %d:\n%s", code, stored.out.String())
	}
	var ids []string
	for _, line := range stored.lines() {
		var ev struct{ ID string }
		if json.Unmarshal([]byte(line), &ev) == nil && ev.ID != "" {
			ids = append(ids, ev.ID)
		}
	}
	if len(ids) != 4 || ids[0] != ms[0].Event.ID() || ids[3] != ms[3].Event.ID() {
		t.Fatalf("tail --from start printed ids %v, want the stream's 4 events from %s", ids, ms[0].Event.ID())
	}
	p.signal(syscall.SIGINT)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGINT = %d", code)
	}
}

func TestVersionAndUsage(t *testing.T) {
	v := start(t, nil, "version")
	if code := v.exitCode(10 * time.Second); code != 0 || !strings.HasPrefix(v.out.String(), "trackerd ") {
		t.Fatalf("version: %d %q", code, v.out.String())
	}
	u := start(t, nil, "frobnicate")
	if code := u.exitCode(10 * time.Second); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
	r := start(t, nil, "run", "extra-arg")
	if code := r.exitCode(10 * time.Second); code != 2 {
		t.Fatalf("run with an argument: exit %d, want 2", code)
	}
}

var _ = io.Discard

func TestNATSUnreachableAtStart(t *testing.T) {
	port := freePort(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	bs := &bus{url: fmt.Sprintf("nats://127.0.0.1:%d", port), stream: "LATE", prefix: "late", bucket: "late_cp"}
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	p := start(t, env, "run")
	// trackerd starts, opens the bind (its slot exists from then on), and
	// waits for NATS.
	p.waitLog(`NATS is not reachable`, 30*time.Second)
	p.waitLog(`replication ready`, 30*time.Second)
	pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %q.t SELECT generate_series(1, 500)`, b.schema))
	time.Sleep(time.Second)
	select {
	case <-p.done:
		t.Fatalf("trackerd exited while NATS was missing:\n%s", p.out.String())
	default:
	}
	ns := &natsServer{t: t, port: port, dir: t.TempDir()}
	ns.start()
	t.Cleanup(ns.stop)
	nc, err := natsgo.Connect(ns.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bs.nc = nc
	bs.js, _ = jetstream.New(nc)
	bs.waitCount(t, 1000, time.Minute)
	time.Sleep(300 * time.Millisecond)
	checkExactlyOnceRows(t, bs.read(t), 500)
}
