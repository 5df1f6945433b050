// Package srckit is what trackerd's sources share: the reconnect loop that
// reports a bind's state to the tracker ([Loop]), the error vocabulary
// that decides what a reconnect can fix ([Permanent], [IsPermanent]), the
// buffer a change's row values are encoded into ([RowBuilder]), and DESIGN
// section 4's rule for integers beyond 2^53-1 ([AppendInt], [AppendUint],
// [SafeIntText]).
//
// It is internal to sources/: the [tracker.Source] contract is all an
// embedder sees. A source keeps what is its own: how it connects, which of
// its server's errors are fatal, how it decodes values. What every source
// must do the same way lives here, once, so that the two sources cannot
// drift apart; tracker/trackertest's RunSourceTests checks the result.
package srckit
