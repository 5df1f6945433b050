package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/trackerd/trackerd/tracker"
)

// The control service's snapshot endpoints (see control.go): backfill,
// snapshots and cancel. Every instance receives each request (no queue
// group); backfill and cancel are answered only by the instance that runs
// the bind (for cancel without a bind, the one with the snapshot), so
// that a standby never answers in its place; snapshots by every instance,
// the asker gathering the answers.

// snapshotter is what the snapshot endpoints need of the tracker.
type snapshotter interface {
	Backfill(ctx context.Context, req tracker.BackfillRequest) (tracker.SnapshotInfo, error)
	CancelSnapshot(ctx context.Context, bind, id string) (tracker.SnapshotInfo, error)
	Snapshots() []tracker.SnapshotInfo
	// runs reports the binds this instance runs (holds the lease of).
	runs() []string
}

// trackerSnapshots is the snapshotter of a running tracker.
type trackerSnapshots struct{ *tracker.Tracker }

func (t trackerSnapshots) runs() []string {
	var out []string
	for _, s := range t.Stats() {
		if s.LeaseHolder != "" {
			out = append(out, s.Bind)
		}
	}
	return out
}

// backfillRequest is the backfill endpoint's request.
type backfillRequest struct {
	Bind   string   `json:"bind,omitempty"`
	Tables []string `json:"tables,omitempty"`
	Where  string   `json:"where,omitempty"`
}

// snapshotsRequest is the snapshots endpoint's request: Bind empty for
// every bind.
type snapshotsRequest struct {
	Bind string `json:"bind,omitempty"`
}

// cancelRequest is the cancel endpoint's request.
type cancelRequest struct {
	Bind string `json:"bind,omitempty"`
	ID   string `json:"id"`
}

// The micro error codes of the snapshot endpoints; the CLI turns
// codeBadRequest and codeNotFound into exit status 2.
const (
	codeBadRequest = "400" // a request the daemon cannot read; an unknown bind or table; a source that cannot snapshot
	codeNotFound   = "404" // no running snapshot with the id
	codeConflict   = "409" // a table is being read by another snapshot
	codeFailed     = "500" // anything else
)

// controlReply is what a snapshot endpoint handler answers: JSON, an
// error, or nothing (another instance answers).
type controlReply struct {
	silent bool
	data   any
	code   string
	err    string
}

func (r controlReply) send(req micro.Request) {
	switch {
	case r.silent:
	case r.code != "":
		_ = req.Error(r.code, r.err, nil)
	default:
		_ = req.RespondJSON(r.data)
	}
}

// errorReply maps an error of the tracker to its micro error.
func errorReply(err error) controlReply {
	code := codeFailed
	switch {
	case errors.Is(err, tracker.ErrUnknownSnapshot):
		code = codeNotFound
	case errors.Is(err, tracker.ErrSnapshotBusy):
		code = codeConflict
	case errors.Is(err, tracker.ErrSnapshotUnsupported), isConfigError(err):
		code = codeBadRequest
	}
	return controlReply{code: code, err: err.Error()}
}

// resolveBind returns the bind a request for bind is for, as
// Tracker.Backfill resolves it (empty: the only bind, or "default"), and
// whether this instance runs it.
func resolveBind(s snapshotter, bind string) (string, bool) {
	runs := s.runs()
	if bind == "" {
		if len(runs) == 1 {
			return runs[0], true
		}
		bind = "default"
	}
	return bind, slices.Contains(runs, bind)
}

func handleBackfill(ctx context.Context, s snapshotter, data []byte) controlReply {
	var req backfillRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return controlReply{code: codeBadRequest, err: fmt.Sprintf("backfill request: %v", err)}
	}
	bind, ok := resolveBind(s, req.Bind)
	if !ok {
		return controlReply{silent: true}
	}
	info, err := s.Backfill(ctx, tracker.BackfillRequest{Bind: bind, Tables: req.Tables, Where: req.Where})
	if err != nil {
		return errorReply(err)
	}
	return controlReply{data: info}
}

func handleSnapshots(s snapshotter, data []byte) controlReply {
	var req snapshotsRequest
	if len(data) > 0 {
		if err := json.Unmarshal(data, &req); err != nil {
			return controlReply{code: codeBadRequest, err: fmt.Sprintf("snapshots request: %v", err)}
		}
	}
	runs := s.runs()
	out := []tracker.SnapshotInfo{}
	for _, si := range s.Snapshots() {
		if slices.Contains(runs, si.Bind) && (req.Bind == "" || si.Bind == req.Bind) {
			out = append(out, si)
		}
	}
	return controlReply{data: out}
}

func handleCancel(ctx context.Context, s snapshotter, data []byte) controlReply {
	var req cancelRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return controlReply{code: codeBadRequest, err: fmt.Sprintf("cancel request: %v", err)}
	}
	if req.ID == "" {
		return controlReply{code: codeBadRequest, err: "cancel request: no snapshot id"}
	}
	bind := req.Bind
	if bind == "" {
		// The instance that runs a bind with a snapshot of that id.
		for _, si := range s.Snapshots() {
			if si.ID == req.ID && slices.Contains(s.runs(), si.Bind) {
				bind = si.Bind
			}
		}
		if bind == "" {
			return controlReply{silent: true}
		}
	} else if _, ok := resolveBind(s, bind); !ok {
		return controlReply{silent: true}
	}
	info, err := s.CancelSnapshot(ctx, bind, req.ID)
	if err != nil {
		return errorReply(err)
	}
	return controlReply{data: info}
}

// snapshotEndpoints are the control service's snapshot endpoints.
func snapshotEndpoints(s snapshotter) []controlEndpoint {
	timeout := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}
	return []controlEndpoint{
		{name: "backfill", everyInstance: true, about: `start a backfill: {"bind","tables","where"} -> the snapshot (the instance running the bind answers)`,
			handler: func(r micro.Request) {
				ctx, cancel := timeout()
				defer cancel()
				handleBackfill(ctx, s, r.Data()).send(r)
			}},
		{name: "snapshots", everyInstance: true, about: `the snapshots of this instance's binds, running and ended: {"bind"} -> [snapshot] (every instance answers)`,
			handler: func(r micro.Request) { handleSnapshots(s, r.Data()).send(r) }},
		{name: "cancel", everyInstance: true, about: `cancel a snapshot: {"bind","id"} -> the snapshot as it ended (the instance running it answers)`,
			handler: func(r micro.Request) {
				ctx, cancel := timeout()
				defer cancel()
				handleCancel(ctx, s, r.Data()).send(r)
			}},
	}
}
