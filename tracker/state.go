package tracker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// SourceState is what a source says of its connection to its server,
// through SourceOptions.Report.
type SourceState string

// The states a source reports.
const (
	// SourceConnecting: connecting for the first time.
	SourceConnecting SourceState = "connecting"
	// SourceCreatingSlot: PostgreSQL creates the bind's replication slot,
	// which waits for every transaction open at that moment to end.
	SourceCreatingSlot SourceState = "creating_slot"
	// SourceStreaming: reading the replication stream.
	SourceStreaming SourceState = "streaming"
	// SourceReconnecting: the connection broke; the source retries with
	// back-off and resumes after the last position it handed over.
	SourceReconnecting SourceState = "reconnecting"
)

// SourceStatus is a source's report of a change of its state.
type SourceStatus struct {
	State SourceState
	// Detail says more in words, e.g. "PostgreSQL waits for transactions
	// open since 12:00:03 (pid 4242) before it creates the slot".
	Detail string
	// Err is what broke the connection (SourceReconnecting).
	Err error
	// Position is where the source streams from (SourceStreaming).
	Position string
}

// The states a bind goes through, as BindStats.State reports them
// (the README, "Operating trackerd").
const (
	StateStarting       = "starting"
	StateCreatingSlot   = "creating_slot"
	StateSnapshotting   = "snapshotting"
	StateStreaming      = "streaming"
	StateReconnecting   = "reconnecting"
	StateWaitingForNATS = "waiting_for_nats"
	StateStopping       = "stopping"
	StateStopped        = "stopped"
	StateFailed         = "failed"
)

// States lists every bind state, in the order above.
var States = []string{StateStarting, StateCreatingSlot, StateSnapshotting, StateStreaming, StateReconnecting,
	StateWaitingForNATS, StateStopping, StateStopped, StateFailed}

// stillEvery is how often a bind that stays reconnecting says so again.
const stillEvery = 30 * time.Second

// bindState is a bind's state: the pipeline's phase (starting, running,
// stopping, stopped, failed) combined with what its source and its lane
// report. It is safe for concurrent use; the source reports from its
// goroutine, Stats reads from any.
type bindState struct {
	log *slog.Logger

	mu         sync.Mutex
	phase      string // StateStarting, StateStreaming (running), StateStopping, StateStopped, StateFailed
	src        SourceState
	detail     string
	since      time.Time // when State last changed
	lastErr    string
	lastErrAt  time.Time
	reconnects uint64
	lastWarn   time.Time
	shown      string // the state last returned, for since
	// sinkDown is set while the sink cannot publish (ReadySink): a
	// streaming bind then waits for NATS.
	sinkDown bool
}

func newBindState(log *slog.Logger) *bindState {
	return &bindState{log: log, phase: StateStarting, since: time.Now()}
}

// report is SourceOptions.Report.
func (s *bindState) report(st SourceStatus) {
	s.mu.Lock()
	prev := s.src
	s.src, s.detail = st.State, st.Detail
	now := time.Now()
	if st.Err != nil {
		s.lastErr, s.lastErrAt = st.Err.Error(), now
	}
	var warn, info string
	attrs := []slog.Attr{}
	switch st.State {
	case SourceReconnecting:
		if prev != SourceReconnecting {
			s.reconnects++
			warn, s.lastWarn = "connection to the database lost: reconnecting", now
		} else if now.Sub(s.lastWarn) >= stillEvery {
			warn, s.lastWarn = "still reconnecting to the database", now
		}
		if st.Err != nil {
			attrs = append(attrs, slog.Any("err", st.Err))
		}
	case SourceStreaming:
		if prev == SourceReconnecting {
			info = "reconnected, streaming from the last position handed over"
			attrs = append(attrs, slog.String("position", st.Position))
		}
	case SourceCreatingSlot:
		info = "creating the replication slot"
		if st.Detail != "" {
			attrs = append(attrs, slog.String("detail", st.Detail))
		}
	}
	s.touch(now)
	s.mu.Unlock()
	switch {
	case warn != "":
		s.log.LogAttrs(context.Background(), slog.LevelWarn, warn, attrs...)
	case info != "":
		s.log.LogAttrs(context.Background(), slog.LevelInfo, info, attrs...)
	}
}

// setPhase sets the pipeline's phase; err, when not nil, becomes the last
// error.
func (s *bindState) setPhase(phase string, err error) {
	s.mu.Lock()
	s.phase = phase
	now := time.Now()
	if err != nil {
		s.lastErr, s.lastErrAt = err.Error(), now
	}
	s.touch(now)
	s.mu.Unlock()
}

// setSinkReady records whether the sink can publish now; Stats asks the
// sink (see ReadySink), so the change is seen at the next Stats.
func (s *bindState) setSinkReady(ready bool) {
	s.mu.Lock()
	if s.sinkDown != !ready {
		s.sinkDown = !ready
		s.touch(time.Now())
	}
	s.mu.Unlock()
}

// touch moves since when the state shown changes. s.mu is held.
func (s *bindState) touch(now time.Time) {
	if st := s.stateLocked(); st != s.shown {
		s.shown, s.since = st, now
	}
}

func (s *bindState) stateLocked() string {
	switch s.phase {
	case StateStopping, StateStopped, StateFailed:
		return s.phase
	}
	switch s.src {
	case SourceReconnecting:
		return StateReconnecting
	case SourceCreatingSlot:
		return StateCreatingSlot
	case SourceConnecting:
		return StateStarting
	}
	if s.phase == StateStreaming && s.sinkDown {
		return StateWaitingForNATS
	}
	return s.phase
}

// connectedLocked reports whether the source is connected to its server:
// as it reports, or, when it reports nothing, while the bind streams.
func (s *bindState) connectedLocked() bool {
	switch s.phase {
	case StateStopped, StateFailed:
		return false
	}
	switch s.src {
	case SourceStreaming, SourceCreatingSlot:
		return true
	case "":
		return s.phase == StateStreaming || s.phase == StateStopping
	}
	return false
}

// stateView is a copy of a bind's state for BindStats.
type stateView struct {
	State, Detail string
	Since         time.Time
	LastError     string
	LastErrorAt   time.Time
	Reconnects    uint64
	Connected     bool
}

func (s *bindState) view() stateView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return stateView{State: s.stateLocked(), Detail: s.detail, Since: s.since,
		LastError: s.lastErr, LastErrorAt: s.lastErrAt, Reconnects: s.reconnects, Connected: s.connectedLocked()}
}
