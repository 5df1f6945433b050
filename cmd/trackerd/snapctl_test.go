package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/trackerd/trackerd/tracker"
)

// fakeSnapshots is a snapshotter without a database.
type fakeSnapshots struct {
	binds []string
	infos []tracker.SnapshotInfo
	err   error
	got   []string // the calls
}

func (f *fakeSnapshots) runs() []string { return f.binds }
func (f *fakeSnapshots) Snapshots() []tracker.SnapshotInfo {
	return f.infos
}
func (f *fakeSnapshots) Backfill(_ context.Context, req tracker.BackfillRequest) (tracker.SnapshotInfo, error) {
	f.got = append(f.got, fmt.Sprintf("backfill %s %v %q", req.Bind, req.Tables, req.Where))
	return tracker.SnapshotInfo{Bind: req.Bind, ID: "s9", State: tracker.SnapshotRunning, Tables: req.Tables}, f.err
}
func (f *fakeSnapshots) CancelSnapshot(_ context.Context, bind, id string) (tracker.SnapshotInfo, error) {
	f.got = append(f.got, fmt.Sprintf("cancel %s %s", bind, id))
	return tracker.SnapshotInfo{Bind: bind, ID: id, State: tracker.SnapshotCancelled}, f.err
}

func TestSnapshotEndpoints(t *testing.T) {
	infos := []tracker.SnapshotInfo{{Bind: "shop", ID: "s1", State: tracker.SnapshotRunning}, {Bind: "crm", ID: "s2", State: tracker.SnapshotCompleted}}
	tests := []struct {
		name     string
		binds    []string
		err      error
		endpoint string
		req      string
		wantCall string // "" for none
		wantCode string // "" for an answer
		silent   bool
	}{
		{"ok - backfill the only bind", []string{"shop"}, nil, "backfill", `{"tables":["public.orders"],"where":"id > 1"}`, `backfill shop [public.orders] "id > 1"`, "", false},
		{"ok - backfill a bind", []string{"shop", "crm"}, nil, "backfill", `{"bind":"crm"}`, `backfill crm [] ""`, "", false},
		{"silent - a bind another instance runs", []string{"shop"}, nil, "backfill", `{"bind":"crm"}`, "", "", true},
		{"silent - no bind given, several here, none default", []string{"shop", "crm"}, nil, "backfill", `{}`, "", "", true},
		{"error - unknown table", []string{"shop"}, tracker.ConfigError(errors.New(`table "x" is not followed`)), "backfill", `{"tables":["x"]}`, `backfill shop [x] ""`, codeBadRequest, false},
		{"error - unsupported source", []string{"shop"}, tracker.ErrSnapshotUnsupported, "backfill", `{}`, `backfill shop [] ""`, codeBadRequest, false},
		{"error - busy", []string{"shop"}, tracker.ErrSnapshotBusy, "backfill", `{}`, `backfill shop [] ""`, codeConflict, false},
		{"error - other", []string{"shop"}, errors.New("boom"), "backfill", `{}`, `backfill shop [] ""`, codeFailed, false},
		{"error - not JSON", []string{"shop"}, nil, "backfill", `tables`, "", codeBadRequest, false},
		{"ok - cancel by id finds the bind", []string{"shop", "crm"}, nil, "cancel", `{"id":"s2"}`, "cancel crm s2", "", false},
		{"silent - cancel of a snapshot elsewhere", []string{"shop"}, nil, "cancel", `{"id":"s7"}`, "", "", true},
		{"error - cancel unknown id of a bind here", []string{"shop"}, tracker.ErrUnknownSnapshot, "cancel", `{"bind":"shop","id":"s7"}`, "cancel shop s7", codeNotFound, false},
		{"error - cancel without id", []string{"shop"}, nil, "cancel", `{"bind":"shop"}`, "", codeBadRequest, false},
		{"ok - snapshots of binds run here", []string{"shop"}, nil, "snapshots", `{}`, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSnapshots{binds: tc.binds, infos: infos, err: tc.err}
			var r controlReply
			switch tc.endpoint {
			case "backfill":
				r = handleBackfill(t.Context(), f, []byte(tc.req))
			case "cancel":
				r = handleCancel(t.Context(), f, []byte(tc.req))
			case "snapshots":
				r = handleSnapshots(f, []byte(tc.req))
			}
			if got := strings.Join(f.got, "; "); got != tc.wantCall {
				t.Errorf("calls %q, want %q", got, tc.wantCall)
			}
			if r.silent != tc.silent || r.code != tc.wantCode {
				t.Fatalf("reply %+v, want silent=%v code %q", r, tc.silent, tc.wantCode)
			}
			if tc.wantCode != "" && r.err == "" {
				t.Errorf("error reply without a message")
			}
			if tc.endpoint == "snapshots" {
				b, _ := json.Marshal(r.data)
				if string(b) == "" || !strings.Contains(string(b), `"id":"s1"`) || strings.Contains(string(b), `"id":"s2"`) {
					t.Errorf("snapshots answer %s: want shop's only", b)
				}
			}
		})
	}
}

func TestBackfillFlags(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--list", "--cancel", "s1"}, "give one"},
		{[]string{"--list", "--table", "t"}, "do not go with"},
		{[]string{"--cancel", "s1", "--where", "id > 1"}, "do not go with"},
		{[]string{"--list", "--wait"}, "not with --list"},
		{[]string{"public.orders"}, "--table schema.table"},
		{[]string{"--timeout", "0s"}, "above 0"},
		{[]string{"--tabel", "x"}, "did you mean --table?"},
		{[]string{"--table", ""}, "invalid value"},
	}
	for _, tc := range tests {
		var out, errb strings.Builder
		err := cmdBackfill(t.Context(), tc.args, noEnv, &out, &errb)
		if err == nil || !isConfigError(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("backfill %q: %v, want a usage error (exit 2) saying %q", tc.args, err, tc.want)
		}
	}
}

func TestSnapshotLine(t *testing.T) {
	si := tracker.SnapshotInfo{Bind: "shop", ID: "s1", Kind: tracker.SnapshotBackfill, State: tracker.SnapshotRunning, Table: "public.orders",
		Tables: []string{"public.orders", "public.users"}, Rows: 12000, Estimated: 50000, RowsPerSecond: 1500}
	if got, want := snapshotLine(si, si.Started), "snapshot s1 of bind shop (backfill) running: 12,000 rows of about 50,000, reading public.orders, 0 of 2 tables, 1,500 rows/s"; got != want {
		t.Errorf("snapshotLine:\n got %s\nwant %s", got, want)
	}
}
