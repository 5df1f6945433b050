package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
)

var _ tracker.CheckpointRemover = (*KVStore)(nil)

// Remove implements [tracker.CheckpointRemover]: it purges key (value and
// history) if its revision is still revision, and "<key>.lease" when its
// lease has expired. A key already gone is no error.
func (s *KVStore) Remove(ctx context.Context, key string, revision uint64) error {
	err := s.retry(ctx, "remove", func(ctx context.Context, kv jetstream.KeyValue) error {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		case e.Revision() != revision:
			return tracker.ErrCheckpointConflict
		default:
			if err := kv.Purge(ctx, key, jetstream.LastRevision(revision)); err != nil {
				return err
			}
		}
		l, err := kv.Get(ctx, key+".lease")
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return nil
		case err != nil:
			return err
		}
		var lv leaseValue
		if json.Unmarshal(l.Value(), &lv) == nil && time.Now().Before(lv.Expires) {
			return nil // live: its holder's (the caller's own goes with Release)
		}
		return kv.Purge(ctx, key+".lease", jetstream.LastRevision(l.Revision()))
	})
	switch {
	case errors.Is(err, tracker.ErrCheckpointConflict), conflict(err):
		return fmt.Errorf("nats: remove checkpoint %s at revision %d: %w", key, revision, tracker.ErrCheckpointConflict)
	case err != nil:
		return fmt.Errorf("nats: remove checkpoint %s: %w", key, err)
	}
	return nil
}

// ReadCheckpoints lists the checkpoints of bind in bucket, each with the
// holder of its live lease, without changing anything: found is false
// when the bucket does not exist (no trackerd has written to it).
func ReadCheckpoints(ctx context.Context, nc *natsgo.Conn, bucket, bind string) (cps []tracker.StoredCheckpoint, found bool, err error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, false, fmt.Errorf("nats: %w", err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("nats: checkpoint bucket %s: %w", bucket, err)
	}
	cps, err = listCheckpoints(ctx, kv, bind, time.Now())
	if err != nil {
		return nil, true, fmt.Errorf("nats: the checkpoints of %s in bucket %s: %w", bind, bucket, err)
	}
	return cps, true, nil
}

// BucketExists reports whether the checkpoint bucket exists, without
// making it.
func BucketExists(ctx context.Context, nc *natsgo.Conn, bucket string) (bool, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return false, fmt.Errorf("nats: %w", err)
	}
	_, err = js.KeyValue(ctx, bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("nats: checkpoint bucket %s: %w", bucket, err)
	}
	return true, nil
}
