package natsserver

import (
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

func TestEmbeddedErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	tests := []struct {
		name    string
		o       Options
		wantErr string
	}{
		{"error - address taken", Options{Addr: taken, StoreDir: t.TempDir()}, "EMBEDDED_NATS_ADDR \"" + taken + "\": cannot listen"},
		{"error - not loopback", Options{Addr: "0.0.0.0:0", StoreDir: t.TempDir()}, "loopback only"},
		{"error - no port", Options{Addr: "127.0.0.1", StoreDir: t.TempDir()}, "want host:port"},
		{"error - bad port", Options{Addr: "127.0.0.1:99999", StoreDir: t.TempDir()}, "want a port"},
		{"error - no store dir", Options{Addr: "127.0.0.1:0"}, "NATS_STORE_DIR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Start(t.Context(), tc.o)
			if err == nil {
				_ = e.Shutdown(t.Context())
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestEmbeddedServes(t *testing.T) {
	var logs trackertest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e, err := Start(t.Context(), Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), MaxPayload: 4096, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != 4096 {
		t.Errorf("max_payload = %d, want 4096", got)
	}
	// F7: JetStream syncs to disk every SyncInterval, not nats-server's 2
	// minutes: the checkpoint delay that goes with it must cover it.
	if got := e.srv.JetStreamConfig().SyncInterval; got != SyncInterval || CheckpointDelay <= SyncInterval {
		t.Errorf("sync interval %v (want %v), checkpoint delay %v", got, SyncInterval, CheckpointDelay)
	}
	if _, port, _ := net.SplitHostPort(e.ClientURL()[len("nats://"):]); port == "0" {
		t.Errorf("ClientURL %s has no real port", e.ClientURL())
	} else if p, _ := strconv.Atoi(port); p <= 0 {
		t.Errorf("ClientURL %s", e.ClientURL())
	}
	if err := e.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "embedded NATS server started") {
		t.Errorf("start not logged:\n%s", logs.String())
	}
}

// TestEmbeddedRequiresCredentials: with User and Password the server
// refuses every client without them (F9), and never logs the password.
func TestEmbeddedRequiresCredentials(t *testing.T) {
	var logs trackertest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const password, wrong = "Corr3ctHorseBattery", "Wr0ngPassw0rdGuess"
	e, err := Start(t.Context(), Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: log, User: "trackerd", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(t.Context())
	for _, tc := range []struct {
		name string
		opts []natsgo.Option
	}{
		{"no credentials", nil},
		{"wrong password", []natsgo.Option{natsgo.UserInfo("trackerd", wrong)}},
		{"wrong user", []natsgo.Option{natsgo.UserInfo("admin", password)}},
		{"a token", []natsgo.Option{natsgo.Token(password)}},
	} {
		nc, err := natsgo.Connect(e.ClientURL(), tc.opts...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", tc.name)
		} else if !errors.Is(err, natsgo.ErrAuthorization) {
			t.Errorf("%s: err = %v, want an authorization violation", tc.name, err)
		}
	}
	nc, err := natsgo.Connect(e.ClientURL(), natsgo.UserInfo("trackerd", password))
	if err != nil {
		t.Fatalf("with the credentials: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("JetStream with the credentials: %v", err)
	}
	nc.Close()
	if s := logs.String(); strings.Contains(s, password) || strings.Contains(s, wrong) {
		t.Errorf("the server's logs show a password:\n%s", s)
	}
	if _, err := Start(t.Context(), Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Password: password}); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("a password without a user: err = %v", err)
	}
}

func TestCredentialsFile(t *testing.T) {
	var logs trackertest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	dir := filepath.Join(t.TempDir(), "data")
	file := filepath.Join(dir, CredentialsFile)

	c, err := LoadOrCreateCredentials(file, log)
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "trackerd" || len(c.Password) < 20 {
		t.Fatalf("generated credentials: user %q, a password of %d characters", c.User, len(c.Password))
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, file: 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %04o", path, st.Mode().Perm(), err, want)
		}
	}
	if strings.Contains(logs.String(), c.Password) {
		t.Errorf("the password is logged:\n%s", logs.String())
	}
	// Later starts reuse them; so do readers.
	again, err := LoadOrCreateCredentials(file, log)
	if err != nil || again != c {
		t.Fatalf("second start: %v, same credentials %v", err, again == c)
	}
	if read, err := ReadCredentials(file); err != nil || read != c {
		t.Fatalf("ReadCredentials: %v, same credentials %v", err, read == c)
	}
	// Another directory: other credentials.
	other, err := LoadOrCreateCredentials(filepath.Join(t.TempDir(), CredentialsFile), log)
	if err != nil || other.Password == c.Password {
		t.Fatalf("another DATA_DIR: %v, same password %v", err, other.Password == c.Password)
	}

	// A file open to others is closed again, with a warning.
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if again, err := LoadOrCreateCredentials(file, log); err != nil || again != c {
		t.Fatalf("0644 file: %v", err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("0644 file left %04o", st.Mode().Perm())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "was=0644") {
		t.Errorf("no warning for a 0644 file:\n%s", logs.String())
	}

	// Bad files are refused without showing their content.
	for name, content := range map[string]string{
		"no password": "NATS_USER=trackerd\n",
		"not KEY=VAL": "NATS_USER=trackerd\nsecret-looking-line\n",
	} {
		bad := filepath.Join(t.TempDir(), CredentialsFile)
		os.WriteFile(bad, []byte(content), 0o600)
		_, err := LoadOrCreateCredentials(bad, log)
		if err == nil || strings.Contains(err.Error(), "secret-looking") || !strings.Contains(err.Error(), "delete the file") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := ReadCredentials(filepath.Join(t.TempDir(), CredentialsFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
	}
}
