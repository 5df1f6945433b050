package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// FileStore keeps checkpoints in one JSON file, for running the tracker
// without NATS. Writes go to a temporary file that is synced and renamed
// over the old one, under an advisory lock, so a crash never leaves a torn
// file and two processes sharing the file still get compare-and-set.
type FileStore struct {
	path string
	mu   sync.Mutex
}

// NewFileStore returns a store for the file at path; the file and its
// directory are created on the first Save.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

// Path returns the checkpoint file's path.
func (s *FileStore) Path() string { return s.path }

type fileRecord struct {
	Checkpoint
	Rev uint64 `json:"revision"`
}

// Load implements [CheckpointStore].
func (s *FileStore) Load(ctx context.Context, key string) (Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock(false)
	if err != nil {
		return Checkpoint{}, err
	}
	defer unlock()
	all, err := s.read()
	if err != nil {
		return Checkpoint{}, err
	}
	r, ok := all[key]
	if !ok {
		return Checkpoint{}, ErrNoCheckpoint
	}
	cp := r.Checkpoint
	cp.Revision = r.Rev
	return cp, nil
}

// Save implements [CheckpointStore].
func (s *FileStore) Save(ctx context.Context, key string, cp Checkpoint) (Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint file: %w", err)
	}
	unlock, err := s.lock(true)
	if err != nil {
		return Checkpoint{}, err
	}
	defer unlock()
	all, err := s.read()
	if err != nil {
		return Checkpoint{}, err
	}
	if all[key].Rev != cp.Revision {
		return Checkpoint{}, ErrCheckpointConflict
	}
	cp.Revision++
	all[key] = fileRecord{Checkpoint: cp, Rev: cp.Revision}
	if err := s.write(all); err != nil {
		return Checkpoint{}, err
	}
	return cp, nil
}

func (s *FileStore) read() (map[string]fileRecord, error) {
	all := make(map[string]fileRecord)
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint file: %w", err)
	}
	if len(data) == 0 {
		return all, nil
	}
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, fmt.Errorf("checkpoint file %s: %w", s.path, err)
	}
	return all, nil
}

func (s *FileStore) write(all map[string]fileRecord) error {
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".checkpoints-*")
	if err != nil {
		return fmt.Errorf("checkpoint file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint file: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("checkpoint file: %w", err)
	}
	if dir, err := os.Open(filepath.Dir(s.path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// lock takes an advisory lock on a sibling lock file, shared for reads and
// exclusive for writes, so that processes sharing the file serialise.
func (s *FileStore) lock(exclusive bool) (func(), error) {
	if !exclusive {
		if _, err := os.Stat(filepath.Dir(s.path)); errors.Is(err, fs.ErrNotExist) {
			return func() {}, nil
		}
	}
	f, err := os.OpenFile(s.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint lock: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoint lock: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

var _ CheckpointLister = (*FileStore)(nil)

// ListCheckpoints implements [CheckpointLister]: the checkpoints of bind in
// the file, with the holder of each one's lease lock.
func (s *FileStore) ListCheckpoints(ctx context.Context, bind string) ([]StoredCheckpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	all, err := s.read()
	if err != nil {
		return nil, err
	}
	prefix := Escape(bind) + "."
	var out []StoredCheckpoint
	for key, r := range all {
		if !strings.HasPrefix(key, prefix) || strings.Contains(key[len(prefix):], ".") {
			continue
		}
		cp := r.Checkpoint
		cp.Revision = r.Rev
		out = append(out, StoredCheckpoint{Key: key, Checkpoint: cp, Holder: s.leaseHolder(key)})
	}
	return out, nil
}

// leaseHolder returns who holds key's lease lock, empty when nobody does.
func (s *FileStore) leaseHolder(key string) string {
	path := s.path + "." + key + ".lease"
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return ""
	}
	holder, _ := os.ReadFile(path)
	if h := strings.TrimSpace(string(holder)); h != "" {
		return h
	}
	return "another process"
}
