package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// nonLoopbackIP returns an IPv4 address of this machine that is not
// loopback, or skips the test.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("cannot list the interfaces' addresses (%v): the test needs a non-loopback address", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address: cannot check what a remote client sees")
	return ""
}

// status GETs url and returns its status code, or 0 when nothing answers.
func status(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestServeHTTPDebugOnLoopbackOnly checks where the debug endpoints go
// (F8): never on a non-loopback HTTP_ADDR, and /debug/pprof/cmdline nowhere.
func TestServeHTTPDebugOnLoopbackOnly(t *testing.T) {
	ip := nonLoopbackIP(t)
	// Status codes of each path on the HTTP_ADDR listener, reached through
	// host, and on the debug listener (0: no such listener).
	type want map[string]int
	paths := []string{"/healthz", "/metrics", "/debug/events", "/debug/pprof/", "/debug/pprof/goroutine", "/debug/pprof/cmdline"}
	tests := []struct {
		name              string
		httpAddr, dbgAddr string
		host              string // how the test reaches HTTP_ADDR
		onMain, onDebug   want
	}{
		{"loopback HTTP_ADDR serves them itself", "127.0.0.1:0", "", "127.0.0.1",
			want{"/healthz": 200, "/metrics": 200, "/debug/events": 200, "/debug/pprof/": 200, "/debug/pprof/goroutine": 200, "/debug/pprof/cmdline": 404}, nil},
		{"any-interface HTTP_ADDR: a loopback listener of their own", "0.0.0.0:0", "", ip,
			want{"/healthz": 200, "/metrics": 200, "/debug/events": 404, "/debug/pprof/": 404, "/debug/pprof/goroutine": 404, "/debug/pprof/cmdline": 404},
			want{"/healthz": 404, "/metrics": 404, "/debug/events": 200, "/debug/pprof/": 200, "/debug/pprof/goroutine": 200, "/debug/pprof/cmdline": 404}},
		{"empty-host HTTP_ADDR", ":0", "", ip,
			want{"/healthz": 200, "/metrics": 200, "/debug/events": 404, "/debug/pprof/": 404, "/debug/pprof/goroutine": 404, "/debug/pprof/cmdline": 404},
			want{"/healthz": 404, "/metrics": 404, "/debug/events": 200, "/debug/pprof/": 200, "/debug/pprof/goroutine": 200, "/debug/pprof/cmdline": 404}},
		{"DEBUG_ADDR set beside a loopback HTTP_ADDR", "127.0.0.1:0", "localhost:0", "127.0.0.1",
			want{"/healthz": 200, "/metrics": 200, "/debug/events": 404, "/debug/pprof/": 404, "/debug/pprof/goroutine": 404, "/debug/pprof/cmdline": 404},
			want{"/healthz": 404, "/metrics": 404, "/debug/events": 200, "/debug/pprof/": 200, "/debug/pprof/goroutine": 200, "/debug/pprof/cmdline": 404}},
		{"DEBUG_ADDR off", "0.0.0.0:0", "off", ip,
			want{"/healthz": 200, "/metrics": 200, "/debug/events": 404, "/debug/pprof/": 404, "/debug/pprof/goroutine": 404, "/debug/pprof/cmdline": 404}, nil},
		{"HTTP_ADDR off, DEBUG_ADDR set", "off", "localhost:0", "",
			nil, want{"/healthz": 404, "/metrics": 404, "/debug/events": 200, "/debug/pprof/": 200, "/debug/pprof/goroutine": 200, "/debug/pprof/cmdline": 404}},
		{"DEBUG_ADDR equal to a loopback HTTP_ADDR", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1",
			want{"/healthz": 200, "/metrics": 200, "/debug/events": 404, "/debug/pprof/": 404, "/debug/pprof/goroutine": 404, "/debug/pprof/cmdline": 404},
			want{"/healthz": 404, "/metrics": 404, "/debug/events": 200, "/debug/pprof/": 200, "/debug/pprof/goroutine": 200, "/debug/pprof/cmdline": 404}},
		{"HTTP_ADDR off", "off", "", "", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"TRACKER_HTTP_ADDR": tc.httpAddr, "TRACKER_DEBUG_ADDR": tc.dbgAddr,
				"TRACKER_DEBUG": "true", "TRACKER_TRACK_MODIFICATIONS": "false", "TRACKER_DATABASE_URI": "postgresql://app@127.0.0.1/app", "TRACKER_DATA_DIR": t.TempDir()}
			cfg, err := config.Load(config.Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
			if err != nil {
				t.Fatal(err)
			}
			tr, err := tracker.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var logs trackertest.Buffer
			stop, err := serveHTTP(t.Context(), cfg, newDaemon(cfg, tr, nil), slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			check := func(which, msg, host string, w want) {
				m := regexp.MustCompile(`msg="` + msg + `" addr=http://(\S+)`).FindStringSubmatch(logs.String())
				if w == nil {
					if m != nil {
						t.Fatalf("%s listener started: %s", which, logs.String())
					}
					return
				}
				if m == nil {
					t.Fatalf("no %s listener logged:\n%s", which, logs.String())
				}
				_, port, _ := net.SplitHostPort(m[1])
				if host == "" {
					host, _, _ = net.SplitHostPort(m[1])
				}
				base := "http://" + net.JoinHostPort(host, port)
				for _, p := range paths {
					if got := status(t, base+p); got != w[p] {
						t.Errorf("%s listener: GET %s%s = %d, want %d", which, base, p, got, w[p])
					}
				}
				if which == "debug" {
					// Loopback only: not reachable on the machine's other address.
					if got := status(t, "http://"+net.JoinHostPort(ip, port)+"/debug/events"); got != 0 {
						t.Errorf("debug listener answers on %s: %d", ip, got)
					}
				}
			}
			check("HTTP_ADDR", "HTTP endpoints listening", tc.host, tc.onMain)
			check("debug", "debug endpoints listening", "", tc.onDebug)
		})
	}
}

func TestServeHTTPDebugAddrNotLoopback(t *testing.T) {
	// Config validation refuses such a DEBUG_ADDR; serveHTTP checks the
	// address it got as well.
	cfg := config.Default()
	cfg.HTTPAddr, cfg.DebugAddr, cfg.DatabaseURI = "off", "0.0.0.0:0", "postgresql://app@127.0.0.1/app"
	cfg.TrackModifications = new(false)
	tr, err := tracker.New(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = serveHTTP(t.Context(), &cfg, newDaemon(&cfg, tr, nil), slog.New(slog.DiscardHandler))
	if err == nil || !isConfigError(err) || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("err = %v, want a configuration error saying not loopback", err)
	}
}
