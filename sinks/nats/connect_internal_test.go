package nats

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/trackerd/trackerd/tracker"
)

// authServer runs a nats-server that wants user "u" with password pw.
func authServer(t *testing.T, pw string) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, Username: "u", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("auth server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func TestConnect(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	url := authServer(t, secret)
	host := strings.TrimPrefix(url, "nats://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	tests := []struct {
		name      string
		url       string
		o         ConnectOptions
		wantErr   string // "" connects (or keeps trying)
		connected bool
	}{
		{name: "ok - user and password", url: url, o: ConnectOptions{User: "u", Password: secret}, connected: true},
		{name: "ok - password in the URL", url: "nats://u:" + secret + "@" + host, connected: true},
		{name: "ok - server down: keeps trying", url: "nats://u:" + secret + "@" + down},
		{name: "error - wrong password", url: url, o: ConnectOptions{User: "u", Password: secret + "x"}, wantErr: "uthorization"},
		{name: "error - wrong password in the URL", url: "nats://u:" + secret + "x@" + host, wantErr: "uthorization"},
		{name: "error - missing credentials file", url: url, o: ConnectOptions{Creds: "/nonexistent/user.creds"}, wantErr: "nonexistent"},
		{name: "error - missing nkey seed", url: url, o: ConnectOptions{NKey: "/nonexistent/seed.nk"}, wantErr: "NATS_NKEY"},
		{name: "error - cert without key", url: url, o: ConnectOptions{TLSCert: "/c.pem"}, wantErr: "NATS_TLS_KEY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			tc.o.Logger = logs.logger()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			nc, err := Connect(ctx, tc.url, tc.o)
			if nc != nil {
				defer nc.Close()
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, tracker.ErrConfig) {
					t.Fatalf("Connect: err = %v, want a configuration error containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows the password: %v", err)
				}
			} else if err != nil {
				t.Fatalf("Connect: %v", err)
			} else if nc.IsConnected() != tc.connected {
				t.Fatalf("connected = %v, want %v", nc.IsConnected(), tc.connected)
			}
			if strings.Contains(logs.String(), secret) {
				t.Fatalf("logs show the password:\n%s", logs.String())
			}
		})
	}
}

func TestConnectOptionsSecrets(t *testing.T) {
	tests := []struct {
		url  string
		o    ConnectOptions
		want []string
	}{
		{"nats://h:4222", ConnectOptions{}, nil},
		{"nats://u:p%40ss@h:4222,nats://v:q@h2", ConnectOptions{Password: "pw", Token: "tok"}, []string{"pw", "tok", "p%40ss", "q"}},
		{"nats://tok3n@h", ConnectOptions{}, []string{"tok3n"}},
		{"tls://u:pw@h", ConnectOptions{User: "u"}, []string{"pw"}},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got := tc.o.secrets(tc.url)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("secrets = %q, want %q", got, tc.want)
			}
			if r := redact(tc.url, got); len(got) > 0 && strings.Contains(r, got[len(got)-1]) {
				t.Errorf("redact(%q) = %q", tc.url, r)
			}
		})
	}
}
