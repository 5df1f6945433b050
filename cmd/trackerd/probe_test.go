package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadyzURL(t *testing.T) {
	tests := []struct{ addr, want, err string }{
		{"127.0.0.1:9187", "http://127.0.0.1:9187/readyz", ""},
		{"0.0.0.0:9187", "http://127.0.0.1:9187/readyz", ""},
		{":9187", "http://127.0.0.1:9187/readyz", ""},
		{"[::]:9187", "http://[::1]:9187/readyz", ""},
		{"[::1]:9187", "http://[::1]:9187/readyz", ""},
		{"trackerd.internal:80", "http://trackerd.internal:80/readyz", ""},
		{"http://10.0.0.5:9187/", "http://10.0.0.5:9187/readyz", ""},
		{"off", "", "is off"},
		{"", "", "is off"},
		{"127.0.0.1:0", "", "port 0"},
		{"9187", "", "want host:port"},
	}
	for _, tc := range tests {
		got, err := readyzURL(tc.addr)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("readyzURL(%q) = %q, %v; want %q, %q", tc.addr, got, err, tc.want, tc.err)
		}
	}
}

// TestProbe: exit 0 and silent when /readyz answers 200; 1 with one line
// when it answers otherwise or nothing answers; 2 when there is no address.
// The address comes from HTTP_ADDR as run reads it, or --addr.
func TestProbe(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"binds":{"pg":"reconnecting"},"ready":false}` + "\n"))
			return
		}
		w.Write([]byte(`{"ready":true}`))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := net.SplitHostPort(addr)
	closed := func() string { // an address nothing listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()

	probe := func(env map[string]string, args ...string) (int, string, string) {
		t.Helper()
		env["HOME"] = t.TempDir()
		var out, errOut strings.Builder
		code := run(context.Background(), append([]string{"probe"}, args...), mapEnv(env), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	tests := []struct {
		name    string
		ready   bool
		env     map[string]string
		args    []string
		code    int
		wantErr string
	}{
		{"ready, HTTP_ADDR from the environment", true, map[string]string{"TRACKER_HTTP_ADDR": addr}, nil, exitOK, ""},
		{"ready, every interface asked on loopback", true, map[string]string{"TRACKER_HTTP_ADDR": "0.0.0.0:" + port}, nil, exitOK, ""},
		{"ready, --addr", true, map[string]string{"TRACKER_HTTP_ADDR": "off"}, []string{"--addr", addr}, exitOK, ""},
		{"ready, --http-addr", true, map[string]string{}, []string{"--http-addr=" + addr}, exitOK, ""},
		{"not ready", false, map[string]string{"TRACKER_HTTP_ADDR": addr}, nil, exitFailure,
			`trackerd: probe: not ready: GET http://` + addr + `/readyz: 503 Service Unavailable {"binds":{"pg":"reconnecting"},"ready":false}` + "\n"},
		{"nothing listens", true, map[string]string{}, []string{"--addr", closed}, exitFailure, "connection refused"},
		{"HTTP_ADDR off", true, map[string]string{"TRACKER_HTTP_ADDR": "off"}, nil, exitUsage,
			"trackerd: probe: HTTP_ADDR (env TRACKER_HTTP_ADDR) is off: trackerd serves no /readyz to ask; set HTTP_ADDR, or give --addr\n"},
		{"an argument", true, map[string]string{}, []string{"x"}, exitUsage, `probe takes no arguments`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready = tc.ready
			code, out, errOut := probe(tc.env, tc.args...)
			if code != tc.code || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d", code, out, errOut, tc.code)
			}
			switch {
			case tc.wantErr == "" && errOut != "":
				t.Fatalf("a ready probe printed %q", errOut)
			case strings.HasSuffix(tc.wantErr, "\n") && errOut != tc.wantErr:
				t.Fatalf("stderr %q, want %q", errOut, tc.wantErr)
			case !strings.Contains(errOut, tc.wantErr) || strings.Count(errOut, "\n") > 1:
				t.Fatalf("stderr %q, want one line with %q", errOut, tc.wantErr)
			}
		})
	}
}
