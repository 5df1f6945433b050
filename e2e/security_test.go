package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// embeddedCreds reads the user and password trackerd keeps for its
// embedded NATS server in DATA_DIR/nats.auth.
func embeddedCreds(t testing.TB, data string) (user, password string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(data, "nats.auth"))
	if err != nil {
		t.Fatalf("the embedded NATS server's credentials: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "NATS_USER="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(line, "NATS_PASSWORD="); ok {
			password = v
		}
	}
	if user == "" || password == "" {
		t.Fatalf("%s lacks NATS_USER or NATS_PASSWORD", filepath.Join(data, "nats.auth"))
	}
	return user, password
}

// embeddedAuth is the nats.go option that logs in to the embedded server
// of the trackerd with DATA_DIR data.
func embeddedAuth(t testing.TB, data string) natsgo.Option {
	return natsgo.UserInfo(embeddedCreds(t, data))
}

// TestEmbeddedNATSCredentials is F9: the embedded NATS server requires the
// user and password trackerd generates on its first start and keeps, mode
// 0600, in DATA_DIR/nats.auth; later starts reuse them; `trackerd check`
// finds them through DATA_DIR; another local user can neither connect nor
// read them; the password is never logged.
func TestEmbeddedNATSCredentials(t *testing.T) {
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, secret_col text"})
	// A DATA_DIR other users may enter, so that only the files' own modes
	// keep them out.
	base, err := os.MkdirTemp("", "trackerd-e2e-auth-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	data := filepath.Join(base, "data")
	for _, d := range []string{base, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{
		"TRACKER_BINDS":               b.bindsJSON(t, "t"),
		"TRACKER_DATA_DIR":            data,
		"TRACKER_EMBEDDED_NATS_ADDR":  "127.0.0.1:0",
		"TRACKER_HTTP_ADDR":           "off",
		"TRACKER_TRACK_MODIFICATIONS": "true",
		"TRACKER_CHECKPOINT_INTERVAL": "50ms",
	}
	p := start(t, env, "run")
	p.waitLog(`msg=streaming`, 60*time.Second)

	for _, name := range []string{"nats.auth", "nats.url"} {
		if st, err := os.Stat(filepath.Join(data, name)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("DATA_DIR/%s: %v, want mode 0600 (%v)", name, modeOf(st), err)
		}
	}
	user, password := embeddedCreds(t, data)
	url := readURL(t, data)

	if nc, err := natsgo.Connect(url); err == nil {
		nc.Close()
		t.Fatal("connected to the embedded server without credentials")
	} else if !errors.Is(err, natsgo.ErrAuthorization) {
		t.Fatalf("without credentials: %v, want an authorization violation", err)
	}
	nc, err := natsgo.Connect(url, natsgo.UserInfo(user, password))
	if err != nil {
		t.Fatalf("with the credentials of nats.auth: %v", err)
	}
	defer nc.Close()
	bs := &bus{url: url, stream: "TRACKERD", prefix: "trackerd", nc: nc}
	bs.js, _ = jetstream.New(nc)
	pgExec(t, pgAdmin(t), `INSERT INTO "`+b.schema+`".t VALUES (1, 'secretval')`)
	bs.waitCount(t, 2, 30*time.Second)

	t.Run("another local user", func(t *testing.T) { otherUserRefused(t, base, data, url) })

	// `trackerd check` reads the checkpoints with the credentials it finds
	// in DATA_DIR.
	chk := start(t, map[string]string{"TRACKER_DATA_DIR": data, "TRACKER_BINDS": env["TRACKER_BINDS"], "TRACKER_TRACK_MODIFICATIONS": "true"}, "check")
	chk.exitCode(2 * time.Minute)
	if out := chk.out.String(); !regexp.MustCompile(`(?m)^ok\s+nats\s+embedded NATS: .*a running trackerd serves`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ok\s+nats\s+checkpoint of pg`).MatchString(out) || regexp.MustCompile(`(?m)^FAIL\s+nats`).MatchString(out) {
		t.Errorf("trackerd check did not read the checkpoints from the embedded server:\n%s", out)
	}

	// Later starts use the same credentials.
	nc.Close()
	p.signal(syscall.SIGINT)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGINT = %d", code)
	}
	p2 := start(t, env, "run")
	p2.waitLog(`msg=streaming`, 60*time.Second)
	if u, pw := embeddedCreds(t, data); u != user || pw != password {
		t.Fatal("the second start made new credentials")
	}
	url2 := readURL(t, data)
	if nc, err := natsgo.Connect(url2); err == nil || !errors.Is(err, natsgo.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("second start, without credentials: %v, want an authorization violation", err)
	}
	nc2, err := natsgo.Connect(url2, natsgo.UserInfo(user, password))
	if err != nil {
		t.Fatalf("second start, with the same credentials: %v", err)
	}
	nc2.Close()
	for what, out := range map[string]string{"first run": p.out.String(), "second run": p2.out.String(), "check": chk.out.String()} {
		if strings.Contains(out, password) {
			t.Errorf("the %s logged the embedded server's password", what)
		}
	}
}

func readURL(t testing.TB, data string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(data, "nats.url"))
	if err != nil {
		t.Fatalf("the embedded server's URL: %v", err)
	}
	return strings.TrimSpace(string(raw))
}

func modeOf(st os.FileInfo) string {
	if st == nil {
		return "missing"
	}
	return "mode " + strconv.FormatUint(uint64(st.Mode().Perm()), 8)
}

// otherUserRefused runs NATS clients as the user nobody against the
// embedded server at url and checks that it refuses them and that they
// cannot read DATA_DIR's credentials or URL.
func otherUserRefused(t *testing.T, base, data, url string) {
	if os.Geteuid() != 0 {
		t.Skip("runs clients as the user nobody, which needs root: run the e2e tests as root to check what another local user can do")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody to run clients as: %v", err)
	}
	uid, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	// The clients' executables, where nobody may run them.
	bin, home := filepath.Join(base, "bin"), filepath.Join(base, "home")
	for d, mode := range map[string]os.FileMode{bin: 0o755, home: 0o777} {
		if err := os.Mkdir(d, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, mode)
	}
	trackerd := copyExecutable(t, binary, bin)
	asNobody := func(name string, extraEnv []string, args ...string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = home
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + home}, extraEnv...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s as nobody: %v", name, err)
		}
		return string(out), code
	}

	// The credentials and the URL: unreadable.
	for _, f := range []string{"nats.auth", "nats.url"} {
		if out, code := asNobody("cat", nil, filepath.Join(data, f)); code == 0 || !strings.Contains(out, "Permission denied") {
			t.Errorf("nobody reads DATA_DIR/%s: exit %d: %s", f, code, out)
		}
	}
	// trackerd tail through DATA_DIR: cannot read it.
	if out, code := asNobody(trackerd, []string{"TRACKER_DATA_DIR=" + data}, "tail", "--from", "start", "-n", "1"); code != 2 || !strings.Contains(out, "permission denied") {
		t.Errorf("trackerd tail as nobody through DATA_DIR: exit %d, want 2 and permission denied:\n%s", code, out)
	}
	// trackerd tail with the URL: refused by the server.
	if out, code := asNobody(trackerd, []string{"TRACKER_NATS_URL=" + url}, "tail", "--from", "start", "-n", "1"); code == 0 ||
		!strings.Contains(out, "Authorization Violation") || strings.Contains(out, "specversion") {
		t.Errorf("trackerd tail as nobody with the URL: exit %d, want an authorization violation:\n%s", code, out)
	}
	// The nats CLI, as in the finding: read an event, list and forge
	// checkpoints, delete the stream (the subtest is skipped without it).
	cli := copyExecutable(t, natsCLI(t), bin)
	for _, args := range [][]string{
		{"stream", "get", "TRACKERD", "1"},
		{"kv", "ls", "trackerd_checkpoints"},
		{"kv", "put", "trackerd_checkpoints", "forged", "x"},
		{"stream", "rm", "-f", "TRACKERD"},
	} {
		out, code := asNobody(cli, nil, append([]string{"--server", url, "--timeout", "10s"}, args...)...)
		if code == 0 || !strings.Contains(out, "Authorization Violation") || strings.Contains(out, "secretval") {
			t.Errorf("nats %s as nobody: exit %d, want an authorization violation:\n%s", strings.Join(args, " "), code, out)
		}
	}
}

// copyExecutable copies src into dir, mode 0755, and returns the copy.
func copyExecutable(t *testing.T, src, dir string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dst, 0o755)
	return dst
}
