package changefeed

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/internal/fastjson"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
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
}

// ErrNotEvent is wrapped by the errors of Decode for a message that is not
// a trackerd event.
var ErrNotEvent = errors.New("changefeed: not a trackerd event")

// ceJSON is a structured-mode CloudEvent as trackerd writes it.
type ceJSON struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	DataContentType string          `json:"datacontenttype"`
	Time            string          `json:"time"`
	Data            json.RawMessage `json:"data"`
	Bind            string          `json:"trackerdbind"`
	Op              string          `json:"trackerdop"`
	Pos             string          `json:"trackerdpos"`
	TxID            string          `json:"trackerdtxid"`
	TxSeq           string          `json:"trackerdtxseq"`
	TxTotal         string          `json:"trackerdtxtotal"`
}

// Decode decodes a message of a trackerd subject: its subject, headers and
// body. It reads trackerd's structured-mode CloudEvents (Content-Type
// application/cloudevents+json), and also binary-mode ones (ce-* headers,
// the body being the data), as sdk-go writes when it relays an event.
// Errors wrap [ErrNotEvent].
func Decode(subject string, header nats.Header, data []byte) (Message, error) {
	var ce ceJSON
	if binaryMode(header) {
		ce = binaryEvent(header, data)
	} else if err := fastjson.Unmarshal(data, &ce); err != nil {
		return Message{}, fmt.Errorf("%w: %s: %v", ErrNotEvent, subject, err)
	}
	m, err := fromCloudEvent(&ce)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %s: %s", ErrNotEvent, subject, err)
	}
	m.Subject = subject
	m.Raw = data
	m.Order = orderOf(header)
	return m, nil
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

// binaryMode reports a binary-mode CloudEvent: a ce-specversion header, in
// any case (NATS headers are case-sensitive; writers differ).
func binaryMode(h nats.Header) bool {
	for k := range h {
		if strings.EqualFold(k, "ce-specversion") {
			return true
		}
	}
	return false
}

// binaryEvent reads a binary-mode CloudEvent: attributes in ce-* headers.
func binaryEvent(h nats.Header, data []byte) ceJSON {
	get := func(name string) string {
		for k, vs := range h {
			if len(vs) > 0 && strings.EqualFold(k, "ce-"+name) {
				return vs[0]
			}
		}
		return ""
	}
	return ceJSON{
		SpecVersion: get("specversion"), ID: get("id"), Source: get("source"), Type: get("type"),
		Subject: get("subject"), DataContentType: h.Get("Content-Type"), Time: get("time"), Data: data,
		Bind: get(natssink.ExtBind), Op: get(natssink.ExtOp), Pos: get(natssink.ExtPos),
		TxID: get(natssink.ExtTxID), TxSeq: get(natssink.ExtTxSeq), TxTotal: get(natssink.ExtTxTotal),
	}
}

func fromCloudEvent(ce *ceJSON) (Message, error) {
	if ce.SpecVersion != natssink.SpecVersion {
		return Message{}, fmt.Errorf("specversion %q, want %q", ce.SpecVersion, natssink.SpecVersion)
	}
	phase, ok := strings.CutPrefix(ce.Type, natssink.TypePrefix)
	if !ok || !tracker.Phase(phase).Valid() {
		return Message{}, fmt.Errorf("type %q is not a trackerd event type", ce.Type)
	}
	if ce.ID == "" {
		return Message{}, errors.New("no id")
	}
	m := Message{Phase: tracker.Phase(phase), ID: ce.ID, Source: ce.Source}
	if ce.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, ce.Time)
		if err != nil {
			return Message{}, fmt.Errorf("time %q: %v", ce.Time, err)
		}
		m.Time = t
	}
	if ce.TxTotal != "" {
		n, err := strconv.Atoi(ce.TxTotal)
		if err != nil || n < 0 {
			return Message{}, fmt.Errorf("%s %q: want a count", natssink.ExtTxTotal, ce.TxTotal)
		}
		m.TxTotal = n
	}
	seq := -1
	if ce.TxSeq != "" {
		n, err := strconv.Atoi(ce.TxSeq)
		if err != nil || n < 0 {
			return Message{}, fmt.Errorf("%s %q: want a sequence number", natssink.ExtTxSeq, ce.TxSeq)
		}
		seq = n
	}
	if m.Phase == tracker.PhaseRollback {
		var d natssink.RollbackData
		if err := fastjson.Unmarshal(ce.Data, &d); err != nil {
			return Message{}, fmt.Errorf("rollback data: %v", err)
		}
		m.Change = tracker.Change{Bind: d.Bind, Source: d.Source, Schema: d.Schema, Table: d.Table,
			TxID: d.TxID, TxKey: d.TxKey, SubTx: d.SubTx}
		r := d.Retraction
		m.Retract = &r
	} else if err := m.Change.UnmarshalJSON(ce.Data); err != nil {
		return Message{}, fmt.Errorf("data: %v", err)
	}
	// The extension attributes carry what routing needs; fill in what the
	// data left out.
	c := &m.Change
	if c.Bind == "" {
		c.Bind = ce.Bind
	}
	if c.TxID == "" {
		c.TxID = ce.TxID
	}
	if c.Pos == "" {
		c.Pos = ce.Pos
	}
	if seq >= 0 {
		c.Seq = seq
	}
	if c.CommitTime.IsZero() {
		c.CommitTime = m.Time
	}
	c.Origin = sourceOrigin(ce.Source)
	if m.Phase != tracker.PhaseRollback {
		c.Index = idIndex(ce.ID)
	}
	return m, nil
}

// sourceOrigin returns the origin of a source "/trackerd/<bind>/<origin>",
// empty for the "/trackerd/<bind>" of trackerd before 2026-12.
func sourceOrigin(source string) string {
	rest, ok := strings.CutPrefix(source, natssink.SourcePrefix)
	if !ok {
		return ""
	}
	_, origin, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	o, err := url.PathUnescape(origin)
	if err != nil {
		return ""
	}
	return o
}

// idIndex returns the index part of an id <bind>/<origin>/<txkey>/<index>/
// <phase> (see tracker.EventID), 0 when the id has another shape.
func idIndex(id string) int64 {
	parts := strings.Split(id, "/")
	if len(parts) != 5 {
		return 0
	}
	n, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return 0
	}
	return n
}
