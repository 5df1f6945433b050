package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
)

// storeWait bounds how long teardown and reset wait for NATS.
const storeWait = 30 * time.Second

// cmdStore is the checkpoint store `trackerd run` would use, opened by a
// command that reads or changes checkpoints while no trackerd runs the
// bind (teardown, reset).
type cmdStore struct {
	// where says where the checkpoints are, for people.
	where string
	// store is nil when none exists yet (no bucket, no embedded server's
	// store): the binds have no checkpoint.
	store interface {
		tracker.CheckpointStore
		tracker.CheckpointLister
		tracker.CheckpointRemover
		tracker.Leaser
	}
	closers []func()
}

func (s *cmdStore) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// list returns the checkpoints of bind, none when there is no store.
func (s *cmdStore) list(ctx context.Context, bind string) ([]tracker.StoredCheckpoint, error) {
	if s.store == nil {
		return nil, nil
	}
	return s.store.ListCheckpoints(ctx, bind)
}

// openCmdStore opens cfg's checkpoint store: the checkpoint file with
// PUBLISH_MODE=core; else the CHECKPOINT_BUCKET of NATS_URL; else that of
// the embedded server of a running trackerd with the same DATA_DIR, or,
// when none runs, of an embedded server this command starts on the same
// store directory (on a free loopback port) and stops again. A bucket or
// store directory that does not exist yet is no store, and is not made.
func openCmdStore(ctx context.Context, cfg *config.Config, name string) (*cmdStore, error) {
	quiet := slog.New(slog.DiscardHandler)
	if cfg.PublishMode == string(natssink.Core) {
		path := cfg.CheckpointPath()
		return &cmdStore{where: "file " + path, store: tracker.NewFileStore(path)}, nil
	}
	s := &cmdStore{}
	url, co := cfg.NATSURL, connectOptions(cfg, quiet)
	co.Name = "trackerd " + name
	what := redactURL(url)
	if url == "" {
		eurl, eco, err := embeddedTarget(cfg, "trackerd "+name, quiet)
		switch {
		case err == nil && embeddedAnswers(ctx, eurl, eco):
			url, co, what = eurl, eco, "the embedded NATS server of the trackerd running with DATA_DIR "+cfg.DataDir
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return nil, err
		default:
			dir := cfg.NATSStoreDir
			if dir == "" {
				dir = filepath.Join(cfg.DataDir, "nats")
			}
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				s.where = "the embedded NATS server's store " + dir + ", which does not exist"
				return s, nil
			}
			creds, err := natsserver.ReadCredentials(filepath.Join(cfg.DataDir, natsserver.CredentialsFile))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("the embedded NATS server's credentials: %w", err)
			}
			e, err := natsserver.Start(ctx, natsserver.Options{Addr: "127.0.0.1:0", StoreDir: dir, User: creds.User, Password: creds.Password, Logger: quiet})
			if err != nil {
				return nil, fmt.Errorf("start the embedded NATS server on its store %s to read the checkpoints: %w", dir, err)
			}
			s.closers = append(s.closers, func() {
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				e.Shutdown(sctx)
			})
			url, what = e.ClientURL(), "the embedded NATS server's store "+dir
			co = embeddedConnectOptions("trackerd "+name, creds, quiet)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, storeWait)
	defer cancel()
	nc, err := natssink.Connect(cctx, url, co)
	if err != nil {
		s.close()
		return nil, err
	}
	s.closers = append(s.closers, nc.Close)
	for !nc.IsConnected() {
		if cctx.Err() != nil {
			s.close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("NATS at %s is not reachable (waited %v): the checkpoints cannot be read; start NATS, or correct NATS_URL", what, storeWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.where = fmt.Sprintf("bucket %s on %s", cfg.CheckpointBucket, what)
	if found, err := natssink.BucketExists(cctx, nc, cfg.CheckpointBucket); err != nil {
		s.close()
		return nil, err
	} else if !found {
		s.where = fmt.Sprintf("bucket %s on %s, which does not exist", cfg.CheckpointBucket, what)
		return s, nil
	}
	st, err := natssink.NewKVStore(cctx, nc, cfg.CheckpointBucket)
	if err != nil {
		s.close()
		return nil, err
	}
	s.store = st
	return s, nil
}

// embeddedAnswers reports whether a NATS server answers at url (a running
// trackerd's embedded server; nats.url may be a leftover of one that
// crashed).
func embeddedAnswers(ctx context.Context, url string, co natssink.ConnectOptions) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nc, err := natsgo.Connect(url, natsgo.Timeout(2*time.Second), natsgo.UserInfo(co.User, co.Password))
	if err != nil {
		return false
	}
	defer nc.Close()
	return nc.FlushWithContext(cctx) == nil
}
