package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/internal/backoff"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// Mode is how events are published: PUBLISH_MODE.
type Mode string

// The publish modes.
const (
	// JetStream publishes to a stream and waits for its acknowledgements:
	// at least once, checkpoints follow the acks. The default.
	JetStream Mode = "jetstream"
	// Core publishes on core NATS: no stream, no acknowledgements, at most
	// once. An event is reported stored as soon as it is handed to the
	// connection; a subscriber that is not listening, or a connection that
	// drops before its buffer is written, loses it.
	Core Mode = "core"
)

// The oversize policies: what Publish does with an event larger than the
// server's max_payload (or the stream's max_msg_size).
const (
	// OversizeTruncate leaves the largest column values of the row images
	// out (never the key) until the event fits, and names them in the
	// data's "truncated" list. If it cannot fit even so, it fails.
	OversizeTruncate = "truncate"
	// OversizeFail makes Publish fail with ErrTooLarge: the bind stops.
	OversizeFail = "fail"
)

// Defaults of Options, which are config's (see [config.DefaultStreamName]).
const (
	DefaultPrefix           = config.DefaultSubjectPrefix
	DefaultStreamName       = config.DefaultStreamName
	DefaultDuplicateWindow  = config.DefaultDuplicateWindow
	DefaultMaxInflight      = config.DefaultMaxInflight
	DefaultMaxInflightBytes = config.DefaultMaxInflightBytes // 64 MiB
	DefaultAckTimeout       = config.DefaultAckTimeout
)

// ErrTooLarge is wrapped by Publish's error for an event that is larger
// than the server accepts and that the oversize policy cannot make fit.
var ErrTooLarge = errors.New("event too large")

// ErrLaneClosed is returned by Publish on a lane that is closing or closed.
var ErrLaneClosed = errors.New("nats: lane closed")

// StreamConfig is the JetStream stream trackerd creates when it is missing.
// An existing stream is used as it is.
type StreamConfig struct {
	// Name is STREAM_NAME, default "TRACKERD".
	Name string
	// DuplicateWindow is DUPLICATE_WINDOW, default 10m: how long JetStream
	// remembers message ids to drop re-sent events.
	DuplicateWindow time.Duration
	// MaxAge is STREAM_MAX_AGE; 0 keeps messages forever.
	MaxAge time.Duration
	// MaxBytes is STREAM_MAX_BYTES; 0 or -1 is unlimited.
	MaxBytes int64
	// MaxMsgs is STREAM_MAX_MSGS; 0 or -1 is unlimited.
	MaxMsgs int64
	// Replicas is STREAM_REPLICAS, default 1.
	Replicas int
}

// Options configure a Sink. The zero value of a field means its default.
type Options struct {
	// Prefix is SUBJECT_PREFIX, default "trackerd".
	Prefix string
	// NamingConvention is NAMING_CONVENTION; nil means the default template
	// (see Subjects).
	NamingConvention map[string]string
	// Mode is PUBLISH_MODE, default JetStream.
	Mode Mode
	// Stream is the JetStream stream (JetStream mode only).
	Stream StreamConfig
	// MaxInflight is MAX_INFLIGHT, default 8192: each lane's window of
	// unacknowledged messages. Publish blocks while it is full.
	MaxInflight int
	// MaxInflightBytes is MAX_INFLIGHT_BYTES, default 64 MiB: the most
	// bytes of unacknowledged messages a lane keeps. Publish blocks while
	// they reach it, but a lane with none takes any event: a lane's memory
	// is bounded by it plus one message.
	MaxInflightBytes int64
	// OversizePolicy is OVERSIZE_POLICY: OversizeTruncate (default) or
	// OversizeFail.
	OversizePolicy string
	// Logger receives the sink's logs; nil discards them.
	Logger *slog.Logger
	// Echo is ECHO: log every published event (subject and id) at info.
	Echo bool
	// AckTimeout is how long a publish waits for its acknowledgement
	// before it counts as failed and is sent again, default 5s.
	AckTimeout time.Duration
}

// Stats are a sink's counters, summed over its lanes, or one bind's (see
// [Sink.BindStats]).
type Stats struct {
	// Published counts events handed to Publish and accepted.
	Published uint64
	// Acked counts events the stream acknowledged (in core mode, handed to
	// the connection).
	Acked uint64
	// Retried counts messages sent again after a failed or timed-out
	// publish.
	Retried uint64
	// Duplicates counts acknowledgements that said the stream already held
	// the message (a re-sent event, dropped by the duplicate window).
	Duplicates uint64
	// Truncated counts events sent with column values left out.
	Truncated uint64
	// InFlight is the number of events published but not yet acknowledged.
	InFlight uint64
	// Reordered counts events the stream stored before an earlier event of
	// their bind: only on streams without batch publishing, after a failed
	// publish (see the lane's documentation). Each is logged.
	Reordered uint64
	// StreamRecreated counts the times the stream was found deleted and
	// created again while publishing: what it held is gone.
	StreamRecreated uint64
}

// Sink publishes tracker events to NATS. It implements [tracker.Sink]; its
// lanes share its connection. Its methods are safe for concurrent use.
type Sink struct {
	t        transport
	js       jetstream.JetStream // nil in core mode and in unit tests
	o        Options
	subjects *wire.Subjects
	log      *slog.Logger

	// ready is set once the stream is known good (JetStream) or the
	// connection has been up once (core): before, the max payload is not
	// known and publishing is pointless.
	ready atomic.Bool
	// streamMaxMsgSize is the stream's max_msg_size, 0 when unlimited.
	streamMaxMsgSize atomic.Int64
	readyMu          sync.Mutex
	readyErr         error // a configuration error found by a readiness check

	// batched is set when the stream allows fast batch publishing
	// (allow_batched): lanes then keep order through any failure.
	batched atomic.Bool
	// streamSeen is set once the stream has been found or created.
	streamSeen atomic.Bool

	lanesMu sync.Mutex
	lanes   map[*lane]struct{}

	// recreated counts the times the stream was created again.
	recreated atomic.Uint64

	// binds holds each bind's counters, from its first lane on: a bind's
	// counters only grow, whatever lanes it opens and closes.
	bindsMu sync.Mutex
	binds   map[string]*counters
}

// counters are one bind's: its lanes count into them.
type counters struct {
	published, acked, retried, duplicates, truncated atomic.Uint64
	reordered                                        atomic.Uint64
	inFlight                                         atomic.Int64
}

func (c *counters) stats() Stats {
	return Stats{
		Published:  c.published.Load(),
		Acked:      c.acked.Load(),
		Retried:    c.retried.Load(),
		Duplicates: c.duplicates.Load(),
		Truncated:  c.truncated.Load(),
		InFlight:   uint64(max(c.inFlight.Load(), 0)),
		Reordered:  c.reordered.Load(),
	}
}

// bindCounters returns bind's counters, made at its first lane.
func (s *Sink) bindCounters(bind string) *counters {
	s.bindsMu.Lock()
	defer s.bindsMu.Unlock()
	if s.binds == nil {
		s.binds = make(map[string]*counters)
	}
	c := s.binds[bind]
	if c == nil {
		c = &counters{}
		s.binds[bind] = c
	}
	return c
}

var _ tracker.Sink = (*Sink)(nil)

// New returns a sink publishing on nc.
//
// In JetStream mode it makes sure the stream exists (see [StreamConfig]):
// it creates it, with subjects "<prefix>.>", file storage and the duplicate
// window, when it is missing; it refuses a stream that does not capture
// "<prefix>.>"; it logs a warning, and changes nothing, when an existing
// stream's duplicate window is not the configured one.
//
// New does not wait for NATS: when nc is not connected yet (see [Connect]),
// or the check cannot complete, New logs it and returns, and the check is
// made again when the first event is published — publishing blocks until
// it succeeds. Errors that retrying cannot fix (bad options, a stream that
// does not fit, JetStream not enabled) match [tracker.ErrConfig].
func New(ctx context.Context, nc *natsgo.Conn, o Options) (*Sink, error) {
	if nc == nil {
		return nil, errors.New("nats: New needs a connection")
	}
	var js jetstream.JetStream
	if o.Mode != Core {
		var err error
		if js, err = jetstream.New(nc); err != nil {
			return nil, fmt.Errorf("nats: %w", err)
		}
	}
	s, err := newSink(connTransport{nc}, js, o)
	if err != nil {
		return nil, err
	}
	if s.o.Mode == JetStream && nc.Opts.ReconnectBufSize >= 0 {
		s.log.Info("the NATS connection buffers publishes while reconnecting: after a reconnect, events may be stored out of order; connect with ReconnectBufSize(-1), as Connect does")
	}
	if !s.t.connected() {
		s.log.Info("NATS is not connected yet: the stream is checked when it is")
		return s, nil
	}
	if err := s.checkReady(ctx); err != nil {
		if errors.Is(err, tracker.ErrConfig) {
			return nil, fmt.Errorf("nats: %w", err)
		}
		if jetStreamMissing(err) {
			// Connected, and nothing serves JetStream's API: at start-up
			// that is the server's configuration, not a passing state.
			return nil, tracker.ConfigError(fmt.Errorf("nats: %w", err))
		}
		s.log.Warn("cannot check the stream yet: trying again when publishing", slog.Any("err", err))
	}
	return s, nil
}

// newSink validates o and builds a sink on t, without any I/O.
func newSink(t transport, js jetstream.JetStream, o Options) (*Sink, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	switch o.Mode {
	case "":
		o.Mode = JetStream
	case JetStream, Core:
	default:
		return nil, tracker.ConfigError(fmt.Errorf("nats: PUBLISH_MODE %q: want jetstream or core", o.Mode))
	}
	switch o.OversizePolicy {
	case "":
		o.OversizePolicy = OversizeTruncate
	case OversizeTruncate, OversizeFail:
	default:
		return nil, tracker.ConfigError(fmt.Errorf("nats: OVERSIZE_POLICY %q: want truncate or fail", o.OversizePolicy))
	}
	if o.Stream.Name == "" {
		o.Stream.Name = DefaultStreamName
	}
	if !validStreamName(o.Stream.Name) {
		return nil, tracker.ConfigError(fmt.Errorf("nats: STREAM_NAME %q: want letters, digits, - and _", o.Stream.Name))
	}
	if o.Stream.DuplicateWindow <= 0 {
		o.Stream.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxInflightBytes <= 0 {
		o.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	subjects, err := wire.NewSubjects(o.Prefix, o.NamingConvention)
	if err != nil {
		return nil, err
	}
	return &Sink{t: t, js: js, o: o, subjects: subjects, log: o.Logger, lanes: map[*lane]struct{}{}}, nil
}

// openLane opens bind's lane, passing it what it needs of the sink.
func (s *Sink) openLane(bind string, acked func(uint64)) (*lane, error) {
	l, err := newLane(laneConfig{
		bind: bind, acked: acked, log: s.log.With(slog.String("bind", bind)),
		t: s.t, sink: s, subjects: s.subjects, c: s.bindCounters(bind), o: s.o,
	})
	if err != nil {
		return nil, err
	}
	s.lanesMu.Lock()
	s.lanes[l] = struct{}{}
	s.lanesMu.Unlock()
	return l, nil
}

// The sink is its lanes' laneSink.
var _ laneSink = (*Sink)(nil)

func (s *Sink) laneClosed(l *lane) {
	s.lanesMu.Lock()
	delete(s.lanes, l)
	s.lanesMu.Unlock()
}

func (s *Sink) streamBatches() bool { return s.batched.Load() }

func (s *Sink) batchesRefused() { s.batched.Store(false) }

// recheckStream makes the sink check its stream again (a lane found none
// answering): until it is found or created, the sink is not ready.
func (s *Sink) recheckStream(ctx context.Context) error {
	s.ready.Store(false)
	return s.checkReady(ctx)
}

// streamRecreated tells every lane that the stream was created again.
func (s *Sink) streamRecreated(stream string) {
	s.lanesMu.Lock()
	lanes := make([]*lane, 0, len(s.lanes))
	for l := range s.lanes {
		lanes = append(lanes, l)
	}
	s.lanesMu.Unlock()
	for _, l := range lanes {
		l.streamRecreated(stream)
	}
}

func validStreamName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Subjects returns the sink's subject renderer.
func (s *Sink) Subjects() *wire.Subjects { return s.subjects }

// Ready reports whether the sink can publish now: connected, and (in
// JetStream mode) its stream checked. For /readyz.
func (s *Sink) Ready() bool { return s.ready.Load() && s.t.connected() }

// Stats returns the sink's counters, summed over its binds.
func (s *Sink) Stats() Stats {
	var t Stats
	for _, st := range s.BindStats() {
		t.Published += st.Published
		t.Acked += st.Acked
		t.Retried += st.Retried
		t.Duplicates += st.Duplicates
		t.Truncated += st.Truncated
		t.InFlight += st.InFlight
		t.Reordered += st.Reordered
	}
	t.StreamRecreated = s.recreated.Load()
	return t
}

// BindStats returns the counters of every bind that has opened a lane, by
// bind key.
func (s *Sink) BindStats() map[string]Stats {
	s.bindsMu.Lock()
	defer s.bindsMu.Unlock()
	out := make(map[string]Stats, len(s.binds))
	for bind, c := range s.binds {
		out[bind] = c.stats()
	}
	return out
}

// InflightLimit is MaxInflight as the sink uses it (its default when 0):
// each lane's most unacknowledged events.
func (s *Sink) InflightLimit() int { return s.o.MaxInflight }

// errNotConnected is the transient reason readiness waits.
var errNotConnected = errors.New("not connected to NATS")

// checkReady makes one readiness check: the stream in JetStream mode, the
// connection in core mode.
func (s *Sink) checkReady(ctx context.Context) error {
	if s.ready.Load() {
		return nil
	}
	s.readyMu.Lock()
	err := s.readyErr
	s.readyMu.Unlock()
	if err != nil {
		return err
	}
	if !s.t.connected() || s.t.maxPayload() <= 0 {
		return errNotConnected
	}
	if s.o.Mode == JetStream && s.js != nil {
		ctx, cancel := context.WithTimeout(ctx, s.o.AckTimeout)
		defer cancel()
		maxMsgSize, err := s.ensureStream(ctx)
		if err != nil {
			if errors.Is(err, tracker.ErrConfig) {
				s.readyMu.Lock()
				s.readyErr = err
				s.readyMu.Unlock()
			}
			return err
		}
		s.streamMaxMsgSize.Store(int64(max(maxMsgSize, 0)))
	}
	s.ready.Store(true)
	return nil
}

// awaitReady blocks until checkReady succeeds, retrying transient failures
// with back-off, or ctx ends, or a check finds a configuration error.
func (s *Sink) awaitReady(ctx context.Context, log *slog.Logger) error {
	if s.ready.Load() {
		return nil
	}
	bo := backoff.Publish.New()
	var warned time.Time
	for attempt := 1; ; attempt++ {
		err := s.checkReady(ctx)
		if err == nil {
			if attempt > 1 {
				log.Info("NATS is ready: publishing")
			}
			return nil
		}
		if errors.Is(err, tracker.ErrConfig) {
			return err
		}
		level := slog.LevelDebug
		if time.Since(warned) >= warnEvery {
			level, warned = slog.LevelWarn, time.Now()
		}
		log.Log(ctx, level, "waiting for NATS before publishing", slog.Any("err", err), slog.Int("attempt", attempt))
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}

// limit returns the largest message (payload and headers) the server and
// stream accept, 0 when unknown.
func (s *Sink) limit() int {
	n := s.t.maxPayload()
	if m := s.streamMaxMsgSize.Load(); m > 0 && (n <= 0 || m < n) {
		n = m
	}
	return int(n)
}

// OpenLane returns the lane of one bind. ctx bounds the opening only: the
// lane runs — re-sending failed publishes for as long as it takes — until
// its Close. acked is called from the lane's own goroutine, never
// concurrently with itself, with n increasing each time the events with
// LaneSeq 1..n are all stored.
func (s *Sink) OpenLane(ctx context.Context, bind string, acked func(n uint64)) (tracker.Lane, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := s.openLane(bind, acked)
	if err != nil {
		return nil, err
	}
	return l, nil
}
