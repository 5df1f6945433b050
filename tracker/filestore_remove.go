package tracker

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"syscall"
)

var _ CheckpointRemover = (*FileStore)(nil)

// Remove implements [CheckpointRemover]: it deletes key's record from the
// file if its revision is still revision (a missing record is no
// conflict), and key's lease file when nobody holds its lock. A lease this
// process holds through Lease keeps the file: call Remove again after its
// Release to delete it.
func (s *FileStore) Remove(ctx context.Context, key string, revision uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	all, err := s.read()
	if err != nil {
		return err
	}
	if r, ok := all[key]; ok {
		if r.Rev != revision {
			return ErrCheckpointConflict
		}
		delete(all, key)
		if err := s.write(all); err != nil {
			return err
		}
	}
	path := s.path + "." + key + ".lease"
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// flock locks belong to the open file: one this process holds through
	// Lease conflicts like another process's.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // held
		}
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
