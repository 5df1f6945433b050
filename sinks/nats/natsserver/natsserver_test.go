package natsserver

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	natsgo "github.com/nats-io/nats.go"
)

// syncBuffer collects a logger's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

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
	var logs syncBuffer
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
