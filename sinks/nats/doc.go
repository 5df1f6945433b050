// Package nats is trackerd's NATS sink: it publishes [tracker.Event] values
// as CloudEvents on NATS JetStream (or, at most once, on core NATS), one
// ordered lane per bind, feeding acknowledgements back to the tracker so
// that it can advance the bind's checkpoint. What goes on the wire —
// subjects, the CloudEvent envelope, headers — is package wire's, which
// consumers (changefeed) import as well; this package decides how and when
// it is sent.
//
// It holds:
//
//   - publishing: [Sink] and its lanes (lane.go; the state of their
//     window of unacknowledged messages is window.go's) publish
//     asynchronously with a bounded window per bind (MaxInflight
//     messages, MaxInflightBytes bytes), retry failed publishes with the
//     same Nats-Msg-Id forever (JetStream's duplicate window drops what
//     was already stored), and apply the oversize policy. On streams that allow fast batch
//     publishing (nats-server 2.14+) a lane sends its events as gap-fail
//     batches (batch.go), so that no failure stores a later event of a
//     bind before an earlier one; on others, the events a failure lets
//     through ahead of an earlier one are counted (Stats.Reordered),
//     logged, and every message carries the wire.HeaderOrder header by
//     which changefeed restores the order;
//   - the stream: [New] creates the JetStream stream when it is missing
//     (with allow_batched on servers that have it) and refuses one that does
//     not cover the subject prefix; a stream deleted while trackerd runs is
//     created again with a warning naming what was lost;
//   - checkpoints: [KVStore] keeps tracker checkpoints in a NATS KV bucket with
//     compare-and-set writes, and bind leases beside them;
//   - the connection: [Connect] dials a NATS server that may not be up yet.
//     The embedded server, for when NATS_URL is not set, is the subpackage
//     natsserver, so that consumers of this package do not link nats-server.
//
// Delivery: in JetStream mode every event is acknowledged by the stream, and
// a lane reports LaneSeq n as stored only when every event 1..n is, so
// checkpoints never pass an event that could be lost. Events re-sent after a
// failure carry the same id and are dropped as duplicates within the
// stream's duplicate window; consumers should still de-duplicate on
// (source, id) beyond it. In core mode ([Core]) there are no acknowledgements:
// delivery is at most once.
package nats
