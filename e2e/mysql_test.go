package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// myBind is a MySQL/MariaDB bind over databases of its own.
type myBind struct {
	key      string
	dbs      []string
	uri      string
	serverID uint32
}

// newMyBind creates n databases (each with the given tables) and returns a
// bind over them; cleanup drops them.
func newMyBind(t testing.TB, n int, tables map[string]string) *myBind {
	t.Helper()
	db := mysqlAdmin(t)
	b := &myBind{key: "my", serverID: 2_000_000 + rand.Uint32N(1_000_000_000)}
	for i := 0; i < n; i++ {
		name := uniq("e2e")
		b.dbs = append(b.dbs, name)
		myExec(t, db, fmt.Sprintf("CREATE DATABASE `%s`", name))
		for tb, cols := range tables {
			myExec(t, db, fmt.Sprintf("CREATE TABLE `%s`.`%s` (%s)", name, tb, cols))
		}
	}
	b.uri = strings.TrimSuffix(server(t, "TRACKERD_TEST_MYSQL_URL"), "/test") + "/" + b.dbs[0]
	t.Cleanup(func() {
		for _, name := range b.dbs {
			db.Exec("DROP DATABASE IF EXISTS `" + name + "`")
		}
	})
	return b
}

func (b *myBind) bindsJSON(tables ...string) string {
	var qualified []string
	for _, d := range b.dbs {
		for _, tb := range tables {
			qualified = append(qualified, d+"."+tb)
		}
	}
	data, _ := json.Marshal(map[string]any{b.key: map[string]any{"uri": b.uri, "tables": qualified, "server_id": b.serverID}})
	return string(data)
}

func startMy(t *testing.T, bs *bus, b *myBind, tables ...string) (*proc, map[string]string) {
	t.Helper()
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(tables...)
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	return p, env
}

func TestMariaDBChangesEndToEnd(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 2, map[string]string{"orders": "id INT PRIMARY KEY, note VARCHAR(50), amount DECIMAL(12,2)"})
	p, _ := startMy(t, bs, b, "orders")
	db := mysqlAdmin(t)
	d1, d2 := "`"+b.dbs[0]+"`.orders", "`"+b.dbs[1]+"`.orders"
	myExec(t, db, "INSERT INTO "+d1+" VALUES (1, 'first', 10.50)")
	tx := func(stmts ...string) {
		t.Helper()
		conn, err := db.Conn(ctxT(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, s := range stmts {
			if _, err := conn.ExecContext(ctxT(t, time.Minute), s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	tx("BEGIN", "INSERT INTO "+d1+" VALUES (2, 'second', 2)", "INSERT INTO "+d2+" VALUES (20, 'other db', 3)",
		"UPDATE "+d1+" SET note = 'changed' WHERE id = 1", "COMMIT")
	tx("BEGIN", "INSERT INTO "+d1+" VALUES (99, 'rolled back', 0)", "ROLLBACK")
	myExec(t, db, "DELETE FROM "+d1+" WHERE id = 2")
	bs.waitCount(t, 10, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	ms := bs.read(t)
	q1, q2 := b.dbs[0], b.dbs[1]
	want := []string{
		"before_commit " + q1 + ".orders seq=0 insert id=1",
		"after_commit " + q1 + ".orders seq=0 total=1 insert id=1",
		"before_commit " + q1 + ".orders seq=0 insert id=2",
		"before_commit " + q2 + ".orders seq=1 insert id=20",
		"before_commit " + q1 + ".orders seq=2 update id=1",
		"after_commit " + q1 + ".orders seq=0 total=3 insert id=2",
		"after_commit " + q2 + ".orders seq=1 total=3 insert id=20",
		"after_commit " + q1 + ".orders seq=2 total=3 update id=1",
		"before_commit " + q1 + ".orders seq=0 delete key=2",
		"after_commit " + q1 + ".orders seq=0 total=1 delete key=2",
	}
	if got := summary(ms); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stream:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, m := range ms {
		if !regexp.MustCompile(`^my/[0-9a-f]{16}/gtid-\d+-\d+-\d+/\d+/(before|after)_commit$`).MatchString(m.Event.ID()) {
			t.Errorf("id %q: want my/<origin>/gtid-<domain>-<server>-<seq>/<index>/<phase>", m.Event.ID())
		}
		if m.Change.Source.Kind != "mariadb" {
			t.Errorf("source kind %q, want mariadb", m.Change.Source.Kind)
		}
	}
	if want := bs.prefix + ".after_commit.my." + q2 + ".orders.insert"; ms[6].Subject != want {
		t.Errorf("subject %q, want %q", ms[6].Subject, want)
	}
	// The update carries the full before image.
	if string(ms[4].Change.Before["note"]) != `"first"` || string(ms[4].Change.After["note"]) != `"changed"` {
		t.Errorf("update images: before %v after %v", ms[4].Change.Before, ms[4].Change.After)
	}
	if string(ms[1].Change.After["amount"]) != `"10.50"` {
		t.Errorf("DECIMAL = %s, want \"10.50\"", ms[1].Change.After["amount"])
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestMariaDBValueMatrix(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"v": `id INT PRIMARY KEY, ub BIGINT UNSIGNED, d DECIMAL(65,30), dt DATETIME(6), ts TIMESTAMP(6) NULL,
		e ENUM('red','green'), s SET('a','b','c'), bits BIT(64), j JSON, l1 VARCHAR(20) CHARACTER SET latin1, emoji VARCHAR(20) CHARACTER SET utf8mb4,
		bin VARBINARY(8), f FLOAT, y YEAR, n INT NULL`})
	startMy(t, bs, b, "v")
	db := mysqlAdmin(t)
	myExec(t, db, "SET time_zone = '+05:30'")
	conn, err := db.Conn(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, s := range []string{"SET time_zone = '+05:30'", "INSERT INTO `" + b.dbs[0] + "`.v VALUES " + `(1, 18446744073709551615, '12345678901234567890123456789012345.123456789012345678901234567890',
		'2026-01-02 03:04:05.123456', '2026-01-02 08:34:56.789000', 'green', 'a,c', b'1010', '{"k":[1,2.5,"é"]}', 'café', '😀 ok', x'DEADBEEF', 1.1, 2026, NULL)`} {
		if _, err := conn.ExecContext(ctxT(t, time.Minute), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	bs.waitCount(t, 2, 30*time.Second)
	a := bs.read(t)[1].Change.After
	want := map[string]string{
		"ub": `"18446744073709551615"`, "d": `"12345678901234567890123456789012345.123456789012345678901234567890"`,
		"dt": `"2026-01-02T03:04:05.123456"`, "ts": `"2026-01-02T03:04:56.789Z"`, "e": `"green"`, "s": `["a","c"]`, "bits": `10`,
		"l1": `"café"`, "emoji": `"😀 ok"`, "bin": `"3q2+7w=="`, "f": `1.1`, "y": `2026`, "n": `null`,
	}
	for col, w := range want {
		if got := string(a[col]); got != w {
			t.Errorf("column %s = %s, want %s", col, got, w)
		}
	}
	var j map[string]any
	if err := json.Unmarshal(a["j"], &j); err != nil || fmt.Sprint(j["k"]) != "[1 2.5 é]" {
		t.Errorf("JSON column = %s (%v), want embedded JSON", a["j"], err)
	}
}

func TestMariaDBKill9ExactlyOnce(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(100)"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON("t")
	db := mysqlAdmin(t)
	tbl := "`" + b.dbs[0] + "`.t"
	kill9During20kTransactions(t, bs, env, func(from, to int) error {
		// Autocommit: each INSERT is a transaction of its own.
		var sb strings.Builder
		for j := from; j <= to; j++ {
			fmt.Fprintf(&sb, "INSERT INTO %s VALUES (%d, '%s');", tbl, j, strings.Repeat("x", 64))
		}
		_, err := db.ExecContext(context.Background(), sb.String())
		return err
	})
}

func TestMariaDBKillBinlogConnection(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(100)"})
	db := mysqlAdmin(t)
	// A reader user of its own, so that its binlog dump thread can be told
	// apart from other readers on the server.
	user, password := uniq("e2e_rd"), "Rd-pa55/w@rd:x"
	myExec(t, db, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, password))
	t.Cleanup(func() { db.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
	myExec(t, db, fmt.Sprintf("GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '%s'@'%%'", user))
	b.uri = strings.Replace(b.uri, "root@", user+":"+url.QueryEscape(password)+"@", 1)
	p, _ := startMy(t, bs, b, "t")

	tbl := "`" + b.dbs[0] + "`.t"
	n, kills := 3000, 0
	for i := 1; i <= n; i += 500 {
		myExec(t, db, fmt.Sprintf("INSERT INTO %s SELECT seq, 'x' FROM `%s`.seq_%d_to_%d", tbl, b.dbs[0], i, i+499))
		// Wait for the reader to be (back) on the binlog, then kill it.
		var id int64
		eventually(t, 30*time.Second, "the reader's binlog dump thread", func() bool {
			return db.QueryRowContext(ctxT(t, 10*time.Second),
				"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND LIKE 'Binlog Dump%'", user).Scan(&id) == nil
		})
		myExec(t, db, fmt.Sprintf("KILL %d", id))
		kills++
	}
	bs.waitCount(t, uint64(2*n), 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, bs.read(t), n)
	if strings.Contains(p.out.String(), password) || strings.Contains(p.out.String(), url.QueryEscape(password)) {
		t.Fatal("the reader's password appears in trackerd's output")
	}
	t.Logf("killed the binlog connection %d times", kills)
}

func TestMariaDBAlterTable(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, a VARCHAR(10)"})
	p, env := startMy(t, bs, b, "t")
	db := mysqlAdmin(t)
	tbl := "`" + b.dbs[0] + "`.t"
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (1, 'a1')")
	myExec(t, db, "ALTER TABLE "+tbl+" ADD COLUMN b INT")
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (2, 'a2', 22)")
	bs.waitCount(t, 4, 30*time.Second)
	p.signal(syscall.SIGTERM)
	p.exitCode(30 * time.Second)

	// While trackerd is stopped: rows on both sides of a DROP COLUMN.
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (3, 'a3', 33)")
	myExec(t, db, "ALTER TABLE "+tbl+" DROP COLUMN a")
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (4, 44)")
	p = start(t, env, "run")
	bs.waitCount(t, 8, 60*time.Second)
	ms := bs.read(t)
	got := map[string]string{}
	for _, m := range ms {
		if m.Event.Type() == "trackerd.after_commit" {
			cols, _ := json.Marshal(m.Change.After)
			got[string(m.Change.After["id"])] = string(cols)
		}
	}
	want := map[string]string{
		"1": `{"a":"a1","id":1}`,
		"2": `{"a":"a2","b":22,"id":2}`,
		"3": `{"a":"a3","b":33,"id":3}`,
		"4": `{"b":44,"id":4}`,
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("row %s = %s, want %s", id, got[id], w)
		}
	}
}

// An update that changes the primary key names the row it applied to by its
// old key, on both sources.
func TestPrimaryKeyUpdateKeepsOldKey(t *testing.T) {
	t.Run("postgresql", func(t *testing.T) {
		bs := newBus(t)
		b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, v text"})
		startPG(t, bs, b, nil, "t")
		db := pgAdmin(t)
		pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.t VALUES (1, 'a')`, b.schema))
		pgExec(t, db, fmt.Sprintf(`UPDATE %q.t SET id = 100 WHERE id = 1`, b.schema))
		bs.waitCount(t, 4, 30*time.Second)
		c := bs.read(t)[3].Change
		if c.Op != "update" || string(c.Key["id"]) != "1" || string(c.After["id"]) != "100" {
			t.Fatalf("update: op %s key %v after %v; want key id 1, after id 100", c.Op, c.Key, c.After)
		}
	})
	t.Run("mariadb", func(t *testing.T) {
		bs := newBus(t)
		b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, v VARCHAR(5)"})
		startMy(t, bs, b, "t")
		db := mysqlAdmin(t)
		myExec(t, db, "INSERT INTO `"+b.dbs[0]+"`.t VALUES (1, 'a')")
		myExec(t, db, "UPDATE `"+b.dbs[0]+"`.t SET id = 100 WHERE id = 1")
		bs.waitCount(t, 4, 30*time.Second)
		c := bs.read(t)[3].Change
		if c.Op != "update" || string(c.Key["id"]) != "1" || string(c.After["id"]) != "100" || string(c.Before["id"]) != "1" {
			t.Fatalf("update: op %s key %v before %v after %v; want key id 1, after id 100", c.Op, c.Key, c.Before, c.After)
		}
	})
}
