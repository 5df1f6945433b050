package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mapEnv(m map[string]string) env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestEveryErrorLineIsPrefixed: with several configuration problems, every
// line of the message carries "trackerd:" (operator review row 10).
func TestEveryErrorLineIsPrefixed(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "flask.toml")
	if err := os.WriteFile(file, []byte("SECRET_KEY = \"x\"\nMAIL_SERVER = \"smtp\"\nDATABASE_URL = \"postgresql://u:hunter22@h/db\"\nSQLALCHEMY_TRACK_MODIFICATION = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"check", "--config", file},
		mapEnv(map[string]string{"TRACKER_ECHO": "loud", "HOME": dir}), &out, &errOut)
	if code != exitUsage {
		t.Fatalf("exit %d, want %d:\n%s", code, exitUsage, errOut.String())
	}
	lines := strings.Split(strings.TrimRight(errOut.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Errorf("%d lines, want 3 (DATABASE_URL, SQLALCHEMY_TRACK_MODIFICATION, ECHO):\n%s", len(lines), errOut.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "trackerd: config: ") {
			t.Errorf("line without the prefix: %q", l)
		}
	}
	for _, w := range []string{`did you mean "DATABASE_URI"?`, `did you mean "TRACK_MODIFICATIONS"?`} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, errOut.String())
		}
	}
	if strings.Contains(errOut.String(), "SECRET_KEY") || strings.Contains(errOut.String(), "hunter22") {
		t.Errorf("output names a skipped key or shows a password:\n%s", errOut.String())
	}
}

// TestTrackModificationsFalseWarns: a Flask app's
// SQLALCHEMY_TRACK_MODIFICATIONS=False stops `trackerd run` with a warning
// that says where the value came from and how to override it (operator
// review row 12); exit status 0, as the README, "Configuration" says.
func TestTrackModificationsFalseWarns(t *testing.T) {
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"run"}, mapEnv(map[string]string{
		"SQLALCHEMY_TRACK_MODIFICATIONS": "False",
		"SQLALCHEMY_DATABASE_URI":        "postgresql://app@db.invalid/shop",
		"HOME":                           t.TempDir(),
	}), &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, errOut.String())
	}
	for _, w := range []string{"level=WARN", "TRACK_MODIFICATIONS is false (env SQLALCHEMY_TRACK_MODIFICATIONS)",
		"set TRACKER_TRACK_MODIFICATIONS=true", `from="env SQLALCHEMY_TRACK_MODIFICATIONS"`} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, errOut.String())
		}
	}
}

// TestBareNATSURLIsRead: `trackerd tail` uses the NATS tools' NATS_URL
// (operator review rows 3 and 3b) and never says it is not set.
func TestBareNATSURLIsRead(t *testing.T) {
	cfg, _, err := loadConfig("tail", nil, mapEnv(map[string]string{"NATS_URL": "nats://nats.invalid:4222", "HOME": t.TempDir()}), new(strings.Builder), new(strings.Builder), nil)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	url, _, err := tailTarget(cfg, quiet)
	if err != nil || url != "nats://nats.invalid:4222" {
		t.Fatalf("tailTarget = %q, %v", url, err)
	}
	cfg, _, err = loadConfig("tail", nil, mapEnv(map[string]string{"HOME": t.TempDir()}), new(strings.Builder), new(strings.Builder), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tailTarget(cfg, quiet); err == nil || !strings.Contains(err.Error(), "NATS_URL is not set (looked at flag --nats-url; env TRACKER_NATS_URL") ||
		!strings.Contains(err.Error(), "; env NATS_URL)") {
		t.Fatalf("tailTarget without NATS_URL: %v", err)
	}
}
