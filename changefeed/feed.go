package changefeed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/internal/backoff"
	"github.com/trackerd/trackerd/wire"
)

// Feed subscribes to the events of one trackerd deployment: one subject
// prefix, naming convention and JetStream stream. Create it with [New]. A
// Feed is safe for concurrent use; it owns no goroutine, its subscriptions
// do.
type Feed struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects *wire.Subjects
	stream   string
	log      *slog.Logger
}

// Handler handles one event. It is called from one goroutine per
// subscription, one event at a time, in the order they arrive. An error
// holds the subscription: the same event is handed again, with back-off,
// until the handler returns nil, returns an error wrapping [ErrSkip], or
// the subscription stops. ctx ends when the subscription stops.
type Handler func(ctx context.Context, m Message) error

// ErrSkip, wrapped by a handler's error, gives up on the event instead of
// retrying it: on JetStream it is terminated (never redelivered).
var ErrSkip = errors.New("changefeed: skip this event")

// ErrClosed is Subscription.Err when the NATS connection closed under a
// subscription.
var ErrClosed = errors.New("changefeed: NATS connection closed")

// Option configures a [Feed].
type Option func(*options) error

type options struct {
	prefix string
	conv   map[string]string
	stream string
	log    *slog.Logger
}

// WithConfig takes SUBJECT_PREFIX, NAMING_CONVENTION and STREAM_NAME from
// a trackerd configuration (as loaded by the config package from the same
// file and environment as `trackerd run`). Later options override it.
func WithConfig(cfg *config.Config) Option {
	return func(o *options) error {
		if cfg == nil {
			return errors.New("changefeed: WithConfig(nil)")
		}
		o.prefix, o.conv, o.stream = cfg.SubjectPrefix, cfg.NamingConvention, cfg.StreamName
		return nil
	}
}

// WithPrefix sets SUBJECT_PREFIX, default "trackerd".
func WithPrefix(prefix string) Option {
	return func(o *options) error { o.prefix = prefix; return nil }
}

// WithNamingConvention sets NAMING_CONVENTION, default the template
// %(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s.
func WithNamingConvention(conv map[string]string) Option {
	return func(o *options) error { o.conv = conv; return nil }
}

// WithStream sets STREAM_NAME, the JetStream stream that [Feed.Consume],
// [Feed.ConsumeTx] and [Feed.Follow] read, default "TRACKERD".
func WithStream(name string) Option {
	return func(o *options) error { o.stream = name; return nil }
}

// WithLogger sets the logger of the feed's subscriptions (handler retries,
// undecodable messages); the default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("changefeed: WithLogger(nil)")
		}
		o.log = l
		return nil
	}
}

// New returns a feed reading trackerd's events through nc. It does no I/O.
// Its errors come from options that cannot work (a prefix or naming
// convention trackerd would refuse) and match [tracker.ErrConfig].
func New(nc *nats.Conn, opts ...Option) (*Feed, error) {
	if nc == nil {
		return nil, errors.New("changefeed: New needs a NATS connection")
	}
	o := options{prefix: config.DefaultSubjectPrefix, stream: config.DefaultStreamName, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.prefix == "" {
		o.prefix = config.DefaultSubjectPrefix
	}
	if o.stream == "" {
		o.stream = config.DefaultStreamName
	}
	subjects, err := wire.NewSubjects(o.prefix, o.conv)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("changefeed: %w", err)
	}
	return &Feed{nc: nc, js: js, subjects: subjects, stream: o.stream, log: o.log}, nil
}

// Stream returns the name of the JetStream stream the feed reads.
func (f *Feed) Stream() string { return f.stream }

// Subject returns the NATS subscription pattern of flt: flt.Pattern when
// set, else the subject template with each field that matches anything
// replaced by "*" and the others escaped, e.g.
//
//	trackerd.after_commit.default.public.orders.*
//
// for Filter{Phase: tracker.PhaseAfterCommit, Bind: "default", Schema:
// "public", Table: "orders"}. Where the naming convention puts a field in
// a token with other text, the pattern has "*" there and may match more
// than flt; subscriptions check every event against flt, so handlers never
// see the difference.
func (f *Feed) Subject(flt Filter) (string, error) {
	if err := flt.Validate(); err != nil {
		return "", err
	}
	if flt.Pattern != "" {
		return flt.Pattern, nil
	}
	if flt.Control {
		return f.subjects.ControlFilter(flt.Bind), nil
	}
	p, err := f.subjects.Filter(wire.Filter{Phase: string(flt.Phase), Bind: flt.Bind, Schema: flt.Schema, Table: flt.Table, Op: string(flt.Op)})
	if err != nil {
		return "", fmt.Errorf("changefeed: %w", err)
	}
	return p, nil
}

// ConsumeOption configures one subscription. Each says which of
// [Feed.Subscribe], [Feed.Consume], [Feed.ConsumeTx] and [Feed.Follow] it
// applies to; given to another, it is an error.
type ConsumeOption func(*consumeOptions) error

type startKind int

const (
	startDefault startKind = iota
	startAll
	startNew
	startSeq
	startTime
)

type consumeOptions struct {
	start         startKind
	startSeq      uint64
	startTime     time.Time
	ackWait       time.Duration
	maxAckPending int
	retryMin      time.Duration
	retryMax      time.Duration
	dedup         int
	maxTxChanges  int
	txTimeout     time.Duration
	orderWait     time.Duration
	orderWaitSet  bool
	jetstreamOnly []string // names of the options given that need JetStream
	durableOnly   []string // names of the options given that need a durable consumer
	txOnly        []string
	followOnly    []string
	untilEnd      bool
}

// FromStart reads the stream from its first message: the default of
// [Feed.Consume] and [Feed.ConsumeTx]. JetStream only; for a durable
// consumer it applies when the consumer is created (an existing durable
// resumes where it stopped).
func FromStart() ConsumeOption {
	return func(o *consumeOptions) error {
		o.start = startAll
		o.jetstreamOnly = append(o.jetstreamOnly, "FromStart")
		return nil
	}
}

// FromNew reads only events stored from now on: the default of
// [Feed.Follow]. JetStream only; see [FromStart] for durables.
func FromNew() ConsumeOption {
	return func(o *consumeOptions) error {
		o.start = startNew
		o.jetstreamOnly = append(o.jetstreamOnly, "FromNew")
		return nil
	}
}

// FromSequence reads the stream from stream sequence seq (see
// [Message.Stream]). JetStream only; see [FromStart] for durables.
func FromSequence(seq uint64) ConsumeOption {
	return func(o *consumeOptions) error {
		if seq == 0 {
			return errors.New("changefeed: FromSequence(0): stream sequences start at 1")
		}
		o.start, o.startSeq = startSeq, seq
		o.jetstreamOnly = append(o.jetstreamOnly, "FromSequence")
		return nil
	}
}

// FromTime reads the stream from the first message stored at or after t.
// JetStream only; see [FromStart] for durables.
func FromTime(t time.Time) ConsumeOption {
	return func(o *consumeOptions) error {
		if t.IsZero() {
			return errors.New("changefeed: FromTime: zero time")
		}
		o.start, o.startTime = startTime, t
		o.jetstreamOnly = append(o.jetstreamOnly, "FromTime")
		return nil
	}
}

// AckWait sets how long JetStream waits for a message's acknowledgement
// before it delivers it again: default 30s.
// While a handler is retried, the feed tells the server the message is in
// progress, so retries do not cause redeliveries. Durable consumers only.
func AckWait(d time.Duration) ConsumeOption {
	return func(o *consumeOptions) error {
		if d < time.Second {
			return fmt.Errorf("changefeed: AckWait(%v): at least 1s", d)
		}
		o.ackWait = d
		o.durableOnly = append(o.durableOnly, "AckWait")
		return nil
	}
}

// MaxAckPending sets how many messages the server hands out without their
// acknowledgement: default 1000 for [Feed.Consume], and twice
// [MaxTxChanges] for [Feed.ConsumeTx]. It bounds the memory a subscription
// holds. Durable consumers only.
func MaxAckPending(n int) ConsumeOption {
	return func(o *consumeOptions) error {
		if n < 1 {
			return fmt.Errorf("changefeed: MaxAckPending(%d): at least 1", n)
		}
		o.maxAckPending = n
		o.durableOnly = append(o.durableOnly, "MaxAckPending")
		return nil
	}
}

// RetryBackoff sets the back-off between a failing handler's attempts:
// doubling from min to max, default 100ms to 5s, each wait drawn between
// half of that and all of it (jitter, so that many consumers do not retry
// in step). Every subscription.
func RetryBackoff(min, max time.Duration) ConsumeOption {
	return func(o *consumeOptions) error {
		if min <= 0 || max < min {
			return fmt.Errorf("changefeed: RetryBackoff(%v, %v): want 0 < min <= max", min, max)
		}
		o.retryMin, o.retryMax = min, max
		return nil
	}
}

// Dedup drops events whose (source, id) is among the last n the handler
// has accepted, so that a redelivered event (after an acknowledgement was
// lost, a handler ran past AckWait, or trackerd re-sent events beyond the
// stream's duplicate window) reaches the handler once. Off by default:
// delivery is at least once. Every subscription; for [Feed.ConsumeTx] it
// applies to the transactions' events.
func Dedup(n int) ConsumeOption {
	return func(o *consumeOptions) error {
		if n < 1 {
			return fmt.Errorf("changefeed: Dedup(%d): at least 1", n)
		}
		o.dedup = n
		return nil
	}
}

// MaxTxChanges bounds the changes [Feed.ConsumeTx] holds for one
// transaction, default 10000: a larger transaction is handed over in parts
// of at most n changes ([Tx.Partial]). [Feed.ConsumeTx] only.
func MaxTxChanges(n int) ConsumeOption {
	return func(o *consumeOptions) error {
		if n < 1 {
			return fmt.Errorf("changefeed: MaxTxChanges(%d): at least 1", n)
		}
		o.maxTxChanges = n
		o.txOnly = append(o.txOnly, "MaxTxChanges")
		return nil
	}
}

// TxTimeout sets how long [Feed.ConsumeTx] waits for the rest of an
// incomplete transaction after its last event arrived, default twice
// AckWait (1m): then it hands over what it has, marked [Tx.Partial].
// trackerd publishes a transaction's after_commit events one after the
// other, so a transaction stays incomplete only when part of it was
// consumed before (a stop in the middle of acknowledging it), is no longer
// in the stream, or trackerd stopped in the middle of publishing it. After
// a crash, the events the dead process had received come back only after
// AckWait: a timeout longer than AckWait keeps their transactions whole.
// [Feed.ConsumeTx] only.
func TxTimeout(d time.Duration) ConsumeOption {
	return func(o *consumeOptions) error {
		if d <= 0 {
			return fmt.Errorf("changefeed: TxTimeout(%v): want > 0", d)
		}
		o.txTimeout = d
		o.txOnly = append(o.txOnly, "TxTimeout")
		return nil
	}
}

// UntilEnd ends a [Feed.Follow] subscription, with no error, once it has
// handed over every event the filter selects up to the stream's last
// message when Follow was called: read what is stored, then stop
// (`trackerd tail --until-end`). Events stored later are not handed over.
// When nothing is stored from the start position on, the subscription
// ends at once. [Feed.Follow] only.
func UntilEnd() ConsumeOption {
	return func(o *consumeOptions) error {
		o.untilEnd = true
		o.followOnly = append(o.followOnly, "UntilEnd")
		return nil
	}
}

// OrderWait sets how long a subscription holds an event that arrived
// ahead of an earlier event of its bind, waiting for that one: default
// 1m; 0 hands events over as they arrive.
//
// Where the stream does not allow batch publishing (nats-server before
// 2.14, or a stream without allow_batched), a failed publish can let later
// events of a bind into the stream ahead of the failed one, which trackerd
// stores when it sends it again (it counts them in
// trackerd_sink_reordered_total and marks every event with its place:
// [Order]). A subscription that reads every event of its binds — a
// [Filter] with no Schema, Table, Op or Pattern, whether or not it names a
// Bind or a Phase; [Feed.ConsumeTx] always, unless given a Pattern — holds
// such early events until the missing one arrives and hands them over in
// order; transactions then complete in order too. It gives up, logging a
// warning, after OrderWait, or when MaxAckPending/2 events (10000 for
// [Feed.Follow]) are held. Narrower filters see the events in stream order.
// JetStream subscriptions only: [Feed.Consume], [Feed.ConsumeTx],
// [Feed.Follow].
func OrderWait(d time.Duration) ConsumeOption {
	return func(o *consumeOptions) error {
		if d < 0 {
			return fmt.Errorf("changefeed: OrderWait(%v): want 0 (off) or more", d)
		}
		o.orderWait, o.orderWaitSet = d, true
		o.jetstreamOnly = append(o.jetstreamOnly, "OrderWait")
		return nil
	}
}

// defaultOrderWait is OrderWait's default.
const defaultOrderWait = time.Minute

// kinds of subscription, for option checks.
const (
	kindCore = iota
	kindFollow
	kindConsume
	kindConsumeTx
)

func buildConsumeOptions(kind int, opts []ConsumeOption) (consumeOptions, error) {
	o := consumeOptions{retryMin: backoff.Publish.Min, retryMax: backoff.Publish.Max}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	bad := func(names []string, what string) error {
		if len(names) > 0 {
			return fmt.Errorf("changefeed: %s applies to %s only", names[0], what)
		}
		return nil
	}
	if kind != kindFollow {
		if err := bad(o.followOnly, "Follow"); err != nil {
			return o, err
		}
	}
	switch kind {
	case kindCore:
		if err := bad(o.jetstreamOnly, "JetStream (Consume, ConsumeTx, Follow)"); err != nil {
			return o, err
		}
		fallthrough
	case kindFollow:
		if err := bad(o.durableOnly, "durable consumers (Consume, ConsumeTx)"); err != nil {
			return o, err
		}
		fallthrough
	case kindConsume:
		if err := bad(o.txOnly, "ConsumeTx"); err != nil {
			return o, err
		}
	}
	if o.maxTxChanges == 0 {
		o.maxTxChanges = 10000
	}
	if !o.orderWaitSet {
		o.orderWait = defaultOrderWait
	}
	if o.ackWait == 0 {
		o.ackWait = 30 * time.Second
	}
	if o.txTimeout == 0 {
		o.txTimeout = 2 * o.ackWait
	}
	if o.maxAckPending == 0 {
		o.maxAckPending = 1000
		if kind == kindConsumeTx {
			o.maxAckPending = max(2*o.maxTxChanges, 1000)
		}
	}
	return o, nil
}

// deliverPolicy maps the start options to a consumer's deliver policy.
func (o *consumeOptions) deliverPolicy(def startKind) (jetstream.DeliverPolicy, uint64, *time.Time) {
	k := o.start
	if k == startDefault {
		k = def
	}
	switch k {
	case startNew:
		return jetstream.DeliverNewPolicy, 0, nil
	case startSeq:
		return jetstream.DeliverByStartSequencePolicy, o.startSeq, nil
	case startTime:
		t := o.startTime
		return jetstream.DeliverByStartTimePolicy, 0, &t
	}
	return jetstream.DeliverAllPolicy, 0, nil
}

// retry calls try until it returns nil or an error wrapping ErrSkip, or
// ctx ends (then it returns ctx's error), backing off between attempts and
// calling wait (if not nil) before each pause: JetStream subscriptions
// tell the server their messages are still in progress there.
func retry(ctx context.Context, o *consumeOptions, log *slog.Logger, what []any, try func() error, wait func()) error {
	bo := backoff.Policy{Min: o.retryMin, Max: o.retryMax}.New()
	for attempt := 1; ; attempt++ {
		err := try()
		if err == nil || errors.Is(err, ErrSkip) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := bo.Next()
		log.Warn("changefeed handler failed: retrying", append(what, slog.Any("err", err), slog.Int("attempt", attempt), slog.Duration("wait", d))...)
		if wait != nil {
			wait()
		}
		if err := backoff.Sleep(ctx, d); err != nil {
			return err
		}
	}
}
