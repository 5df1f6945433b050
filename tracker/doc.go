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
package tracker
