package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// readyz asks a running trackerd's /readyz (base from httpBase) and
// returns its status code and the state it names for bind; 0 when it
// cannot be asked.
func readyz(base, bind string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var body struct {
		Binds map[string]string `json:"binds"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Binds[bind]
}

// downAndBack is a server fault that also checks /readyz: not ready, with
// the bind reconnecting, while the server is down (stop); ready again,
// the bind streaming, once it is back (start).
func downAndBack(t *testing.T, p *proc, bind string, stop, start func()) func() {
	return func() {
		t.Helper()
		base := httpBase(p)
		if code, st := readyz(base, bind); code != http.StatusOK {
			t.Fatalf("/readyz %d (bind %s) before the server went down, want 200", code, st)
		}
		stop()
		eventually(t, time.Minute, "/readyz 503, the bind reconnecting, while the server is down", func() bool {
			code, st := readyz(base, bind)
			return code == http.StatusServiceUnavailable && st == "reconnecting"
		})
		start()
		eventually(t, 2*time.Minute, "/readyz 200, the bind streaming, once the server is back", func() bool {
			code, st := readyz(base, bind)
			return code == http.StatusOK && st == "streaming"
		})
	}
}

func TestHTTPEndpoints(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	p := startPG(t, bs, b, map[string]string{"TRACKER_TESTING": "true"}, "t")
	base := "http://" + p.waitLog(`HTTP endpoints listening" addr=http://(\S+)`, 10*time.Second)[1]

	if code, body := httpGet(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	eventually(t, 10*time.Second, "/readyz 200", func() bool { c, _ := httpGet(t, base+"/readyz"); return c == 200 })

	pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %q.t SELECT generate_series(1, 3)`, b.schema))
	bs.waitCount(t, 6, 30*time.Second)
	eventually(t, 10*time.Second, "metrics to count 3 changes and 6 acknowledged events", func() bool {
		_, m := httpGet(t, base+"/metrics")
		return strings.Contains(m, `trackerd_changes_total{bind="pg"} 3`) && strings.Contains(m, `trackerd_events_acked_total{bind="pg"} 6`)
	})
	_, m := httpGet(t, base+"/metrics")
	for _, name := range []string{"trackerd_replication_lag_bytes", "trackerd_checkpoints_total", "trackerd_sink_published_total", "trackerd_bind_state",
		"trackerd_sink_reordered_total", "trackerd_sink_stream_recreated_total"} {
		if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(m) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// TESTING turns RECORD_QUERIES on: the recent events with timings.
	_, body := httpGet(t, base+"/debug/events")
	var dbg struct {
		RecordQueries bool `json:"record_queries"`
		Events        []struct {
			ID      string `json:"id"`
			Table   string `json:"table"`
			Publish int64  `json:"publish_ns"`
			Ack     int64  `json:"ack_ns"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(body), &dbg); err != nil {
		t.Fatalf("/debug/events: %v\n%s", err, body)
	}
	if !dbg.RecordQueries || len(dbg.Events) != 6 {
		t.Fatalf("/debug/events: record_queries %v, %d events; want true, 6", dbg.RecordQueries, len(dbg.Events))
	}
	for _, e := range dbg.Events {
		if e.Table != "t" || e.Ack <= 0 {
			t.Errorf("debug event %+v: want table t and an ack time", e)
		}
	}
}

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

// TestHTTPDebugLoopbackOnly is F8: with HTTP_ADDR on every interface, as
// in the Docker image, a remote client gets /healthz and /metrics but not
// the debug endpoints; those are on a loopback listener of their own, and
// /debug/pprof/cmdline (the command line, with its passwords) is nowhere.
func TestHTTPDebugLoopbackOnly(t *testing.T) {
	ip := nonLoopbackIP(t)
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	p := startPG(t, bs, b, map[string]string{"TRACKER_HTTP_ADDR": "0.0.0.0:0", "TRACKER_DEBUG": "true"}, "t")
	main := p.waitLog(`HTTP endpoints listening" addr=http://(\S+)`, 10*time.Second)[1]
	_, port, _ := net.SplitHostPort(main)
	remote := "http://" + net.JoinHostPort(ip, port)
	get := func(url string) int {
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	type probe struct {
		path string
		want int
	}
	for _, pr := range []probe{{"/healthz", 200}, {"/metrics", 200}, {"/debug/pprof/", 404},
		{"/debug/pprof/cmdline", 404}, {"/debug/pprof/goroutine", 404}, {"/debug/events", 404}} {
		if got := get(remote + pr.path); got != pr.want {
			t.Errorf("GET %s%s = %d, want %d", remote, pr.path, got, pr.want)
		}
	}
	debug := "http://" + p.waitLog(`debug endpoints listening" addr=http://(\S+)`, 10*time.Second)[1]
	for _, pr := range []probe{{"/debug/events", 200}, {"/debug/pprof/", 200}, {"/debug/pprof/goroutine", 200},
		{"/debug/pprof/cmdline", 404}, {"/healthz", 404}} {
		if got := get(debug + pr.path); got != pr.want {
			t.Errorf("GET %s%s = %d, want %d", debug, pr.path, got, pr.want)
		}
	}
	if !strings.HasPrefix(debug, "http://127.0.0.1:") {
		t.Errorf("debug endpoints on %s, want 127.0.0.1", debug)
	}
	_, dport, _ := net.SplitHostPort(strings.TrimPrefix(debug, "http://"))
	if got := get("http://" + net.JoinHostPort(ip, dport) + "/debug/events"); got != 0 {
		t.Errorf("the debug listener answers on %s: %d", ip, got)
	}
}
