package changefeed

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// Message is one trackerd event, decoded: a row change in one phase, or a
// rollback (retraction) of a streamed transaction's before_commit events.
type Message struct {
	// Change is the row change: op, bind, schema, table, key, before and
	// after images, unchanged columns, transaction id and key, sequence in
	// the transaction, commit time and position. For a rollback event it
	// describes the transaction only (Bind, Source, Schema and Table when
	// the retraction concerns one table, TxID, TxKey, SubTx, Seq), and its
	// Op is empty.
	Change tracker.Change
	// Phase is before_commit, after_commit or rollback (the event's type
	// without its "trackerd." prefix).
	Phase tracker.Phase
	// ID is the CloudEvent id, <bind>/<origin>/<txkey>/<index>/<phase>:
	// the same change in the same phase always has the same id, and no two
	// changes share one, so it is the key to de-duplicate on.
	ID string
	// Source is the CloudEvent source, /trackerd/<bind>/<origin>; the
	// origin is also in Change.Origin.
	Source string
	// Subject is the NATS subject the event was published on.
	Subject string
	// TxTotal is the transaction's number of changes (trackerdtxtotal); set
	// on after_commit events only, 0 otherwise.
	TxTotal int
	// Time is the commit time (the CloudEvent time), zero when unknown.
	Time time.Time
	// Retract is set on rollback events: which before_commit events of
	// transaction Retract.TxKey are withdrawn. No after_commit event follows
	// for them.
	Retract *tracker.Retraction
	// Stream is the message's JetStream stream sequence, 0 on core NATS.
	Stream uint64
	// Delivered is how many times JetStream has delivered the message (1 the
	// first time), 0 on core NATS. A handler that is retried in-process sees
	// the same value again.
	Delivered uint64
	// Raw is the message body as received: for trackerd's own events, the
	// structured-mode CloudEvent JSON exactly as published.
	Raw []byte
	// Order is the event's place in its bind's order of publication, where
	// trackerd marks it (see [Order]); zero otherwise.
	Order Order
	// Snapshot is the trackerdsnapshot extension: the snapshot or backfill
	// that read a row of op snapshot, or a lifecycle event's snapshot.
	Snapshot string
	// Lifecycle is set on a snapshot's lifecycle event (type
	// trackerd.snapshot.<type>, on <prefix>.control.<bind>.snapshot): the
	// snapshot started, read a table whole, completed, was cancelled or
	// failed. Phase is then after_commit and Change holds only the bind,
	// origin and, for table_done, the table. Only a [Filter] with Control
	// selects them.
	Lifecycle *tracker.Lifecycle
}

// ErrNotEvent is wrapped by the errors of Decode for a message that is not
// a trackerd event.
var ErrNotEvent = errors.New("changefeed: not a trackerd event")

// Decode decodes a message of a trackerd subject: its subject, headers and
// body. It reads trackerd's structured-mode CloudEvents (Content-Type
// application/cloudevents+json), and also binary-mode ones (ce-* headers,
// the body being the data), as sdk-go writes when it relays an event.
// Errors wrap [ErrNotEvent].
func Decode(subject string, header nats.Header, data []byte) (Message, error) {
	ev, err := wire.Decode(header, data)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %s: %v", ErrNotEvent, subject, err)
	}
	return Message{
		Change: ev.Change, Phase: ev.Phase, ID: ev.ID, Source: ev.Source, TxTotal: ev.TxTotal, Time: ev.Time, Retract: ev.Retract,
		Subject: subject, Raw: data, Order: orderOf(header), Snapshot: ev.Snapshot, Lifecycle: ev.Lifecycle,
	}, nil
}

// DecodeMsg decodes a message received with nats.go, on core NATS or from
// a JetStream subscription (whose stream sequence and delivery count it
// reads from the reply subject).
func DecodeMsg(msg *nats.Msg) (Message, error) {
	m, err := Decode(msg.Subject, msg.Header, msg.Data)
	if err != nil {
		return m, err
	}
	if strings.HasPrefix(msg.Reply, "$JS.ACK.") {
		if md, err := msg.Metadata(); err == nil {
			m.Stream, m.Delivered = md.Sequence.Stream, md.NumDelivered
		}
	}
	return m, nil
}

// DecodeJetStreamMsg decodes a message received with nats.go's jetstream
// package, with its stream sequence and delivery count.
func DecodeJetStreamMsg(msg jetstream.Msg) (Message, error) {
	m, err := Decode(msg.Subject(), msg.Headers(), msg.Data())
	if err != nil {
		return m, err
	}
	if md, err := msg.Metadata(); err == nil {
		m.Stream, m.Delivered = md.Sequence.Stream, md.NumDelivered
	}
	return m, nil
}
