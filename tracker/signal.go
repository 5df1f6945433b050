package tracker

import (
	"context"
	"iter"
	"sync"
	"time"
)

// Receiver is an in-process receiver of one change. An error holds the
// bind's pipeline: the receiver is called again with the same change, with
// backoff, until it returns nil or the tracker stops. It never drops a
// change.
type Receiver func(ctx context.Context, c Change) error

// TxReceiver is an in-process receiver of a whole transaction, with the
// same retry rule as [Receiver].
type TxReceiver func(ctx context.Context, tx Tx) error

// Tx is a transaction as a [TxReceiver] sees it. Its changes are read from
// the tracker's transaction buffer (which may be on disk for large
// transactions), so iterate them with [Tx.Changes] rather than keeping them.
type Tx struct {
	// Bind is the bind key.
	Bind string
	// TxID and TxKey identify the transaction (see [Change]).
	TxID  string
	TxKey string
	// CommitTime is the commit time where known.
	CommitTime time.Time
	// Pos is the position the checkpoint moves to once the transaction is
	// durable.
	Pos string
	// Total is the number of changes Changes yields.
	Total int

	changes func(yield func(Change, error) bool)
}

// Changes yields the transaction's changes in order. It can be iterated
// more than once; an error (reading a spilled transaction back) ends it.
func (tx Tx) Changes() iter.Seq2[Change, error] {
	return func(yield func(Change, error) bool) {
		if tx.changes != nil {
			tx.changes(yield)
		}
	}
}

// Signal is one of the tracker's two signals, as Flask's
// before_models_committed and models_committed are. Receivers are called in
// the order they were connected. It is safe for concurrent use; receivers
// connected while the tracker runs take effect from the next change.
type Signal struct {
	mu    sync.RWMutex
	next  int
	recvs []signalEntry
}

type signalEntry struct {
	id int
	fn Receiver
	tx TxReceiver
}

// Connect adds a per-change receiver and returns a function that
// disconnects it.
func (s *Signal) Connect(fn Receiver) (disconnect func()) {
	return s.add(signalEntry{fn: fn})
}

// ConnectTx adds a whole-transaction receiver, called once per transaction
// after the per-change receivers have seen its changes, and returns a
// function that disconnects it.
func (s *Signal) ConnectTx(fn TxReceiver) (disconnect func()) {
	return s.add(signalEntry{tx: fn})
}

func (s *Signal) add(e signalEntry) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	e.id = s.next
	// Copy on write: a running assembler iterates its snapshot unlocked.
	s.recvs = append(s.recvs[:len(s.recvs):len(s.recvs)], e)
	var once sync.Once
	return func() { once.Do(func() { s.remove(e.id) }) }
}

func (s *Signal) remove(id int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]signalEntry, 0, len(s.recvs))
	for _, e := range s.recvs {
		if e.id != id {
			out = append(out, e)
		}
	}
	s.recvs = out
}

// snapshot returns the current receivers; the slice must not be modified.
func (s *Signal) snapshot() []signalEntry {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.recvs
}

// hasChange and hasTx report which kinds of receivers a snapshot holds.
func hasKinds(rs []signalEntry) (change, tx bool) {
	for _, e := range rs {
		if e.fn != nil {
			change = true
		}
		if e.tx != nil {
			tx = true
		}
	}
	return change, tx
}
