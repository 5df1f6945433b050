package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

// snapInfo is a snapshot of bind with per-table rows and estimates.
func snapInfo(bind, id, state string, rows, est map[string]int64) tracker.SnapshotInfo {
	si := tracker.SnapshotInfo{Bind: bind, ID: id, Kind: tracker.SnapshotBackfill, State: state, TableRows: rows, TableEstimated: est, Estimated: -1}
	for t := range est {
		si.Tables = append(si.Tables, t)
	}
	slices.Sort(si.Tables)
	return si
}

// The snapshot metrics, scrape after scrape, through a pedantic registry:
// trackerd_snapshot_rows_total sums every snapshot's rows per bind and
// table and never goes down, not when a bind's pipeline restarts (its
// snapshot list starts empty, a resumed snapshot counts from 0 again),
// nor when an ended snapshot falls off the list; the estimate is the
// running snapshot's, else the latest's, absent while unknown; the running
// gauge counts per bind.
func TestSnapshotMetrics(t *testing.T) {
	type scrape struct {
		name  string
		binds []tracker.BindStats
		rows  map[string]float64 // "bind table" -> trackerd_snapshot_rows_total
		est   map[string]float64 // "bind table" -> trackerd_snapshot_rows_estimated
		run   map[string]float64 // bind -> trackerd_snapshots_running
	}
	const R, C = tracker.SnapshotRunning, tracker.SnapshotCompleted
	bind := func(key string, snaps ...tracker.SnapshotInfo) tracker.BindStats {
		return tracker.BindStats{Bind: key, State: tracker.StateStreaming, Snapshots: snaps}
	}
	est := map[string]int64{"public.orders": 1000, "public.users": -1}
	scrapes := []scrape{
		{name: "no snapshot yet", binds: []tracker.BindStats{bind("shop"), bind("crm")},
			rows: map[string]float64{}, est: map[string]float64{}, run: map[string]float64{"shop": 0, "crm": 0}},
		{name: "a backfill reads orders",
			binds: []tracker.BindStats{bind("shop", snapInfo("shop", "b1", R, map[string]int64{"public.orders": 100}, est)), bind("crm")},
			rows:  map[string]float64{"shop public.orders": 100}, est: map[string]float64{"shop public.orders": 1000},
			run: map[string]float64{"shop": 1, "crm": 0}},
		{name: "it goes on",
			binds: []tracker.BindStats{bind("shop", snapInfo("shop", "b1", R, map[string]int64{"public.orders": 250}, est)), bind("crm")},
			rows:  map[string]float64{"shop public.orders": 250}, est: map[string]float64{"shop public.orders": 1000},
			run: map[string]float64{"shop": 1, "crm": 0}},
		{name: "the bind's pipeline restarts: its list is empty",
			binds: []tracker.BindStats{bind("shop"), bind("crm")},
			rows:  map[string]float64{"shop public.orders": 250}, est: map[string]float64{}, run: map[string]float64{"shop": 0, "crm": 0}},
		{name: "the backfill resumes, counting from 0",
			binds: []tracker.BindStats{bind("shop", snapInfo("shop", "b1", R, map[string]int64{"public.orders": 30}, est)), bind("crm")},
			rows:  map[string]float64{"shop public.orders": 280}, est: map[string]float64{"shop public.orders": 1000},
			run: map[string]float64{"shop": 1, "crm": 0}},
		{name: "another restart between two scrapes: the count is lower",
			binds: []tracker.BindStats{bind("shop", snapInfo("shop", "b1", R, map[string]int64{"public.orders": 20}, est)), bind("crm")},
			rows:  map[string]float64{"shop public.orders": 300}, est: map[string]float64{"shop public.orders": 1000},
			run: map[string]float64{"shop": 1, "crm": 0}},
		{name: "it ends; a second backfill of orders, and one of users on crm",
			binds: []tracker.BindStats{
				bind("shop", snapInfo("shop", "b1", C, map[string]int64{"public.orders": 900, "public.users": 7}, est),
					snapInfo("shop", "b2", R, map[string]int64{"public.orders": 5}, map[string]int64{"public.orders": 1200})),
				bind("crm", snapInfo("crm", "b3", R, map[string]int64{"public.users": 4}, map[string]int64{"public.users": 10}))},
			rows: map[string]float64{"shop public.orders": 300 + 880 + 5, "shop public.users": 7, "crm public.users": 4},
			est:  map[string]float64{"shop public.orders": 1200, "crm public.users": 10},
			run:  map[string]float64{"shop": 1, "crm": 1}},
		{name: "the second ends, with a lower estimate: the latest wins",
			binds: []tracker.BindStats{
				bind("shop", snapInfo("shop", "b1", C, map[string]int64{"public.orders": 900, "public.users": 7}, est),
					snapInfo("shop", "b2", C, map[string]int64{"public.orders": 1100}, map[string]int64{"public.orders": 1100})),
				bind("crm", snapInfo("crm", "b3", C, map[string]int64{"public.users": 10}, map[string]int64{"public.users": 10}))},
			rows: map[string]float64{"shop public.orders": 1185 + 1095, "shop public.users": 7, "crm public.users": 10},
			est:  map[string]float64{"shop public.orders": 1100, "crm public.users": 10},
			run:  map[string]float64{"shop": 0, "crm": 0}},
		{name: "the ended snapshots fall off the lists: the counter stays",
			binds: []tracker.BindStats{bind("shop"), bind("crm")},
			rows:  map[string]float64{"shop public.orders": 2280, "shop public.users": 7, "crm public.users": 10},
			est:   map[string]float64{}, run: map[string]float64{"shop": 0, "crm": 0}},
	}
	var now []tracker.BindStats
	m := &metrics{stats: func() []tracker.BindStats { return now }}
	for _, sc := range scrapes {
		now = sc.binds
		got := gather(t, m)
		values := func(name string, gauge bool) map[string]float64 {
			out := map[string]float64{}
			for _, x := range got[name] {
				k := label(x, "bind")
				if tb := label(x, "table"); tb != "" {
					k += " " + tb
				}
				if gauge {
					out[k] = x.GetGauge().GetValue()
				} else {
					if x.GetCounter() == nil {
						t.Fatalf("%s: %s is not a counter", sc.name, name)
					}
					out[k] = x.GetCounter().GetValue()
				}
			}
			return out
		}
		for _, c := range []struct {
			name  string
			gauge bool
			want  map[string]float64
		}{
			{"trackerd_snapshot_rows_total", false, sc.rows},
			{"trackerd_snapshot_rows_estimated", true, sc.est},
			{"trackerd_snapshots_running", true, sc.run},
		} {
			if g := values(c.name, c.gauge); !mapsEqual(g, c.want) {
				t.Errorf("%s: %s = %v, want %v", sc.name, c.name, g, c.want)
			}
		}
	}
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A bind's snapshots in the status document: every one, running and
// ended, with the estimate only when known and the time left of a running
// one from the rows its unread tables are estimated to hold; in `trackerd
// status`'s text, a line under the bind per running snapshot.
func TestSnapshotStatus(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := tracker.BindStats{Bind: "shop", State: tracker.StateSnapshotting, StateSince: now.Add(-time.Minute), Lag: tracker.Lag{Bytes: -1},
		Snapshots: []tracker.SnapshotInfo{
			{Bind: "shop", ID: "initial-0f0f0f0f", Kind: tracker.SnapshotInitial, State: tracker.SnapshotFailed, Tables: []string{"public.orders"},
				Rows: 10, Estimated: -1, Started: now.Add(-time.Hour), Ended: now.Add(-50 * time.Minute), Error: "read public.orders: boom",
				TableRows: map[string]int64{"public.orders": 10}, TableEstimated: map[string]int64{"public.orders": -1}},
			{Bind: "shop", ID: "backfill-1a2b3c4d", Kind: tracker.SnapshotBackfill, State: tracker.SnapshotRunning, Table: "public.orders",
				Tables: []string{"public.items", "public.orders", "public.users"}, Done: []string{"public.items"},
				Rows: 170000, Estimated: 2100000, RowsPerSecond: 85000, Started: now.Add(-2 * time.Second),
				TableRows:      map[string]int64{"public.items": 50000, "public.orders": 120000},
				TableEstimated: map[string]int64{"public.items": 40000, "public.orders": 2000000, "public.users": 60000}},
		}}
	b := bindFromStats(s, now)
	if len(b.Snapshots) != 2 {
		t.Fatalf("%d snapshots, want 2: %+v", len(b.Snapshots), b.Snapshots)
	}
	failed, running := b.Snapshots[0], b.Snapshots[1]
	if failed.Estimated != nil || failed.ETASeconds != nil || failed.EndedAt == nil || failed.Error == "" || failed.State != "failed" || failed.Kind != "initial" {
		t.Errorf("the failed snapshot: %+v", failed)
	}
	// (2,000,000 - 120,000 + 60,000) rows left at 85,000 rows/s.
	if running.Estimated == nil || *running.Estimated != 2100000 || running.ETASeconds == nil || *running.ETASeconds != 23 ||
		running.TablesDone != 1 || running.Tables != 3 || running.EndedAt != nil {
		t.Errorf("the running snapshot: %+v", running)
	}

	js, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Snapshots []map[string]any `json:"snapshots"`
	}
	json.Unmarshal(js, &raw)
	for _, key := range []string{"id", "kind", "state", "table", "tables_done", "tables", "rows", "estimated", "rows_per_second", "eta_seconds", "started_at"} {
		if _, ok := raw.Snapshots[1][key]; !ok {
			t.Errorf("the running snapshot's JSON lacks %q: %s", key, js)
		}
	}
	for _, key := range []string{"estimated", "eta_seconds", "table"} {
		if _, ok := raw.Snapshots[0][key]; ok {
			t.Errorf("the failed snapshot's JSON has %q: %s", key, js)
		}
	}
	if _, ok := raw.Snapshots[0]["ended_at"]; !ok {
		t.Errorf("the failed snapshot's JSON lacks ended_at: %s", js)
	}

	var out strings.Builder
	writeStatus(&out, statusDoc{Time: now, Binds: []bindStatus{b}}, "test")
	want := "shop: snapshot backfill-1a2b3c4d running public.orders (1/3 tables) 170,000/2,100,000 rows 85,000 rows/s eta 23 s\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("status text lacks\n%swhere it says\n%s", want, out.String())
	}
	if strings.Contains(out.String(), "initial-0f0f0f0f") {
		t.Errorf("status text shows the ended snapshot:\n%s", out.String())
	}

	// Unknown estimates and no rate yet: no estimate, no time left.
	s.Snapshots[1].RowsPerSecond, s.Snapshots[1].Estimated, s.Snapshots[1].Where = 0, -1, "id > 5"
	s.Snapshots[1].TableEstimated["public.users"] = -1
	line := snapshotStatusLine(bindFromStats(s, now).Snapshots[1])
	if want := "snapshot backfill-1a2b3c4d running public.orders (1/3 tables) 170,000 rows 0 rows/s where id > 5"; line != want {
		t.Errorf("line\n got %s\nwant %s", line, want)
	}
}
