// Package tracker is trackerd's core: the [Change] model, transaction
// assembly, the two signals, ordering, and checkpoint advancement, behind an
// embedding API ([New], [Tracker.Run], [Tracker.BeforeCommit],
// [Tracker.AfterCommit]).
//
// Data flows one way: a [Source] hands records to the tracker, which turns
// each row change into a before_commit event as it arrives and into an
// after_commit event when its transaction's commit is processed, calls the
// in-process receivers, and hands the events to a [Sink] lane in order. Acks
// flow back, and only the tracker advances a bind's [Checkpoint]: past a
// transaction once its every event, and every earlier transaction's, is
// acknowledged.
//
// The delivery promise: a crash at any point loses no change; what is sent
// again carries the same event ids, so a de-duplicating sink (JetStream within
// its duplicate window) stores it once.
//
// What before_commit means, honestly: "seen before trackerd processed the
// commit record". For MySQL/MariaDB, and PostgreSQL's default decoding, the
// source transaction has already committed by then. Only where the database
// hands a transaction over before it commits (PostgreSQL streaming of large
// transactions) do before_commit events precede the commit, and a rollback
// is then published as a retraction. A before_commit receiver cannot veto
// the database's commit.
//
// # Inside: one bind
//
// Each tracked bind runs as a pipeline (pipeline.go), which opens the
// bind's source, takes its lease and loads or writes the checkpoint it
// starts from, then runs three parts and stops them in a written order
// (stop reading, drain the lane, stop the checkpoint writer, save the final
// checkpoint, stop the source):
//
//   - the assembler (assembler.go) turns the source's records into events
//     and receiver calls: pure state, owned by the source's goroutine, no
//     locks; it numbers and stamps changes, holds open transactions in
//     buffers that spill to disk (txbuf.go, codec.go), publishes to the
//     sink's lane and marks each position it passes with the lane sequence
//     of the event before it;
//   - the checkpointer (checkpointer.go) keeps those marks, the lane's
//     acknowledgement watermark and the checkpoint delay, and saves the
//     newest fully acknowledged position under the bind's lease (one
//     mutex, never held across I/O), then confirms it to the source;
//   - the snapshots (snapshot.go, the contract; snaprun.go, the runner):
//     a runner per snapshot or backfill reads chunks through the source's
//     [Snapshotter] on a goroutine of its own and hands each to the
//     bind's handler, which holds it until the stream reaches the read's
//     position, publishes its rows there and notes the progress with the
//     checkpointer's marks;
//   - the bind's state and figures for operators: state.go (what the
//     source and the sink report), meter.go (events/s, commit-to-ack
//     latency), lag.go (Lag.Behind), debug.go (RECORD_QUERIES' ring),
//     echo.go (ECHO).
package tracker
