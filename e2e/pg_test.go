package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startPG starts `trackerd run` on bind b over the given tables and waits
// until it streams.
func startPG(t *testing.T, bs *bus, b *pgBind, extra map[string]string, tables ...string) *proc {
	t.Helper()
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, tables...)
	for k, v := range extra {
		env[k] = v
	}
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	return p
}

func TestPostgresChangesEndToEnd(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{
		"orders": "id int PRIMARY KEY, note text, amount numeric(12,2)",
		"items":  "id int PRIMARY KEY, order_id int, sku text",
	})
	p := startPG(t, bs, b, nil, "orders", "items")
	db := pgAdmin(t)
	o, i := fmt.Sprintf("%q.orders", b.schema), fmt.Sprintf("%q.items", b.schema)

	pgExec(t, db, "INSERT INTO "+o+" VALUES (1, 'first', 10.50)") // single-statement transaction
	pgExec(t, db, "BEGIN; INSERT INTO "+o+" VALUES (2, 'second', 2); INSERT INTO "+i+" VALUES (20, 2, 'sku-20'); UPDATE "+o+" SET note = 'changed' WHERE id = 1; COMMIT")
	pgExec(t, db, "BEGIN; INSERT INTO "+o+" VALUES (99, 'rolled back', 0); ROLLBACK") // yields nothing
	pgExec(t, db, "DELETE FROM "+o+" WHERE id = 2")
	pgExec(t, db, "TRUNCATE "+i)
	bs.waitCount(t, 12, 30*time.Second)
	time.Sleep(300 * time.Millisecond) // nothing more must arrive (the rollback)

	ms := bs.read(t)
	q := b.schema
	want := []string{
		"before_commit " + q + ".orders seq=0 insert id=1",
		"after_commit " + q + ".orders seq=0 total=1 insert id=1",
		"before_commit " + q + ".orders seq=0 insert id=2",
		"before_commit " + q + ".items seq=1 insert id=20",
		"before_commit " + q + ".orders seq=2 update id=1",
		"after_commit " + q + ".orders seq=0 total=3 insert id=2",
		"after_commit " + q + ".items seq=1 total=3 insert id=20",
		"after_commit " + q + ".orders seq=2 total=3 update id=1",
		"before_commit " + q + ".orders seq=0 delete key=2",
		"after_commit " + q + ".orders seq=0 total=1 delete key=2",
		"before_commit " + q + ".items seq=0 truncate",
		"after_commit " + q + ".items seq=0 total=1 truncate",
	}
	if got := summary(ms); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stream:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The contract's subjects, headers, ids and attributes.
	first := ms[0]
	if want := bs.prefix + ".before_commit.pg." + q + ".orders.insert"; first.Subject != want {
		t.Errorf("subject = %q, want %q", first.Subject, want)
	}
	for _, m := range ms {
		e := m.Event
		if ct := m.Header.Get("Content-Type"); ct != "application/cloudevents+json" {
			t.Errorf("Content-Type header = %q", ct)
		}
		if m.Header.Get("Nats-Msg-Id") != e.ID() {
			t.Errorf("Nats-Msg-Id %q != id %q", m.Header.Get("Nats-Msg-Id"), e.ID())
		}
		for k := range m.Header {
			if strings.HasPrefix(strings.ToLower(k), "ce-") {
				t.Errorf("message carries a %s header: structured mode must not", k)
			}
		}
		if e.SpecVersion() != "1.0" || !regexp.MustCompile(`^/trackerd/pg/[0-9a-f]{16}$`).MatchString(e.Source()) || e.DataContentType() != "application/json" {
			t.Errorf("event attributes: specversion %q source %q datacontenttype %q", e.SpecVersion(), e.Source(), e.DataContentType())
		}
		if !regexp.MustCompile(`^pg/[0-9a-f]{16}/lsn-[0-9A-F]{16}/\d+/(before|after)_commit$`).MatchString(e.ID()) {
			t.Errorf("id %q does not have the form <bind>/<origin>/lsn-<16 hex>/<index>/<phase>", e.ID())
		}
		if e.Time().IsZero() {
			t.Errorf("event %s has no time", e.ID())
		}
		for _, x := range []string{"trackerdop", "trackerdbind", "trackerdtxid", "trackerdtxseq", "trackerdpos"} {
			if ext(e, x) == "" {
				t.Errorf("event %s lacks extension %s", e.ID(), x)
			}
		}
		if m.Change.Source.Kind != "postgresql" || m.Change.Schema != q {
			t.Errorf("data source/schema: %+v", m.Change)
		}
	}
	// before_commit and after_commit of one change share txkey and seq but
	// not the id.
	if strings.TrimSuffix(ms[0].Event.ID(), "before_commit") != strings.TrimSuffix(ms[1].Event.ID(), "after_commit") {
		t.Errorf("phases of one change: ids %q and %q", ms[0].Event.ID(), ms[1].Event.ID())
	}
	if amt := string(ms[1].Change.After["amount"]); amt != `"10.50"` {
		t.Errorf("numeric amount = %s, want the exact string \"10.50\"", amt)
	}

	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
}

func TestPostgresValueMatrix(t *testing.T) {
	bs := newBus(t)
	db := pgAdmin(t)
	b := newPGBind(t, map[string]string{
		"v": `id int PRIMARY KEY, n numeric, big bigint, small int, f float8, j jsonb, bin bytea,
		      ts timestamptz, tsn timestamp, d date, txt text, arr int[], tarr text[], b bool, u uuid, iv interval, nul text`,
	})
	startPG(t, bs, b, nil, "v")
	tbl := fmt.Sprintf("%q.v", b.schema)
	// The writer's session is not in UTC: timestamps still come out in UTC.
	pgExec(t, db, "SET TIME ZONE 'Asia/Kolkata'")
	pgExec(t, db, "INSERT INTO "+tbl+` VALUES (1, 12345678901234567890.123456789, 9007199254740993, -7, 1.5,
		'{"a":[1,2,{"b":null}],"s":"é"}', '\xdeadbeef', '2026-01-02 08:34:56.789+05:30', '2026-01-02 03:04:05.5', '2026-01-02',
		'naïve café 日本 😀', '{1,NULL,3}', '{"x,y",NULL}', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 2 hours', NULL)`)
	pgExec(t, db, "INSERT INTO "+tbl+" (id, n, f) VALUES (2, 'NaN', 'Infinity')")
	bs.waitCount(t, 4, 30*time.Second)
	ms := bs.read(t)
	a := ms[1].Change.After
	want := map[string]string{
		"id": `1`, "n": `"12345678901234567890.123456789"`, "big": `"9007199254740993"`, "small": `-7`, "f": `1.5`,
		"bin": `"` + base64.StdEncoding.EncodeToString([]byte{0xde, 0xad, 0xbe, 0xef}) + `"`,
		"ts":  `"2026-01-02T03:04:56.789Z"`, "tsn": `"2026-01-02T03:04:05.5"`, "d": `"2026-01-02"`,
		"txt": `"naïve café 日本 😀"`, "arr": `[1,null,3]`, "tarr": `["x,y",null]`, "b": `true`,
		"u": `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, "nul": `null`,
	}
	for col, w := range want {
		if got := string(a[col]); got != w {
			t.Errorf("column %s = %s, want %s", col, got, w)
		}
	}
	var j map[string]any
	if err := json.Unmarshal(a["j"], &j); err != nil || j["s"] != "é" {
		t.Errorf("jsonb column = %s, want embedded JSON: %v", a["j"], err)
	}
	if iv := string(a["iv"]); !strings.Contains(iv, "P1DT2H") {
		t.Errorf("interval = %s, want ISO 8601 P1DT2H", iv)
	}
	b2 := ms[3].Change.After
	if string(b2["n"]) != `"NaN"` || string(b2["f"]) != `"Infinity"` {
		t.Errorf("NaN/Infinity = %s, %s; want strings", b2["n"], b2["f"])
	}
}

func TestPostgresEscapedSubjects(t *testing.T) {
	bs := newBus(t)
	db := pgAdmin(t)
	b := newPGBind(t, nil)
	weird := `or.ders *x> y`
	pgExec(t, db, fmt.Sprintf(`CREATE TABLE %q.%q (id int PRIMARY KEY)`, b.schema, weird))
	startPG(t, bs, b, nil, weird)
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.%q VALUES (1)`, b.schema, weird))
	bs.waitCount(t, 2, 30*time.Second)
	ms := bs.read(t)
	want := bs.prefix + ".before_commit.pg." + b.schema + ".or=2Eders=20=2Ax=3E=20y.insert"
	if ms[0].Subject != want {
		t.Fatalf("subject = %q, want %q", ms[0].Subject, want)
	}
	if ms[0].Event.Subject() != b.schema+"."+weird || ms[0].Change.Table != weird {
		t.Fatalf("CloudEvent subject %q / table %q, want the unescaped names", ms[0].Event.Subject(), ms[0].Change.Table)
	}
}
