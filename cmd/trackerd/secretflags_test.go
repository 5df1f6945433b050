package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestWarnSecretsOnCommandLine: a password or token given as a flag draws
// one warning naming the flags, never the values.
func TestWarnSecretsOnCommandLine(t *testing.T) {
	const warning = "on the command line"
	secrets := []string{"DbPassw0rd", "NatsPassw0rd", "NatsT0ken", "BindPassw0rd", "UrlPassw0rd"}
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantFlags []string // empty: no warning
	}{
		{"every kind", []string{"--database-uri", "postgresql://app:DbPassw0rd@127.0.0.1/app",
			"--binds", `{"b":{"uri":"mysql://root:BindPassw0rd@127.0.0.1/b"}}`,
			"--nats-url", "nats://u:UrlPassw0rd@127.0.0.1:4222", "--nats-user", "u", "--nats-password", "NatsPassw0rd", "--nats-token", "NatsT0ken"},
			nil, []string{"--database-uri", "--binds", "--nats-url", "--nats-password", "--nats-token"}},
		{"JSON logs too", []string{"--log-format", "json", "--database-uri=postgresql://app:DbPassw0rd@127.0.0.1/app"},
			nil, []string{"--database-uri"}},
		{"no password on the command line", []string{"--database-uri", "postgresql://app@127.0.0.1/app", "--nats-url", "nats://127.0.0.1:4222"},
			map[string]string{"TRACKER_NATS_USER": "u", "TRACKER_NATS_PASSWORD": "NatsPassw0rd"}, nil},
		{"passwords in the environment", nil,
			map[string]string{"TRACKER_DATABASE_URI": "postgresql://app:DbPassw0rd@127.0.0.1/app", "TRACKER_NATS_TOKEN": "NatsT0ken"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"TRACKER_DATA_DIR": t.TempDir(), "TRACKER_HTTP_ADDR": "off"}
			for k, v := range tc.env {
				env[k] = v
			}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			var stdout, stderr bytes.Buffer
			// TRACK_MODIFICATIONS=false: run loads its configuration and exits.
			args := append([]string{"run", "--track-modifications=false"}, tc.args...)
			if code := run(t.Context(), args, lookup, &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d:\n%s", code, stderr.String())
			}
			out := stderr.String()
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("the output shows %s:\n%s", s, out)
				}
			}
			n := strings.Count(out, warning)
			if len(tc.wantFlags) == 0 {
				if n != 0 {
					t.Fatalf("warned without a password on the command line:\n%s", out)
				}
				return
			}
			if n != 1 {
				t.Fatalf("%d warnings, want 1:\n%s", n, out)
			}
			line := out[:strings.Index(out, "\n")+1]
			if !strings.Contains(line, warning) || !strings.Contains(strings.ToUpper(line), "WARN") {
				t.Fatalf("the first line is not the warning:\n%s", out)
			}
			if want := strings.Join(tc.wantFlags, " "); !strings.Contains(line, want) {
				t.Errorf("warning names other flags than %q:\n%s", want, line)
			}
		})
	}
}
