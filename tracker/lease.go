package tracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Leaser is implemented by checkpoint stores that can reserve a bind for one
// instance at a time. The tracker takes a bind's lease before it streams, so
// that a second trackerd on the same bind is fenced out at once with a clear
// message, instead of racing the first one for its checkpoint.
type Leaser interface {
	// Lease takes the lease of key for owner and keeps it until Release or
	// until ctx ends. A lease still held by the same owner (a restart after
	// a crash) is taken back at once. When another owner holds it, Lease
	// returns an error matching ErrFenced that names the holder.
	Lease(ctx context.Context, key, owner string) (Lease, error)
}

// Lease is a held lease.
type Lease interface {
	// Lost is closed if the lease was taken away (another instance took
	// over after this one stopped renewing it): the bind must stop.
	Lost() <-chan struct{}
	// Held reports whether the lease is certainly still this instance's:
	// renewed within its time to live, by this host's clock. A holder cut
	// off from the store cannot know whether another instance took it over
	// once that time has passed, so the tracker writes no checkpoint while
	// Held is false (until a renewal succeeds, or Lost is closed).
	Held() bool
	// Release gives the lease up.
	Release(ctx context.Context) error
}

// Lease implements [Leaser] with an advisory lock on a file beside the
// checkpoint file, held while the process runs: the kernel releases it
// when the process dies, so a restart after a crash takes it back at once.
func (s *FileStore) Lease(_ context.Context, key, owner string) (Lease, error) {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	path := s.path + "." + key + ".lease"
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: the bind is held by %s (lock %s): another trackerd is running it",
				ErrFenced, strings.TrimSpace(string(holder)), path)
		}
		return nil, fmt.Errorf("lease: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%s (pid %d)\n", owner, os.Getpid())
	}
	return &fileLease{f: f}, nil
}

type fileLease struct{ f *os.File }

func (l *fileLease) Lost() <-chan struct{} { return nil } // a lock held by the kernel is never lost

func (l *fileLease) Held() bool { return true }

func (l *fileLease) Release(context.Context) error {
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return l.f.Close()
}
