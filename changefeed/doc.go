// Package changefeed subscribes to the row changes trackerd publishes on
// NATS, and hands them back as decoded [tracker.Change] values, one event at
// a time or as whole committed transactions. It is the consumer side of
// trackerd, as the tracker package is the embedding side.
//
// # Subscribing
//
// A [Feed] knows a deployment's SUBJECT_PREFIX, NAMING_CONVENTION and
// STREAM_NAME ([WithConfig] takes them from trackerd's own configuration),
// so subscriptions are written with a [Filter] — bind, schema, table,
// operation, phase — rather than subjects; names are escaped as trackerd
// escapes them, and every event is checked against the filter after
// decoding, whatever the naming convention:
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	feed, _ := changefeed.New(nc)
//	sub, err := feed.Consume(ctx, "mailer", changefeed.Filter{
//		Phase: tracker.PhaseAfterCommit, Table: "orders", Op: tracker.OpInsert,
//	}, func(ctx context.Context, m changefeed.Message) error {
//		id, _ := m.Change.After.Get("id")
//		return sendConfirmation(ctx, id) // an error: retried, never skipped
//	})
//	...
//	sub.Stop()
//
// Four ways to subscribe, one [Handler] (or [TxHandler]) signature:
//
//   - [Feed.Subscribe]: core NATS, new events only, no stream needed; at
//     most once.
//   - [Feed.Consume]: a durable JetStream consumer; each event is
//     acknowledged after the handler returns nil, so a stopped or crashed
//     consumer resumes where it stopped: at least once.
//   - [Feed.ConsumeTx]: the same, handing over whole committed
//     transactions, reassembled from their after_commit events by
//     transaction and trackerdtxtotal, with bounded memory.
//   - [Feed.Follow]: read the stream from a position ([FromStart],
//     [FromSequence], [FromTime], [FromNew]) with nothing kept on the
//     server, for tools (`trackerd tail --from` is built on it).
//
// For subscriptions of your own, [Decode], [DecodeMsg] and
// [DecodeJetStreamMsg] turn a message into a [Message].
//
// # Delivery
//
// Handlers are called one event (or transaction) at a time, in stream
// order. A handler error holds the subscription on that event and calls
// the handler again with back-off ([RetryBackoff]), as tracker receivers
// are: a change is never skipped unless the handler says so by returning
// an error that wraps [ErrSkip]. On JetStream the message is marked in
// progress meanwhile, so the server does not redeliver it behind the
// handler's back.
//
// JetStream delivery is at least once. An event can reach a handler again
// when its acknowledgement was lost, when the process stopped after
// handling it but before the acknowledgement reached the server, or when
// trackerd re-sent it after a crash beyond the stream's duplicate window.
// Every event carries a deterministic id (<bind>/<txkey>/<txseq>/<phase>):
// the same change in the same phase always has the same [Message.ID], so
// handlers can be made idempotent on ([Message.Source], [Message.ID]).
// [Dedup] drops repeats within a window of recently handled events.
//
// Order: trackerd publishes each bind's events in one order (the README,
// "Phases and order"). On streams without batch publishing (nats-server before
// 2.14), a failed publish can let later events of a bind into the stream
// ahead of it; trackerd marks every event with its place ([Order]), and
// [Feed.Consume], [Feed.ConsumeTx] and [Feed.Follow] subscriptions that
// read whole binds hold such early events until the missing one arrives,
// so handlers see events, and whole transactions, in their bind's order
// ([OrderWait]).
//
// Stopping ([Subscription.Stop], or the end of the context given to the
// call) hands the messages received but not yet handled back to the
// server for immediate redelivery to the next subscriber of the durable,
// and [Subscription.Closed] is closed once the handler has returned.
//
// # Phases and rollbacks
//
// before_commit events are sent as trackerd reads each change, after_commit
// events once the transaction's commit is processed ([tracker.Phase]).
// Where PostgreSQL streams a large transaction before it commits and it
// then rolls back, trackerd publishes a rollback event: it decodes to a
// [Message] with Phase rollback and [Message.Retract] naming the
// before_commit events it withdraws. No after_commit event follows for
// them, so after_commit consumers never see rolled-back rows.
//
// # From the command line
//
// The same events are plain NATS messages, CloudEvents in structured JSON
// mode:
//
//	nats sub 'trackerd.after_commit.default.public.orders.*'
//	trackerd tail --table orders --signal after_commit --from start
package changefeed
