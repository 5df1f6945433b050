// Package wire is trackerd's wire format, in one place for the producer
// (sinks/nats) and its consumers (changefeed, and any Go program that reads
// trackerd's events): the CloudEvent envelope, its extension attributes,
// the data of rollback events, the NATS headers, subject templates and
// token escaping, and the decoders of all of them. It does no I/O and
// imports no NATS client; it depends on tracker (the Change and Event
// model, whose JSON is the events' data) and config (the template syntax).
//
// The contract it implements is the README's "Subjects and events"
// section. In short:
//
//   - subjects: [Subjects] renders NAMING_CONVENTION templates, default
//     %(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s, escaping
//     every token value with [token.Escape] (subpackage token: [A-Za-z0-9_-]
//     stay, any other byte is =XX, "" is "="), and builds subscription
//     patterns for consumers ([Subjects.Filter]);
//   - events: [EncodeEvent] writes the structured-mode CloudEvent JSON,
//     byte for byte what the event encoder of
//     github.com/cloudevents/sdk-go/v2 writes for the same event, carried
//     with the NATS headers Content-Type: application/cloudevents+json
//     ([HeaderContentType], [ContentType]) and Nats-Msg-Id: <event id>
//     ([HeaderMsgID]), and no ce-* header, so that sdk-go's core-NATS and
//     JetStream receivers both read it in structured mode; [Decode] reads
//     it back, and binary-mode events (ce-* headers) too;
//   - extension attributes: [ExtOp], [ExtBind], [ExtTxID], [ExtTxSeq],
//     [ExtPos] and, in after_commit events, [ExtTxTotal], all strings; on a
//     row a snapshot read (op snapshot) and on a snapshot's lifecycle
//     events, [ExtSnapshot], the snapshot's id;
//   - rollback events: their data is a [RollbackData];
//   - snapshot lifecycle events: type trackerd.snapshot.<type>
//     ([LifecycleTypePrefix]), data a [tracker.Lifecycle], on
//     <prefix>.control.<bind>.snapshot ([Subjects.AppendControl],
//     [Subjects.ControlFilter]), written by [AppendLifecycle];
//   - order: on streams that may store a bind's events out of order, each
//     message carries [HeaderOrder] ([AppendOrder], [ParseOrder]).
package wire
