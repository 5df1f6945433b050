package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trackerd/trackerd/config"
)

// TestTailTarget: without NATS_URL, tail connects to the embedded server
// with the credentials DATA_DIR keeps (F9).
func TestTailTarget(t *testing.T) {
	const url = "nats://127.0.0.1:4999"
	tests := []struct {
		name     string
		files    map[string]string // in DATA_DIR
		natsURL  string
		wantUser string
		wantErr  string
	}{
		{"NATS_URL wins", map[string]string{"nats.url": url, "nats.auth": "NATS_USER=trackerd\nNATS_PASSWORD=pw\n"}, "nats://elsewhere:4222", "cfg-user", ""},
		{"embedded with credentials", map[string]string{"nats.url": url + "\n", "nats.auth": "# x\nNATS_USER=trackerd\nNATS_PASSWORD=pw\n"}, "", "trackerd", ""},
		{"embedded of a trackerd without credentials", map[string]string{"nats.url": url}, "", "", ""},
		{"no embedded server", nil, "", "", "no embedded server is running"},
		{"unusable credentials", map[string]string{"nats.url": url, "nats.auth": "NATS_USER=trackerd\n"}, "", "", "cannot be used"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := config.Default()
			cfg.DataDir, cfg.NATSURL = dir, tc.natsURL
			cfg.NATS.User, cfg.NATS.Password = "cfg-user", "cfg-pw"
			got, co, err := tailTarget(&cfg, slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !isConfigError(err) {
					t.Fatalf("err = %v, want a usage error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := url
			if tc.natsURL != "" {
				want = tc.natsURL
			}
			if got != want || co.User != tc.wantUser || co.Name != "trackerd tail" {
				t.Fatalf("tailTarget = %q, user %q, name %q; want %q, user %q", got, co.User, co.Name, want, tc.wantUser)
			}
			if tc.wantUser == "trackerd" && co.Password != "pw" {
				t.Fatal("the password of nats.auth is not used")
			}
		})
	}
}
