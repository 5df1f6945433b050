package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/internal/backoff"
	"github.com/trackerd/trackerd/tracker"
)

// KVHistory is the number of revisions the checkpoint bucket keeps per key.
const KVHistory = 5

// kvAttempt bounds one request to the bucket.
const kvAttempt = 5 * time.Second

var validBucket = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// KVStore keeps tracker checkpoints in a NATS JetStream key-value bucket
// (CHECKPOINT_BUCKET): the value is the JSON of a [tracker.Checkpoint], its
// revision the KV revision, and Save is compare-and-set on it, so that a
// second instance writing the same bind's checkpoint is fenced out with
// [tracker.ErrCheckpointConflict]. It implements [tracker.CheckpointStore]
// and is safe for concurrent use.
//
// Load and Save wait for NATS: a failure that retrying may cure (no
// connection, a timeout, JetStream unavailable) is retried with back-off
// until it succeeds or ctx ends. A Save whose answer was lost and that
// then meets a conflict checks whether the stored value is its own, and
// succeeds if so.
type KVStore struct {
	js     jetstream.JetStream
	bucket string
	log    *slog.Logger

	mu sync.Mutex
	kv jetstream.KeyValue
}

var (
	_ tracker.CheckpointStore  = (*KVStore)(nil)
	_ tracker.CheckpointLister = (*KVStore)(nil)
)

// KVOption is an option of NewKVStore.
type KVOption func(*KVStore)

// KVLogger makes the store log to l (retries, at warn then debug).
func KVLogger(l *slog.Logger) KVOption {
	return func(s *KVStore) {
		if l != nil {
			s.log = l
		}
	}
}

// NewKVStore returns the checkpoint store of bucket, creating the bucket
// (file storage, history KVHistory) when it is missing. Like [New], it does
// not wait for NATS: when nc is not connected, the bucket is looked up on
// first use. Errors that retrying cannot fix match [tracker.ErrConfig].
func NewKVStore(ctx context.Context, nc *natsgo.Conn, bucket string, opts ...KVOption) (*KVStore, error) {
	if !validBucket.MatchString(bucket) {
		return nil, tracker.ConfigError(fmt.Errorf("nats: CHECKPOINT_BUCKET %q: want letters, digits, - and _", bucket))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	s := &KVStore{js: js, bucket: bucket, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	if nc.IsConnected() {
		actx, cancel := context.WithTimeout(ctx, kvAttempt)
		defer cancel()
		if _, err := s.bind(actx); err != nil {
			if !transient(err) || jetStreamMissing(err) {
				return nil, tracker.ConfigError(fmt.Errorf("nats: checkpoint bucket %s: %w", bucket, err))
			}
			s.log.Warn("cannot open the checkpoint bucket yet: trying again on first use", slog.Any("err", err))
		}
	}
	return s, nil
}

// bind opens the bucket, creating it when missing.
func (s *KVStore) bind(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	kv, err := s.js.KeyValue(ctx, s.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      s.bucket,
			Description: "trackerd checkpoints",
			History:     KVHistory,
			Storage:     jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.js.KeyValue(ctx, s.bucket)
		}
	}
	if err != nil {
		return nil, err
	}
	s.kv = kv
	return kv, nil
}

// transient reports an error that retrying may cure.
func transient(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, natsgo.ErrTimeout),
		errors.Is(err, natsgo.ErrNoResponders), errors.Is(err, natsgo.ErrConnectionReconnecting),
		errors.Is(err, natsgo.ErrDisconnected), errors.Is(err, natsgo.ErrReconnectBufExceeded),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), isUnavailable(err):
		return true
	}
	return false
}

// retry runs op until it succeeds, fails for good, or ctx ends; each
// attempt is bounded by kvAttempt.
func (s *KVStore) retry(ctx context.Context, what string, op func(ctx context.Context, kv jetstream.KeyValue) error) error {
	bo := backoff.Publish.New()
	var warned time.Time
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, kvAttempt)
		kv, err := s.bind(actx)
		if err == nil {
			err = op(actx, kv)
		}
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		level := slog.LevelDebug
		if time.Since(warned) >= warnEvery {
			level, warned = slog.LevelWarn, time.Now()
		}
		s.log.Log(ctx, level, "checkpoint store unavailable: retrying", slog.String("op", what), slog.Int("attempt", attempt), slog.Any("err", err))
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}

// Load returns the checkpoint stored under key, with its revision, or
// tracker.ErrNoCheckpoint.
func (s *KVStore) Load(ctx context.Context, key string) (tracker.Checkpoint, error) {
	var cp tracker.Checkpoint
	err := s.retry(ctx, "load", func(ctx context.Context, kv jetstream.KeyValue) error {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(e.Value(), &cp); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		cp.Revision = e.Revision()
		return nil
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return tracker.Checkpoint{}, tracker.ErrNoCheckpoint
	case err != nil:
		return tracker.Checkpoint{}, fmt.Errorf("nats: load checkpoint %s: %w", key, err)
	}
	return cp, nil
}

// Save stores cp under key if the stored revision is cp.Revision (0: no
// checkpoint yet), and returns it with its new revision; otherwise it
// returns tracker.ErrCheckpointConflict.
func (s *KVStore) Save(ctx context.Context, key string, cp tracker.Checkpoint) (tracker.Checkpoint, error) {
	value, err := json.Marshal(cp)
	if err != nil {
		return tracker.Checkpoint{}, fmt.Errorf("nats: save checkpoint %s: %w", key, err)
	}
	var (
		rev       uint64
		ambiguous bool // an earlier attempt may have been applied
	)
	err = s.retry(ctx, "save", func(ctx context.Context, kv jetstream.KeyValue) error {
		var err error
		if cp.Revision == 0 {
			rev, err = kv.Create(ctx, key, value)
		} else {
			rev, err = kv.Update(ctx, key, value, cp.Revision)
		}
		if conflict(err) && ambiguous {
			// Was it ours? Then the lost answer was a success.
			if e, gerr := kv.Get(ctx, key); gerr == nil && bytes.Equal(e.Value(), value) {
				rev, err = e.Revision(), nil
			}
		}
		if transient(err) {
			ambiguous = true
		}
		return err
	})
	switch {
	case conflict(err):
		return tracker.Checkpoint{}, fmt.Errorf("nats: save checkpoint %s at revision %d: %w", key, cp.Revision, tracker.ErrCheckpointConflict)
	case err != nil:
		return tracker.Checkpoint{}, fmt.Errorf("nats: save checkpoint %s: %w", key, err)
	}
	cp.Revision = rev
	return cp, nil
}

// conflict reports a failed compare-and-set.
func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// ListCheckpoints implements [tracker.CheckpointLister]: every checkpoint of
// bind in the bucket, whatever its source identity, with the holder of its
// live lease.
func (s *KVStore) ListCheckpoints(ctx context.Context, bind string) ([]tracker.StoredCheckpoint, error) {
	var out []tracker.StoredCheckpoint
	err := s.retry(ctx, "list", func(ctx context.Context, kv jetstream.KeyValue) error {
		var err error
		out, err = listCheckpoints(ctx, kv, bind, time.Now())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nats: list the checkpoints of %s: %w", bind, err)
	}
	return out, nil
}
