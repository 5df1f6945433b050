package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// status runs `trackerd status` with env and args and returns its exit
// status and output.
func status(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	p := start(t, env, append([]string{"status"}, args...)...)
	code := p.exitCode(30 * time.Second)
	return code, p.out.String()
}

// TestStatusCommand: `trackerd status` of two instances sharing a NATS
// stream and checkpoint bucket, each running one bind: over HTTP_ADDR it
// shows one instance's bind; when HTTP_ADDR does not answer it asks every
// instance over NATS and shows which holds which bind; a killed instance's
// bind is not_running, with the lease it still holds, and status exits 1.
func TestStatusCommand(t *testing.T) {
	bs := newBus(t)
	a := newPGBind(t, map[string]string{"orders": "id int PRIMARY KEY"})
	b := newPGBind(t, map[string]string{"users": "id int PRIMARY KEY"})
	a.key, b.key = "a", "b"
	envA, envB := bs.env(t), bs.env(t)
	envA["TRACKER_BINDS"], envB["TRACKER_BINDS"] = a.bindsJSON(t, "orders"), b.bindsJSON(t, "users")
	pa := start(t, envA, "run")
	pb := start(t, envB, "run")
	pa.waitLog(`msg=streaming bind=a`, 60*time.Second)
	pb.waitLog(`msg=streaming bind=b`, 60*time.Second)
	httpA := "http://" + pa.waitLog(`HTTP endpoints listening" addr=http://(\S+)`, 10*time.Second)[1]
	ownerA, ownerB := "vm", "vm"
	if h, err := os.Hostname(); err == nil {
		ownerA, ownerB = h+":"+envA["TRACKER_DATA_DIR"], h+":"+envB["TRACKER_DATA_DIR"]
	}
	pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %q.orders VALUES (1), (2)`, a.schema))
	bs.waitCount(t, 4, 30*time.Second)

	code, out := status(t, map[string]string{"HOME": t.TempDir()}, "--addr", httpA)
	if code != 0 || !regexp.MustCompile(`(?m)^a\s+streaming\s+\S+\s+.*\s+4\s+.*`+regexp.QuoteMeta(ownerA)+`, pid \d+$`).MatchString(out) {
		t.Fatalf("status --addr: exit %d, want 0 and bind a streaming with its 4 events, held by %s:\n%s", code, ownerA, out)
	}

	// Every bind of the group, as a `trackerd run` with both binds would
	// have them; HTTP_ADDR answers nothing, so status asks over NATS.
	both := fmt.Sprintf(`{"a":%s,"b":%s}`, strings.TrimSuffix(strings.TrimPrefix(a.bindsJSON(t, "orders"), `{"a":`), "}"),
		strings.TrimSuffix(strings.TrimPrefix(b.bindsJSON(t, "users"), `{"b":`), "}"))
	env := map[string]string{"HOME": t.TempDir(), "TRACKER_NATS_URL": bs.url, "TRACKER_STREAM_NAME": bs.stream,
		"TRACKER_CHECKPOINT_BUCKET": bs.bucket, "TRACKER_HTTP_ADDR": "127.0.0.1:1", "TRACKER_BINDS": both}
	code, out = status(t, env)
	for _, re := range []string{
		`(?m)^instance ` + regexp.QuoteMeta(ownerA) + `, pid \d+: trackerd `,
		`(?m)^instance ` + regexp.QuoteMeta(ownerB) + `, pid \d+: trackerd `,
		`(?m)^a\s+streaming\s+.*` + regexp.QuoteMeta(ownerA) + `, pid \d+$`,
		`(?m)^b\s+streaming\s+.*` + regexp.QuoteMeta(ownerB) + `, pid \d+$`,
		`every bind streaming \(via NATS \(nats://`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status over NATS lacks %s:\n%s", re, out)
		}
	}
	if code != 0 {
		t.Fatalf("status over NATS: exit %d, want 0:\n%s", code, out)
	}

	// B dies without a word: its lease lives on until it expires.
	pb.signal(syscall.SIGKILL)
	pb.exitCode(10 * time.Second)
	code, out = status(t, env, "--json")
	var doc struct {
		OK        bool `json:"ok"`
		Instances []struct {
			Owner string `json:"owner"`
		} `json:"instances"`
		Binds []struct {
			Bind        string `json:"bind"`
			State       string `json:"state"`
			LeaseHolder string `json:"lease_holder"`
		} `json:"binds"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if code != 1 || doc.OK || len(doc.Instances) != 1 || len(doc.Binds) != 2 || doc.Binds[0].State != "streaming" ||
		doc.Binds[1].Bind != "b" || doc.Binds[1].State != "not_running" || !strings.HasPrefix(doc.Binds[1].LeaseHolder, ownerB+", pid ") {
		t.Fatalf("after B was killed: exit %d, want 1, bind b not_running, its lease still held by %s:\n%s", code, ownerB, out)
	}
}

// metricNames returns the names of the series of a /metrics text.
func metricNames(text string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// TestDeployFilesMatchMetrics: every metric the Grafana dashboard and the
// alert rules use is in the /metrics of a running trackerd (after a
// backfill, for the snapshot series); every bind has one
// trackerd_bind_state series per state, and no series is -1.
func TestDeployFilesMatchMetrics(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	p := startPG(t, bs, b, nil, "t")
	base := "http://" + p.waitLog(`HTTP endpoints listening" addr=http://(\S+)`, 10*time.Second)[1]
	pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %q.t VALUES (1)`, b.schema))
	bs.waitCount(t, 2, 30*time.Second)
	var text string
	eventually(t, 20*time.Second, "the commit-to-ack latency and the lag in /metrics", func() bool {
		_, text = httpGet(t, base+"/metrics")
		return strings.Contains(text, `trackerd_commit_to_ack_seconds_count{bind="pg"} 1`) && strings.Contains(text, "trackerd_replication_lag_bytes{")
	})
	// The snapshot series come with a snapshot: after a backfill of t
	// (its one row) the dashboard's snapshot panels have theirs too.
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	if bf := start(t, env, "backfill", "--wait", "--table", b.schema+".t"); bf.exitCode(60*time.Second) != 0 {
		t.Fatalf("trackerd backfill --wait: exit %d:\n%s", bf.cmd.ProcessState.ExitCode(), bf.out.String())
	}
	var snapText string
	eventually(t, 20*time.Second, "the backfill's row in /metrics", func() bool {
		_, snapText = httpGet(t, base+"/metrics")
		return strings.Contains(snapText, fmt.Sprintf(`trackerd_snapshot_rows_total{bind="pg",table="%s.t"} 1`, b.schema)) &&
			strings.Contains(snapText, `trackerd_snapshots_running{bind="pg"} 0`)
	})
	names := metricNames(snapText)
	// The status document lists the backfill, ended, with its row.
	_, js := httpGet(t, base+"/status.json")
	if !regexp.MustCompile(`"id": "backfill-[0-9a-f]{8}",\s*"kind": "backfill",\s*"state": "completed",[^}]*"rows": 1,`).MatchString(js) {
		t.Errorf("/status.json does not list the completed backfill with its row:\n%s", js)
	}

	var used []string
	dash, err := os.ReadFile("../deploy/grafana/trackerd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{string(dash), string(rules)} {
		used = append(used, regexp.MustCompile(`\b(trackerd_[a-z_]+|process_start_time_seconds)\b`).FindAllString(src, -1)...)
	}
	if len(used) < 20 {
		t.Fatalf("found %d metric uses in the deploy files: the pattern is wrong", len(used))
	}
	for _, n := range used {
		if !names[n] {
			t.Errorf("the deploy files use %s, which trackerd's /metrics lacks", n)
		}
	}

	for _, want := range []string{
		`trackerd_bind_state{bind="pg",state="streaming"} 1`,
		`trackerd_bind_state{bind="pg",state="reconnecting"} 0`,
		`trackerd_source_connected{bind="pg"} 1`,
		`trackerd_sink_published_total{bind="pg"} 2`,
		`trackerd_sink_duplicates_total{bind="pg"} 0`,
		`trackerd_sink_inflight_limit 8192`,
		`trackerd_build_info{goversion="go`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if n := strings.Count(text, "\ntrackerd_bind_state{"); n != 9 {
		t.Errorf("%d trackerd_bind_state series, want one per state (9)", n)
	}
	if m := regexp.MustCompile(`(?m)^trackerd_\S+ -1$`).FindString(text); m != "" {
		t.Errorf("a -1 sentinel: %s", m)
	}
	if names["trackerd_bind_streaming"] {
		t.Error("trackerd_bind_streaming is still exported")
	}

	// Prometheus's own linter (promlint) on the scrape.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed: CI must lint /metrics (scripts/install-packages.sh installs Debian's prometheus)")
		}
		t.Skip("promtool is not installed: /metrics not linted (Debian's prometheus package)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(snapText)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
