package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMariaDBOverTLS follows the binlog over TLS, as a bind against a
// managed MySQL (RDS, Cloud SQL) does: the reader is a user the server
// accepts over TLS only (REQUIRE SSL), so a streaming bind proves that both
// the query pool and the binlog connection are encrypted.
// TRACKERD_TEST_MYSQL_TLS_CA names the CA of the server's certificate
// (scripts/setup-servers.sh makes one and scripts/test.sh sets it).
func TestMariaDBOverTLS(t *testing.T) {
	ca := os.Getenv("TRACKERD_TEST_MYSQL_TLS_CA")
	if ca == "" {
		server(t, "TRACKERD_TEST_MYSQL_TLS_CA") // fails under CI, skips elsewhere
	}
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, note VARCHAR(50)"})
	db := mysqlAdmin(t)
	var haveSSL string
	if err := db.QueryRowContext(ctxT(t, time.Minute), "SELECT @@have_ssl").Scan(&haveSSL); err != nil {
		t.Fatal(err)
	}
	if haveSSL != "YES" {
		t.Fatalf("TRACKERD_TEST_MYSQL_TLS_CA is set but the server has have_ssl=%s: run scripts/setup-servers.sh", haveSSL)
	}
	user, password := uniq("e2e_tls"), "Tls-pa55/w@rd:x"
	myExec(t, db, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s' REQUIRE SSL", user, password))
	t.Cleanup(func() { db.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
	myExec(t, db, fmt.Sprintf("GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '%s'@'%%'", user))
	plain := strings.Replace(b.uri, "root@", user+":"+url.QueryEscape(password)+"@", 1)

	// run starts trackerd on the bind with the URI's query q and returns it
	// with its environment.
	run := func(q string) *proc {
		t.Helper()
		b.uri = plain + q
		env := bs.env(t)
		env["TRACKER_BINDS"] = b.bindsJSON("t")
		return start(t, env, "run")
	}
	refused := func(name, q, want string) {
		t.Helper()
		p := run(q)
		if code := p.exitCode(60 * time.Second); code != 2 {
			t.Fatalf("%s: exit code %d, want 2; output:\n%s", name, code, p.out.String())
		}
		if out := p.out.String(); !strings.Contains(out, want) || strings.Contains(out, password) || strings.Contains(out, url.QueryEscape(password)) {
			t.Fatalf("%s: want an error naming %q, without the password; output:\n%s", name, want, out)
		}
		t.Logf("%s: exit 2: %s", name, lastLine(p.out.String()))
	}

	// Without TLS the server refuses the user; the error says what to add.
	refused("no TLS", "", "ssl_mode")
	// A CA that did not sign the server's certificate: refused, naming the
	// certificate problem.
	refused("wrong CA", "?ssl_mode=VERIFY_CA&ssl_ca="+url.QueryEscape(otherCA(t)), "certificate")

	// The right CA, host name checked: the bind streams.
	p := run("?ssl_mode=VERIFY_IDENTITY&ssl_ca=" + url.QueryEscape(ca))
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	tbl := "`" + b.dbs[0] + "`.t"
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (1, 'over tls'), (2, 'two')")
	myExec(t, db, "UPDATE "+tbl+" SET note = 'changed' WHERE id = 1")
	myExec(t, db, "DELETE FROM "+tbl+" WHERE id = 2")
	bs.waitCount(t, 8, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	q := b.dbs[0]
	want := []string{
		"before_commit " + q + ".t seq=0 insert id=1",
		"before_commit " + q + ".t seq=1 insert id=2",
		"after_commit " + q + ".t seq=0 total=2 insert id=1",
		"after_commit " + q + ".t seq=1 total=2 insert id=2",
		"before_commit " + q + ".t seq=0 update id=1",
		"after_commit " + q + ".t seq=0 total=1 update id=1",
		"before_commit " + q + ".t seq=0 delete key=2",
		"after_commit " + q + ".t seq=0 total=1 delete key=2",
	}
	if got := summary(bs.read(t)); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stream:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The binlog connection is the TLS-only user's.
	var threads int
	if err := db.QueryRowContext(ctxT(t, time.Minute),
		"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND LIKE 'Binlog Dump%'", user).Scan(&threads); err != nil || threads != 1 {
		t.Fatalf("binlog dump threads of %s: %d (%v), want 1", user, threads, err)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if strings.Contains(p.out.String(), password) {
		t.Fatal("the reader's password appears in trackerd's output")
	}
}

// otherCA writes a CA certificate that signed nothing the server has and
// returns its file name.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the server's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
