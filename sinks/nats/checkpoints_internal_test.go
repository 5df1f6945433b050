package nats

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
)

func TestIntegrationCheckCheckpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			bucket := tempBucket(t, nc)
			now := time.Now()
			detail := func(rs []tracker.CheckResult, i int) string {
				t.Helper()
				if len(rs) <= i || !rs[i].OK {
					t.Fatalf("results %+v: want result %d ok", rs, i)
				}
				return rs[i].Detail
			}

			// No bucket: nothing is created, every bind starts afresh.
			rs := CheckCheckpoints(t.Context(), nc, bucket, []string{"a"}, now)
			if d := detail(rs, 0); !strings.Contains(d, "does not exist yet") {
				t.Errorf("no bucket: %q", d)
			}
			js, _ := jetstream.New(nc)
			if _, err := js.KeyValue(t.Context(), bucket); err == nil {
				t.Fatal("the check created the bucket")
			}

			st, err := NewKVStore(t.Context(), nc, bucket)
			if err != nil {
				t.Fatal(err)
			}
			key := tracker.CheckpointKey("a", "pg/1/db/slot")
			if _, err := st.Save(t.Context(), key, tracker.Checkpoint{Bind: "a", Source: "pg/1/db/slot", Position: "0/16B3748", Time: now.Add(-90 * time.Second)}); err != nil {
				t.Fatal(err)
			}
			lease, err := st.Lease(t.Context(), key, "host-a:/data")
			if err != nil {
				t.Fatal(err)
			}
			// "a.b" must not be taken for a's: bind keys are escaped.
			if _, err := st.Save(t.Context(), tracker.CheckpointKey("a.b", "x"), tracker.Checkpoint{Bind: "a.b", Source: "x", Position: "9", Time: now}); err != nil {
				t.Fatal(err)
			}

			rs = CheckCheckpoints(t.Context(), nc, bucket, []string{"a", "b"}, now)
			want := "at 0/16B3748 of pg/1/db/slot, written 1m30s ago; held by a running trackerd (host-a:/data, pid "
			if d := detail(rs, 0); rs[0].Name != "checkpoint of a" || !strings.HasPrefix(d, want) {
				t.Errorf("bind a: %s: %q, want %q...", rs[0].Name, d, want)
			}
			if d := detail(rs, 1); d != "none: starts at the server's current position" {
				t.Errorf("bind b: %q", d)
			}

			// Released: the checkpoint stays, the holder goes.
			if err := lease.Release(t.Context()); err != nil {
				t.Fatal(err)
			}
			rs = CheckCheckpoints(t.Context(), nc, bucket, []string{"a"}, now)
			if d := detail(rs, 0); d != "at 0/16B3748 of pg/1/db/slot, written 1m30s ago" {
				t.Errorf("after release: %q", d)
			}
		})
	}
}
