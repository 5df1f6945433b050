package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire/token"
)

// Check reports, for `trackerd check`, whether NATS is ready for a sink with
// options o, without changing anything: the connection, JetStream (in
// JetStream mode), and the stream (present and capturing "<prefix>.>", or
// missing and to be created). ctx bounds the whole check; without a
// deadline, each request waits at most o.AckTimeout.
func Check(ctx context.Context, nc *natsgo.Conn, o Options) []tracker.CheckResult {
	s, err := newSink(connTransport{nc}, nil, o)
	if err != nil {
		return []tracker.CheckResult{{Name: "NATS options", Detail: err.Error(), Fix: "correct the setting the error names"}}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.o.AckTimeout)
		defer cancel()
	}
	conn := tracker.CheckResult{Name: "NATS connection", OK: nc.IsConnected()}
	if !conn.OK {
		// Connect returns at once when the server is down: give it the
		// check's time to come up.
		for !nc.IsConnected() && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		conn.OK = nc.IsConnected()
	}
	if !conn.OK {
		conn.Detail = "not connected: " + nc.Status().String()
		conn.Fix = "start NATS, or correct NATS_URL and the NATS_* credentials"
		return []tracker.CheckResult{conn}
	}
	conn.Detail = fmt.Sprintf("connected to %s (server %s, max_payload %d bytes)", nc.ConnectedUrlRedacted(), nc.ConnectedServerVersion(), nc.MaxPayload())
	results := []tracker.CheckResult{conn}
	if s.o.Mode == Core {
		return results
	}

	js, err := jetstream.New(nc)
	if err != nil {
		return append(results, tracker.CheckResult{Name: "JetStream", Detail: err.Error(), Fix: "enable JetStream, or set PUBLISH_MODE=core"})
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return append(results, tracker.CheckResult{Name: "JetStream", Detail: err.Error(),
			Fix: "enable JetStream on the server (jetstream {} in its configuration) and for this account, or set PUBLISH_MODE=core"})
	}
	results = append(results, tracker.CheckResult{Name: "JetStream", OK: true, Detail: "enabled"})

	name, want := s.o.Stream.Name, s.subjects.StreamSubject()
	res := tracker.CheckResult{Name: "stream " + name}
	st, err := js.Stream(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		res.OK, res.Detail = true, fmt.Sprintf("missing: created at start with subjects %s", want)
	case err != nil:
		res.Detail, res.Fix = err.Error(), "check the NATS account's JetStream permissions"
	default:
		cfg := st.CachedInfo().Config
		switch {
		case !anyCovers(cfg.Subjects, want):
			res.Detail = fmt.Sprintf("subjects [%s] do not capture %s", strings.Join(cfg.Subjects, " "), want)
			res.Fix = fmt.Sprintf("add %s to the stream's subjects, or set STREAM_NAME to a stream that captures them", want)
		case cfg.NoAck:
			res.Detail, res.Fix = "does not acknowledge publishes (no_ack)", "turn no_ack off, or set PUBLISH_MODE=core"
		default:
			res.OK = true
			res.Detail = fmt.Sprintf("captures %s, duplicate window %v", want, cfg.Duplicates)
			if cfg.Duplicates != s.o.Stream.DuplicateWindow {
				res.Detail += fmt.Sprintf(" (DUPLICATE_WINDOW is %v: the stream's is used)", s.o.Stream.DuplicateWindow)
			}
			results = append(results, res)
			res = durability(name, cfg.Replicas, cfg.Storage)
		}
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		results = append(results, res)
		res = durability(name, s.o.Stream.Replicas, jetstream.FileStorage)
	}
	return append(results, res)
}

// durability reports whether a stream can lose acknowledged events on a
// power loss of its server's host (F7). One replica on a file store is
// synced to disk every sync_interval (2 minutes by default; `always` syncs
// every write): events acknowledged since the last sync, which the
// checkpoint (and a PostgreSQL slot) may already be past, go with the page
// cache. trackerd cannot read the server's sync_interval, so it advises.
func durability(stream string, replicas int, storage jetstream.StorageType) tracker.CheckResult {
	r := tracker.CheckResult{Name: "stream " + stream + " durability", OK: true}
	switch {
	case storage == jetstream.MemoryStorage:
		r.Warn = true
		r.Detail = "memory storage: a restart of the NATS server loses every event"
		r.Fix = "use a file-storage stream"
	case replicas <= 1:
		r.Warn = true
		r.Detail = "one replica: an event is acknowledged before it reaches the disk, at the server's next sync (sync_interval, 2 minutes by default), so a power loss of the NATS host can lose events the checkpoint is already past"
		r.Fix = "replicate the stream (STREAM_REPLICAS=3 on a JetStream cluster), or give the server `jetstream { sync_interval: always }` (trackerd cannot read this setting)"
	default:
		r.Detail = fmt.Sprintf("%d replicas: an acknowledged event is on a quorum of servers", replicas)
	}
	return r
}

// CheckCheckpoints reports, for `trackerd check`, where each bind would
// resume: the checkpoints stored for it in bucket (position, source and
// age) and whether a running trackerd holds its lease. It changes nothing;
// a missing bucket or checkpoint means the bind starts at its server's
// current position. now is the reference time for ages.
func CheckCheckpoints(ctx context.Context, nc *natsgo.Conn, bucket string, bindKeys []string, now time.Time) []tracker.CheckResult {
	js, err := jetstream.New(nc)
	if err != nil {
		return []tracker.CheckResult{{Name: "checkpoints", Detail: err.Error(), Fix: "enable JetStream"}}
	}
	kv, err := js.KeyValue(ctx, bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return []tracker.CheckResult{{Name: "checkpoints", OK: true,
			Detail: fmt.Sprintf("bucket %s does not exist yet: every bind starts at its server's current position", bucket)}}
	case err != nil:
		return []tracker.CheckResult{{Name: "checkpoints", Detail: fmt.Sprintf("bucket %s: %v", bucket, err),
			Fix: "check the NATS account's JetStream permissions"}}
	}
	var results []tracker.CheckResult
	for _, b := range bindKeys {
		res := tracker.CheckResult{Name: "checkpoint of " + b, OK: true}
		details, err := bindCheckpoints(ctx, kv, b, now)
		if err != nil {
			res.OK, res.Detail, res.Fix = false, err.Error(), "check the NATS account's JetStream permissions"
		} else {
			res.Detail = strings.Join(details, "; ")
		}
		results = append(results, res)
	}
	return results
}

// bindCheckpoints describes the checkpoints and lease of bind in kv. A bind
// has one checkpoint per source identity it has followed (usually one).
func bindCheckpoints(ctx context.Context, kv jetstream.KeyValue, bind string, now time.Time) ([]string, error) {
	cps, err := listCheckpoints(ctx, kv, bind, now)
	if err != nil {
		return nil, err
	}
	var out, holders []string
	for _, cp := range cps {
		if cp.Source == "" {
			out = append(out, fmt.Sprintf("%s: not a checkpoint", cp.Key))
			continue
		}
		if cp.Position == "" {
			out = append(out, fmt.Sprintf("of %s, no position yet (starts at the server's current position), written %s ago", cp.Source, now.Sub(cp.Time).Round(time.Second)))
		} else {
			out = append(out, fmt.Sprintf("at %s of %s, written %s ago", cp.Position, cp.Source, now.Sub(cp.Time).Round(time.Second)))
		}
		if cp.Holder != "" {
			holders = append(holders, "held by a running trackerd ("+cp.Holder+")")
		}
	}
	if len(out) == 0 {
		out = []string{"none: starts at the server's current position"}
	}
	return append(out, holders...), nil
}

// listCheckpoints reads the checkpoints of bind in kv, each with the holder
// of its live lease (one whose expiry is after now).
func listCheckpoints(ctx context.Context, kv jetstream.KeyValue, bind string, now time.Time) ([]tracker.StoredCheckpoint, error) {
	lister, err := kv.ListKeysFiltered(ctx, token.Escape(bind)+".>")
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() { // closed, and the lister stopped, at the end or when ctx ends
		keys = append(keys, k)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list the keys of %s: %w", bind, err)
	}
	holders := map[string]string{}
	var out []tracker.StoredCheckpoint
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if base, ok := strings.CutSuffix(k, ".lease"); ok {
			var l leaseValue
			if json.Unmarshal(e.Value(), &l) == nil && l.Expires.After(now) {
				holders[base] = fmt.Sprintf("%s, pid %d", l.Owner, l.PID)
			}
			continue
		}
		sc := tracker.StoredCheckpoint{Key: k}
		if json.Unmarshal(e.Value(), &sc.Checkpoint) == nil {
			sc.Revision = e.Revision()
		} else {
			sc.Checkpoint = tracker.Checkpoint{}
		}
		out = append(out, sc)
	}
	for i := range out {
		out[i].Holder = holders[out[i].Key]
	}
	return out, nil
}

// LeaseHolders returns, for `trackerd status`, the holder of each bind's
// live lease in bucket ("owner, pid N"), by bind key; a bind no running
// trackerd holds is left out. It changes nothing: a missing bucket holds no
// lease.
func LeaseHolders(ctx context.Context, nc *natsgo.Conn, bucket string, bindKeys []string, now time.Time) (map[string]string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return map[string]string{}, nil
	case err != nil:
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	out := map[string]string{}
	for _, b := range bindKeys {
		cps, err := listCheckpoints(ctx, kv, b, now)
		if err != nil {
			return nil, fmt.Errorf("bucket %s, bind %s: %w", bucket, b, err)
		}
		for _, cp := range cps {
			if cp.Holder != "" {
				out[b] = cp.Holder
				break
			}
		}
	}
	return out, nil
}
