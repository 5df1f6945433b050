package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

const mysqlPos = `{"gtid":"0-1-21575","file":"mariadb-bin.000001","pos":124136089}`

// TestLogAttributesReadable: durations are Go duration strings in text
// logs and seconds in JSON logs; a MySQL position, JSON in a string, is a
// group of its fields in both; in JSON logs other JSON objects in strings
// (ECHO's row images) are objects (operator review row 15).
func TestLogAttributesReadable(t *testing.T) {
	emit := func(format string) string {
		var buf bytes.Buffer
		log := newLogger(&config.Config{LogFormat: format, LogLevel: "info"}, &buf)
		log.Info("stream created", slog.Duration("duplicate_window", 10*time.Minute), slog.Any("in", 1500*time.Millisecond))
		log.With(slog.String("bind", "shop")).Info("streaming", slog.String("from", mysqlPos))
		log.Info("mysql: change", "pos", mysqlPos, "data", `{"op":"insert","after":{"id":2}}`, "key", "TRACK_MODIFICATIONS")
		log.Info("streaming", slog.String("from", "0/16B3F48"), slog.String("position", "{not json}"))
		return buf.String()
	}
	text := emit("text")
	for _, want := range []string{
		"duplicate_window=10m0s in=1.5s",
		"bind=shop from.gtid=0-1-21575 from.file=mariadb-bin.000001 from.pos=124136089",
		"pos.gtid=0-1-21575 pos.file=mariadb-bin.000001 pos.pos=124136089",
		`data="{\"op\":\"insert\",\"after\":{\"id\":2}}" key=TRACK_MODIFICATIONS`,
		`from=0/16B3F48 position="{not json}"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text log lacks %s:\n%s", want, text)
		}
	}

	lines := strings.Split(strings.TrimSpace(emit("json")), "\n")
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		got = append(got, m)
	}
	if got[0]["duplicate_window"] != 600.0 || got[0]["in"] != 1.5 {
		t.Errorf("JSON durations: duplicate_window %v, in %v; want 600 and 1.5 (seconds)", got[0]["duplicate_window"], got[0]["in"])
	}
	from, ok := got[1]["from"].(map[string]any)
	if !ok || from["gtid"] != "0-1-21575" || from["file"] != "mariadb-bin.000001" || from["pos"] != 124136089.0 {
		t.Errorf("JSON position: %v", got[1]["from"])
	}
	data, ok := got[2]["data"].(map[string]any)
	if !ok || data["op"] != "insert" || got[2]["key"] != "TRACK_MODIFICATIONS" {
		t.Errorf("JSON row image: data %v, key %v", got[2]["data"], got[2]["key"])
	}
	if got[3]["from"] != "0/16B3F48" || got[3]["position"] != "{not json}" {
		t.Errorf("plain strings changed: %v", got[3])
	}
}

// TestStartLine: one line with the version, every bind without its
// password, where events go and the stream.
func TestStartLine(t *testing.T) {
	var buf bytes.Buffer
	cfg := &config.Config{LogFormat: "text", LogLevel: "info", NATSURL: "nats://u:natspw@nats.example:4222",
		PublishMode: "jetstream", StreamName: "SHOP", SubjectPrefix: "shop"}
	u, err := binds.Parse("postgresql://app:s3cret@db.example:5432/shop")
	if err != nil {
		t.Fatal(err)
	}
	m, err := binds.Parse("mysql://root:rootpw@my.example/orders")
	if err != nil {
		t.Fatal(err)
	}
	logStart(newLogger(cfg, &buf), cfg, []binds.Bind{{Key: "default", URI: u, Track: true}, {Key: "orders", URI: m}})
	out := buf.String()
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("%d lines, want one:\n%s", strings.Count(out, "\n"), out)
	}
	for _, want := range []string{`msg="trackerd starting" version=`, "binds.default=postgresql://app:***@db.example:5432/shop",
		`binds.orders="mysql://root:***@my.example/orders (not tracked)"`, "nats=nats://u:xxxxx@nats.example:4222", "stream=SHOP", "subjects=shop.>"} {
		if !strings.Contains(out, want) {
			t.Errorf("start line lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range []string{"s3cret", "rootpw", "natspw"} {
		if strings.Contains(out, secret) {
			t.Errorf("start line shows a password:\n%s", out)
		}
	}
}

type fakeStats struct {
	mu sync.Mutex
	s  []tracker.BindStats
}

func (f *fakeStats) Stats() []tracker.BindStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]tracker.BindStats(nil), f.s...)
}

func (f *fakeStats) add(n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.s {
		f.s[i].Acked += n
	}
}

// TestProgressLines: one line per bind each interval, with the events
// since the last line, the position (a group for MySQL) and the lag;
// none with an interval of 0.
func TestProgressLines(t *testing.T) {
	stats := &fakeStats{s: []tracker.BindStats{
		{Bind: "pg", State: tracker.StateStreaming, Acked: 10, Checkpoint: "0/16B3F48", Lag: tracker.Lag{Bytes: 128, Behind: 250 * time.Millisecond}},
		{Bind: "shop", State: tracker.StateReconnecting, Acked: 4, Checkpoint: mysqlPos, Lag: tracker.Lag{Bytes: -1}, LastError: "connection refused"},
	}}
	var buf trackertest.Buffer
	log := newLogger(&config.Config{LogFormat: "text", LogLevel: "info"}, &buf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { logProgress(ctx, log, stats, 50*time.Millisecond); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(buf.String(), "msg=progress bind=pg") < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stats.add(5)
	for strings.Count(buf.String(), "msg=progress bind=pg") < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 4 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{
		"msg=progress bind=pg state=streaming events=10 events_total=10 interval=0s position=0/16B3F48 lag_bytes=128 lag=250ms",
		"msg=progress bind=shop state=reconnecting events=4 events_total=4 interval=0s position.gtid=0-1-21575 position.file=mariadb-bin.000001 position.pos=124136089 lag=0s last_error=\"connection refused\"",
		"msg=progress bind=pg state=streaming events=5 events_total=15 ",
		"msg=progress bind=shop state=reconnecting events=5 events_total=9 ",
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d:\n%s\nlacks:\n%s", i+1, lines[i], want)
		}
	}

	var off trackertest.Buffer
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	logProgress(ctx, newLogger(&config.Config{LogFormat: "text", LogLevel: "info"}, &off), stats, 0)
	if off.String() != "" {
		t.Errorf("PROGRESS_INTERVAL=0 logged:\n%s", off.String())
	}
}
