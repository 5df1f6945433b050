package e2e

// The README's commands, run exactly as README.md writes them. Each is the
// code block after a `<!-- readme-command: NAME -->` line, as
// scripts/readme-command.sh prints it — the same extraction .ci/run uses for
// the test command, so what CI runs and what these tests run is what a
// reader copies.
//
//   run    the quick start's "Run trackerd" (scripts/try.sh)
//   write  the quick start's second terminal (psql insert, tail --from start)
//   test   "Run all tests"; .ci/run runs it, which is its test: running it
//          here would run the whole suite inside itself, so
//          TestREADMETestCommandIsCI checks that .ci/run runs it and only it.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// readmeCommand returns the README's command NAME, as
// scripts/readme-command.sh prints it.
func readmeCommand(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("bash", "../scripts/readme-command.sh", name).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("scripts/readme-command.sh %s: %v\n%s", name, err, stderr)
	}
	cmd := strings.TrimRight(string(out), "\n")
	if strings.TrimSpace(cmd) == "" {
		t.Fatalf("README.md's %q command is empty", name)
	}
	return cmd
}

// shell is a README command running as `bash -c`, in the repository's root,
// in a process group of its own, as a terminal runs what one types: Ctrl-C
// (interrupt) signals the whole group.
type shell struct {
	t    testing.TB
	what string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// readmeEnv is the environment of the README commands: this process's,
// without any TRACKER_, SQLALCHEMY_, FLASK_SQLALCHEMY_, NATS_ or PG variable
// (they would change what the commands do: trackerd reads the NATS tools'
// bare NATS_URL too), plus extra.
func readmeEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TRACKER_") || strings.HasPrefix(k, "SQLALCHEMY_") || strings.HasPrefix(k, "FLASK_SQLALCHEMY_") ||
			strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "PG") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// startShell runs script with bash in the repository's root, reading stdin.
func startShell(t testing.TB, what, script string, env []string, stdin string) *shell {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = ".."
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s := &shell{t: t, what: what, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", what, s.out.String())
		}
	})
	return s
}

// interrupt sends SIGINT to the command's process group, as Ctrl-C does.
func (s *shell) interrupt() { syscall.Kill(-s.cmd.Process.Pid, syscall.SIGINT) }

// exitCode waits at most d for the command to end and returns its status.
func (s *shell) exitCode(d time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(d):
		s.t.Fatalf("%s did not end within %v; output:\n%s", s.what, d, s.out.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

// waitFor waits until the output matches re.
func (s *shell) waitFor(re string, d time.Duration) {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for !rx.MatchString(s.out.String()) {
		select {
		case <-s.done:
			s.t.Fatalf("%s ended (exit %d) before printing %q; output:\n%s", s.what, s.cmd.ProcessState.ExitCode(), re, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not print %q within %v; output:\n%s", s.what, re, d, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestREADMETestCommandIsCI: CI runs the README's test command, extracted
// from README.md, and nothing else of its own, so the two cannot drift apart.
// Running that command is CI itself (.ci/run), not something a test inside
// it can do; this test checks the link.
func TestREADMETestCommandIsCI(t *testing.T) {
	cmd := readmeCommand(t, "test")
	for _, line := range strings.Split(cmd, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		st, err := os.Stat(filepath.Join("..", f[0]))
		if err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("README.md's test command runs %s, which is not an executable file of the repository (%v)", f[0], err)
		}
	}
	data, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var code []string
	for _, line := range strings.Split(string(data), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			code = append(code, l)
		}
	}
	src := strings.Join(code, "\n")
	if !strings.Contains(src, "scripts/readme-command.sh test") || !regexp.MustCompile(`(?m)^exec bash .*"\$cmd"$`).MatchString(src) {
		t.Errorf(".ci/run must run README.md's test command as scripts/readme-command.sh test prints it; it runs:\n%s", src)
	}
	// Whatever CI needs belongs in the README's command, not in .ci/run.
	for _, own := range []string{"setup-servers", "docker-engine", "test-images", "install-tools", "test.sh", "go test", "go vet"} {
		if strings.Contains(src, own) {
			t.Errorf(".ci/run runs %q itself: put it in the command README.md gives (%q), so that the README's and CI's cannot drift", own, cmd)
		}
	}
}

// TestSetupServersCheckAfterSetup: once scripts/setup-servers.sh has run (the
// README's test command runs it first), its --check finds nothing to change:
// the preparation is idempotent, and a second run (or scripts/test.sh as a
// user without root) restarts nothing and asks for no sudo. --check changes
// nothing itself.
func TestSetupServersCheckAfterSetup(t *testing.T) {
	u, err := url.Parse(server(t, "TRACKERD_TEST_POSTGRES_URL"))
	if err != nil || u.Host != "127.0.0.1:5432" {
		t.Skipf("TRACKERD_TEST_POSTGRES_URL is not this machine's server (127.0.0.1:5432), which scripts/setup-servers.sh prepares")
	}
	cmd := exec.Command("bash", "../scripts/setup-servers.sh", "--check")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing to change") {
		t.Fatalf("scripts/setup-servers.sh --check: %v (exit 3: changes left to make after the set-up)\n%s", err, out)
	}
}

// localCluster is a PostgreSQL cluster of this machine, made by
// pg_createcluster for one test and dropped after it, as a fresh machine
// has one: trust authentication on the loopback, wal_level replica (the
// default), and a database test.
type localCluster struct {
	version, name string
	port          int
}

func newLocalCluster(t *testing.T) *localCluster {
	t.Helper()
	if os.Getuid() != 0 {
		skipOrFail(t, "making and restarting a PostgreSQL cluster needs root")
	}
	for _, tool := range []string{"pg_createcluster", "pg_dropcluster", "pg_lsclusters", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "%s is not installed (Debian's postgresql-common): %v", tool, err)
		}
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(versions) == 0 {
		skipOrFail(t, "no PostgreSQL server in /usr/lib/postgresql")
	}
	sort.Strings(versions)
	c := &localCluster{version: filepath.Base(filepath.Dir(filepath.Dir(versions[len(versions)-1]))),
		name: uniq("readme"), port: freePort(t)}
	out, err := exec.Command("pg_createcluster", c.version, c.name, "-p", strconv.Itoa(c.port),
		"-o", "wal_level=replica", "-o", "fsync=off", "--start",
		"--", "--auth-local=trust", "--auth-host=trust").CombinedOutput()
	t.Cleanup(func() {
		if out, err := exec.Command("pg_dropcluster", "--stop", c.version, c.name).CombinedOutput(); err != nil {
			t.Errorf("pg_dropcluster %s %s: %v\n%s", c.version, c.name, err, out)
		}
		os.Remove(fmt.Sprintf("/var/log/postgresql/postgresql-%s-%s.log", c.version, c.name))
	})
	if err != nil {
		t.Fatalf("pg_createcluster: %v\n%s", err, out)
	}
	db := c.conn(t, "postgres")
	pgExec(t, db, "CREATE DATABASE test")
	return c
}

func (c *localCluster) conn(t *testing.T, db string) *pgx.Conn {
	t.Helper()
	var conn *pgx.Conn
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		conn, err = pgx.Connect(ctxT(t, 10*time.Second), fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db))
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("connect to cluster %s: %v", c.name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// query returns the first column of the first row of q as text.
func query(t *testing.T, conn *pgx.Conn, q string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctxT(t, 30*time.Second), q).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// TestREADMEQuickStart runs the quick start as README.md writes it, on a
// machine like the one it describes: a local PostgreSQL cluster with
// wal_level=replica. The run command must say what it changes and that it
// restarts the server, prepare it when answered "y", and start trackerd;
// the second terminal's commands must then show the insert; Ctrl-C stops
// trackerd with exit 0. Run again, it must change and restart nothing.
//
// The cluster is one the test makes (the machine's own is prepared already,
// and shared), so the commands get its address from the environment, as the
// README allows: TRACKER_DATABASE_URI for try.sh, PGPORT for psql. DATA_DIR,
// the embedded NATS address and the HTTP address go there too, so that the
// test runs beside anything else on the machine.
func TestREADMEQuickStart(t *testing.T) {
	run, write := readmeCommand(t, "run"), readmeCommand(t, "write")
	c := newLocalCluster(t)
	db := c.conn(t, "test")
	if got := query(t, db, "SHOW wal_level"); got != "replica" {
		t.Fatalf("the new cluster has wal_level %s, want replica", got)
	}
	env := readmeEnv(map[string]string{
		"TRACKER_DATABASE_URI":       fmt.Sprintf("postgresql://postgres@127.0.0.1:%d/test", c.port),
		"PGPORT":                     strconv.Itoa(c.port),
		"TRACKER_DATA_DIR":           t.TempDir(),
		"TRACKER_EMBEDDED_NATS_ADDR": "127.0.0.1:0",
		"TRACKER_HTTP_ADDR":          "127.0.0.1:0",
	})

	tracker := startShell(t, "README run command", run, env, "y\n")
	tracker.waitFor(`msg=streaming`, 3*time.Minute)
	said := tracker.out.String()
	for _, want := range []string{
		"wal_level = replica; trackerd needs logical",
		"ALTER SYSTEM SET wal_level = logical",
		fmt.Sprintf("pg_ctlcluster %s %s restart", c.version, c.name),
		"disconnected for a moment",
		"Proceed? [y/N]",
	} {
		if !strings.Contains(said, want) {
			t.Errorf("before changing the server, the run command did not say %q; it said:\n%s", want, said)
		}
	}
	db = c.conn(t, "test") // the restart closed the first connection
	if got := query(t, db, "SHOW wal_level"); got != "logical" {
		t.Fatalf("after the run command, wal_level is %s, want logical", got)
	}
	started := query(t, db, "SELECT pg_postmaster_start_time()::text")

	tail := startShell(t, "README second-terminal commands", write, env, "")
	eventually(t, 2*time.Minute, "tail --from start to print the insert of 'hello' into notes", func() bool {
		for _, line := range strings.Split(tail.out.String(), "\n") {
			var ev struct {
				Type string `json:"type"`
				Data struct {
					Op    string          `json:"op"`
					Table string          `json:"table"`
					After json.RawMessage `json:"after"`
				} `json:"data"`
			}
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Type == "trackerd.after_commit" &&
				ev.Data.Op == "insert" && ev.Data.Table == "notes" && strings.Contains(string(ev.Data.After), `"body":"hello"`) {
				return true
			}
		}
		return false
	})
	tail.interrupt()
	tail.exitCode(30 * time.Second)

	tracker.interrupt()
	if code := tracker.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("the run command exited %d after Ctrl-C, want 0; output:\n%s", code, tracker.out.String())
	}

	// Once prepared, the same command asks nothing and restarts nothing.
	again := startShell(t, "README run command, again", run, env, "")
	again.waitFor(`msg=streaming`, 3*time.Minute)
	if s := again.out.String(); strings.Contains(s, "Proceed?") || strings.Contains(s, "ALTER SYSTEM") {
		t.Errorf("run again on a prepared server, the command offered changes:\n%s", s)
	}
	if now := query(t, db, "SELECT pg_postmaster_start_time()::text"); now != started {
		t.Errorf("run again on a prepared server, the command restarted it (started %s, now %s)", started, now)
	}
	again.interrupt()
	if code := again.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("the second run exited %d after Ctrl-C, want 0", code)
	}
}

// TestREADMEQuickStartUnpreparedServer points the README's run command at a
// server it may not change — PostgreSQL with wal_level=replica in a
// container, answering on this machine's loopback — and answers "y" to any
// question: it must change nothing there, name what to ask the server's
// administrator for, and exit 1.
func TestREADMEQuickStartUnpreparedServer(t *testing.T) {
	run := readmeCommand(t, "run")
	p := startPGBox(t, "wal_level=replica")
	db := p.conn()
	state := func() string {
		return query(t, db, `SELECT concat_ws(' | ', current_setting('wal_level'), pg_postmaster_start_time()::text,
			(SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication),
			(SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database),
			(SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'))`)
	}
	before := state()
	if !strings.HasPrefix(before, "replica |") {
		t.Fatalf("the container's server is not unprepared: %s", before)
	}
	uri := fmt.Sprintf("postgresql://postgres:postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	env := readmeEnv(map[string]string{
		"TRACKER_DATABASE_URI":       uri,
		"TRACKER_DATA_DIR":           t.TempDir(),
		"TRACKER_EMBEDDED_NATS_ADDR": "127.0.0.1:0",
		"TRACKER_HTTP_ADDR":          "127.0.0.1:0",
	})
	sh := startShell(t, "README run command", run, env, "y\ny\n")
	code := sh.exitCode(3 * time.Minute)
	out := sh.out.String()
	if code != 1 {
		t.Errorf("the run command exited %d on a server it may not change, want 1", code)
	}
	for _, want := range []string{
		"FAIL  default      wal_level: wal_level is replica", // trackerd check's report
		"this script changes nothing there",
		"Ask the database's administrator for",
		"wal_level: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the run command did not say %q", want)
		}
	}
	for _, never := range []string{"Proceed?", "msg=streaming", ":postgres@"} {
		if strings.Contains(out, never) {
			t.Errorf("the run command printed %q on a server it may not change", never)
		}
	}
	if after := state(); after != before {
		t.Errorf("the server changed: before %s, after %s", before, after)
	}
	t.Logf("the run command said:\n%s", out)
}
