package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// testTracker returns a tracker of the binds (key to PostgreSQL URI), whose
// sources are scripted and whose store leases every bind to its owner.
func testTracker(t *testing.T, owner string, bindURIs map[string]string) (*config.Config, *tracker.Tracker) {
	t.Helper()
	m := map[string]any{}
	for k, u := range bindURIs {
		m[k] = u
	}
	js, _ := json.Marshal(m)
	env := map[string]string{"TRACKER_BINDS": string(js), "TRACKER_TRACK_MODIFICATIONS": "true",
		"TRACKER_DATA_DIR": t.TempDir(), "TRACKER_STREAM_NAME": "STATUSTEST", "TRACKER_HTTP_ADDR": "off"}
	cfg, err := config.Load(config.Options{LookupEnv: mapEnv(env)})
	if err != nil {
		t.Fatal(err)
	}
	open := func(context.Context, binds.Bind, tracker.SourceOptions) (tracker.Source, error) {
		return &trackertest.ScriptedSource{}, nil
	}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, open), tracker.WithOwner(owner),
		tracker.WithCheckpointStore(leasingStore{trackertest.NewMemStore()}))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, tr
}

// leasingStore leases every bind at once.
type leasingStore struct{ *trackertest.MemStore }

func (leasingStore) Lease(context.Context, string, string) (tracker.Lease, error) {
	return heldLease{}, nil
}

type heldLease struct{}

func (heldLease) Lost() <-chan struct{}         { return nil }
func (heldLease) Held() bool                    { return true }
func (heldLease) Release(context.Context) error { return nil }

// runTracker runs tr until the test ends and waits until every bind streams.
func runTracker(t *testing.T, tr *tracker.Tracker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	trackertest.Eventually(t, 10*time.Second, "every bind streaming", tr.Ready)
}

func gather(t *testing.T, m *metrics) map[string][]*dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dto.Metric{}
	for _, f := range fams {
		out[f.GetName()] = f.GetMetric()
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Metrics an alert can use (operator review, section (b)): from the first
// scrape, every bind has one trackerd_bind_state series per state, 1 for
// its state; an unknown lag is no series rather than -1; the build is
// named; the enum done wrong (trackerd_bind_streaming) is gone.
func TestMetricsForAlerting(t *testing.T) {
	_, tr := testTracker(t, "vm1:/data", map[string]string{"orders": "postgresql://app@db1.invalid/shop", "users": "postgresql://app@db2.invalid/crm"})
	m := &metrics{tr: tr, build: buildInfo{Version: "v1.2.3", Revision: "0123456789ab", GoVersion: "go1.26.8"}}
	check := func(wantState string) map[string][]*dto.Metric {
		t.Helper()
		got := gather(t, m)
		states := got["trackerd_bind_state"]
		if len(states) != 2*len(tracker.States) {
			t.Fatalf("%d trackerd_bind_state series, want %d (2 binds × %d states)", len(states), 2*len(tracker.States), len(tracker.States))
		}
		for _, s := range states {
			want := 0.0
			if label(s, "state") == wantState {
				want = 1
			}
			if s.GetGauge().GetValue() != want {
				t.Errorf("trackerd_bind_state{bind=%q,state=%q} = %v, want %v", label(s, "bind"), label(s, "state"), s.GetGauge().GetValue(), want)
			}
		}
		for name, ms := range got {
			for _, x := range ms {
				if x.GetGauge().GetValue() < 0 {
					t.Errorf("%s = %v: an unknown value must leave its series out", name, x.GetGauge().GetValue())
				}
			}
		}
		if _, ok := got["trackerd_bind_streaming"]; ok {
			t.Error("trackerd_bind_streaming is still exported")
		}
		if h := got["trackerd_commit_to_ack_seconds"]; len(h) != 2 || len(h[0].GetHistogram().GetBucket()) != len(tracker.LatencyBuckets) {
			t.Errorf("trackerd_commit_to_ack_seconds: %v, want a histogram per bind with %d buckets", h, len(tracker.LatencyBuckets))
		}
		b := got["trackerd_build_info"]
		if len(b) != 1 || label(b[0], "version") != "v1.2.3" || label(b[0], "revision") != "0123456789ab" || label(b[0], "goversion") != "go1.26.8" {
			t.Errorf("trackerd_build_info = %v", b)
		}
		return got
	}
	got := check(tracker.StateStarting)
	for _, name := range []string{"trackerd_replication_lag_bytes", "trackerd_replication_lag_seconds", "trackerd_last_event_timestamp_seconds", "trackerd_checkpoint_timestamp_seconds"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s is exported before it is known", name)
		}
	}
	for _, c := range got["trackerd_source_connected"] {
		if c.GetGauge().GetValue() != 0 {
			t.Errorf("source connected before the start: %v", c)
		}
	}

	runTracker(t, tr)
	got = check(tracker.StateStreaming)
	if c := got["trackerd_source_connected"]; len(c) != 2 || c[0].GetGauge().GetValue() != 1 {
		t.Errorf("trackerd_source_connected = %v, want 1 for both binds", c)
	}
}

func TestStatusPage(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(-d); return &v }
	lagB, lagS := int64(3<<20), 1.5
	est, eta := int64(20000), 60.0
	doc := statusDoc{Time: now, Instances: []instanceStatus{{Owner: "vm1:/data", PID: 42, Version: "v1.2.3", GoVersion: "go1.26.8",
		StartedAt: now.Add(-3 * time.Hour), NATS: "CONNECTED", NATSURL: "nats://nats.internal:4222", Stream: "TRACKERD"}},
		Binds: []bindStatus{
			{Bind: "orders", Instance: "vm1:/data", State: "streaming", StateSince: now.Add(-2 * time.Hour), Position: "0/1D665800",
				LagBytes: &lagB, LagSeconds: &lagS, EventsPerSecond: 1234.5, EventsPublished: 1234567, LastEventAt: at(12 * time.Second),
				LeaseHolder: "vm1:/data, pid 42", CommitToAck: &latencyStatus{Count: 10, P50Seconds: 0.004, P99Seconds: 0.2},
				Sink: &sinkStatus{Published: 1234567, Duplicates: 3}},
			{Bind: "users", Instance: "vm1:/data", State: "reconnecting", StateSince: now.Add(-90 * time.Second), Position: `{"gtid":"0-1-9","file":"mariadb-bin.000003","pos":4}`,
				LastError: `dial tcp 10.0.0.7:3306: connect: connection refused`, LastErrorAt: at(5 * time.Second),
				Snapshots: []snapshotStatus{
					{ID: "initial-0f0f0f0f", Kind: "initial", State: "completed", Tables: 3, TablesDone: 3, Rows: 70000, StartedAt: now.Add(-time.Hour), EndedAt: at(50 * time.Minute)},
					{ID: "backfill-1a2b3c4d", Kind: "backfill", State: "running", Table: "crm.users", TablesDone: 1, Tables: 3, Rows: 5000, Estimated: &est,
						RowsPerSecond: 250, ETASeconds: &eta, Where: "id > 10", StartedAt: now.Add(-time.Minute)}}},
		}}
	var b strings.Builder
	if err := renderPage(&b, doc); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		`<title>trackerd: 1 of 2 streaming</title>`,
		`<tbody class="bind" id="bind-orders" data-state="streaming">`,
		`<span class="state s-streaming">streaming</span> <small>for 2 h</small>`,
		`<code title="0/1D665800">0/1D665800</code>`,
		`<code title="{&#34;gtid&#34;:&#34;0-1-9&#34;,&#34;file&#34;:&#34;mariadb-bin.000003&#34;,&#34;pos&#34;:4}">mariadb-bin.000003:4 (0-1-9)</code>`,
		`<td class="num lag-bytes">3.0 MiB</td>`,
		`<td class="num lag-seconds">1.50 s</td>`,
		`<td class="num rate">1,234</td>`,
		`<td class="num events">1,234,567</td>`,
		`<time datetime="2026-12-01T11:59:48Z" title="2026-12-01 11:59:48.000 UTC">12 s ago</time>`,
		`vm1:/data, pid 42`,
		`commit→ack p50 4 ms, p99 200 ms`,
		`3 duplicates`,
		`<span class="state s-reconnecting">reconnecting</span> <small>for 1 min 30 s</small>`,
		`<td class="num lag-bytes">–</td>`,
		`last error <time datetime="2026-12-01T11:59:55Z" title="2026-12-01 11:59:55.000 UTC">5 s ago</time>: dial tcp 10.0.0.7:3306: connect: connection refused`,
		`<tr class="snapshot" data-snapshot="backfill-1a2b3c4d"><td></td><td colspan="8">snapshot <code>backfill-1a2b3c4d</code> running: table <code>crm.users</code>, 1 of 3 tables, <span class="snapshot-rows">5,000</span> of about 20,000 rows <progress max="20000" value="5000"></progress>, <span class="snapshot-rate">250</span> rows/s, about 1 min left, where <code>id &gt; 10</code>, started <time`,
		`up 3 h`,
		`<noscript><meta http-equiv="refresh" content="5"></noscript>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(page, "initial-0f0f0f0f") {
		t.Error("the page shows a snapshot that ended")
	}
	// Offline: nothing is loaded from elsewhere.
	if m := regexp.MustCompile(`(?i)(src|href)="(https?:)?//|<link rel="stylesheet"|@import|url\(`).FindString(page); m != "" {
		t.Errorf("page loads something from elsewhere: %s", m)
	}
	if strings.Contains(page, "<script src") {
		t.Error("page loads a script")
	}

	// A failed bind's error is escaped, not markup.
	doc.Binds[1].LastError = `<script>alert(1)</script>`
	b.Reset()
	renderPage(&b, doc)
	if strings.Contains(b.String(), "<script>alert") {
		t.Error("the last error is not escaped")
	}
}

func TestMergeStatus(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	a := statusDoc{Instances: []instanceStatus{{Owner: "vm1:/data", PID: 1}}, Binds: []bindStatus{
		{Bind: "orders", Instance: "vm1:/data", State: "streaming", LeaseHolder: "vm1:/data, pid 1"},
		{Bind: "users", Instance: "vm1:/data", State: "starting", LeaseHolder: "vm2:/data, pid 2"},
	}}
	b := statusDoc{Instances: []instanceStatus{{Owner: "vm2:/data", PID: 2}}, Binds: []bindStatus{
		{Bind: "users", Instance: "vm2:/data", State: "reconnecting", LeaseHolder: "vm2:/data, pid 2"},
		{Bind: "orders", Instance: "vm2:/data", State: "starting", LeaseHolder: "vm1:/data, pid 1"},
	}}
	got := mergeStatus([]statusDoc{b, a}, []string{"orders", "users", "items"}, map[string]string{"items": "vm3:/data, pid 3"}, now)
	var lines []string
	for _, x := range got.Instances {
		lines = append(lines, "instance "+x.Owner)
	}
	for _, x := range got.Binds {
		lines = append(lines, x.Bind+" "+x.State+" by "+x.Instance+" held by "+x.LeaseHolder+" standby "+strings.Join(x.Standby, ","))
	}
	want := []string{
		"instance vm1:/data",
		"instance vm2:/data",
		"items not_running by  held by vm3:/data, pid 3 standby ",
		// The holder's view wins over a standby's better-looking state.
		"orders streaming by vm1:/data held by vm1:/data, pid 1 standby vm2:/data",
		"users reconnecting by vm2:/data held by vm2:/data, pid 2 standby vm1:/data",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("merged:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if got.OK {
		t.Error("OK with a bind not running")
	}
	one := statusDoc{Instances: a.Instances, Binds: a.Binds[:1]}
	if !mergeStatus([]statusDoc{one}, []string{"orders"}, nil, now).OK {
		t.Error("a merge whose binds all stream is not OK")
	}
}

// `trackerd status` over HTTP: the table, exit 0 when every bind streams, 1
// otherwise; --json prints the document.
func TestStatusCommandHTTP(t *testing.T) {
	_, tr := testTracker(t, "vm1:/data", map[string]string{"orders": "postgresql://app@db1.invalid/shop"})
	d := newDaemon(nil, tr, nil)
	mux := http.NewServeMux()
	mountStatus(mux, d)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	status := func(args ...string) (int, string, string) {
		var out, errOut strings.Builder
		code := run(context.Background(), append([]string{"status"}, args...), mapEnv(map[string]string{"HOME": t.TempDir()}), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, _ := status("--addr", srv.URL)
	if code != exitFailure || !regexp.MustCompile(`(?m)^orders\s+starting\s+-\s+-\s+-\s+0\s+0\s+-\s+-$`).MatchString(out) ||
		!strings.Contains(out, "0 of 1 binds streaming (via "+srv.URL+")") {
		t.Fatalf("before the start: exit %d, want 1:\n%s", code, out)
	}
	runTracker(t, tr)
	code, out, errOut := status("--addr", srv.URL)
	if code != exitOK || !regexp.MustCompile(`(?m)^orders\s+streaming\s+`).MatchString(out) || !strings.Contains(out, "vm1:/data, pid ") ||
		!strings.Contains(out, "every bind streaming") {
		t.Fatalf("streaming: exit %d, want 0:\n%s%s", code, out, errOut)
	}
	code, out, _ = status("--addr", srv.URL, "--json")
	var doc statusDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitOK || !doc.OK || len(doc.Binds) != 1 || doc.Binds[0].State != "streaming" {
		t.Fatalf("--json: exit %d, %v:\n%s", code, err, out)
	}
	if code, _, errOut := status("--addr", "127.0.0.1:1"); code != exitFailure || !strings.Contains(errOut, "trackerd: status: ") {
		t.Fatalf("nothing at --addr: exit %d, want 1 with the reason:\n%s", code, errOut)
	}
	if code, _, errOut := status("--addr", "x", "--nats"); code != exitUsage {
		t.Fatalf("--addr with --nats: exit %d, want 2:\n%s", code, errOut)
	}
}

// `trackerd status` over NATS asks every instance through the control
// service and shows which holds which bind; a configured bind that none
// runs is not_running.
func TestStatusOverNATS(t *testing.T) {
	srv, err := natsserver.Start(t.Context(), natsserver.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	url := srv.ClientURL()
	for _, inst := range []struct{ owner, bind string }{{"vm1:/data", "orders"}, {"vm2:/data", "users"}} {
		cfg, tr := testTracker(t, inst.owner, map[string]string{inst.bind: "postgresql://app@db.invalid/" + inst.bind})
		runTracker(t, tr)
		b, err := startBus(t.Context(), withNATS(cfg, url), quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.close(quietLog()) })
		stop, err := startControl(b.nc, cfg, newDaemon(cfg, tr, b), quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	stream := "STATUSTEST"
	status := func(binds string) (int, string, string) {
		var out, errOut strings.Builder
		env := map[string]string{"HOME": t.TempDir(), "TRACKER_NATS_URL": url, "TRACKER_STREAM_NAME": stream, "TRACKER_HTTP_ADDR": "off"}
		if binds != "" {
			env["TRACKER_BINDS"] = binds
		}
		code := run(context.Background(), []string{"status", "--timeout", "10s"}, mapEnv(env), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := status("")
	if code != exitOK {
		t.Fatalf("exit %d, want 0:\n%s%s", code, out, errOut)
	}
	for _, re := range []string{`(?m)^instance vm1:/data, pid \d+: trackerd `, `(?m)^instance vm2:/data, pid \d+: trackerd `,
		`(?m)^orders\s+streaming\s+.*vm1:/data, pid \d+$`, `(?m)^users\s+streaming\s+.*vm2:/data, pid \d+$`,
		`every bind streaming \(via NATS \(nats://127\.0\.0\.1:\d+\)\)`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
	code, out, _ = status(`{"orders":"postgresql://app@db.invalid/orders","users":"postgresql://app@db.invalid/users","items":"postgresql://app@db.invalid/items"}`)
	if code != exitFailure || !regexp.MustCompile(`(?m)^items\s+not_running\s+-`).MatchString(out) || !strings.Contains(out, "2 of 3 binds streaming") {
		t.Fatalf("a configured bind nobody runs: exit %d, want 1:\n%s", code, out)
	}
	// Another deployment's stream: nobody answers there.
	stream = "OTHER"
	if code, out, errOut := status(""); code != exitFailure || !strings.Contains(errOut, "no trackerd answers on $TRACKERD.OTHER.status at nats://") {
		t.Fatalf("no instance of the deployment: exit %d, want 1 saying so:\n%s%s", code, out, errOut)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// withNATS returns a copy of cfg that publishes to the NATS server at url.
func withNATS(cfg *config.Config, url string) *config.Config {
	c := *cfg
	c.NATSURL = url
	return &c
}
