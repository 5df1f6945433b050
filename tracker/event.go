package tracker

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/trackerd/trackerd/wire/token"
)

// Phase is the signal an event belongs to.
type Phase string

// The phases. BeforeCommit and AfterCommit are Flask-SQLAlchemy's
// before_models_committed and models_committed; Rollback retracts
// before_commit events of a streamed transaction that did not commit.
const (
	PhaseBeforeCommit Phase = "before_commit"
	PhaseAfterCommit  Phase = "after_commit"
	PhaseRollback     Phase = "rollback"
)

// Valid reports whether p is one of the phases above.
func (p Phase) Valid() bool {
	switch p {
	case PhaseBeforeCommit, PhaseAfterCommit, PhaseRollback:
		return true
	}
	return false
}

// Event is one message for a sink: a change in one phase.
type Event struct {
	// Phase is the signal.
	Phase Phase
	// Change is the row change. For a rollback event it describes the
	// transaction (Bind, Source, TxID, TxKey, SubTx) and Retract says which
	// changes are withdrawn.
	Change *Change
	// ID is the deterministic CloudEvent id, also the Nats-Msg-Id.
	ID string
	// TxTotal is the transaction's number of changes; set on after_commit.
	TxTotal int
	// Retract is set on rollback events.
	Retract *Retraction
	// LaneSeq is the event's 1-based position in its bind's lane; the sink
	// acknowledges by it.
	LaneSeq uint64
	// Data is the encoded change (Change.AppendJSON), shared by the phases
	// of one change; nil until encoded.
	Data []byte
	// Snapshot names the snapshot a row of Op snapshot was read by (the
	// trackerdsnapshot extension); empty for changes.
	Snapshot string
	// Lifecycle is set on a snapshot's lifecycle event, published on
	// <prefix>.control.<bind>.snapshot; Change then carries only the bind,
	// origin and source kind.
	Lifecycle *Lifecycle
}

// Retraction names the before_commit events a rollback withdraws: those of
// transaction TxKey with a txseq in one of Ranges. SubTx is the rolled-back
// subtransaction, empty when the whole transaction rolled back.
type Retraction struct {
	TxKey  string     `json:"txkey"`
	SubTx  string     `json:"subtx,omitempty"`
	Ranges []SeqRange `json:"ranges"`
}

// SeqRange is an inclusive range of txseqs.
type SeqRange struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// EventID builds the deterministic event id (the README's "Subjects and
// events"), <bind>/<origin>/<txkey>/<index>/<phase>, each part escaped as
// a subject token is: the bind key; the origin (see [Origin]); the
// transaction's key; the change's place in its source transaction (for a
// rollback event, the transaction's count of earlier retractions); and the
// phase.
func EventID(bind, origin, txKey string, index int64, phase Phase) string {
	b := make([]byte, 0, len(bind)+len(origin)+len(txKey)+len(phase)+24)
	b = token.Append(b, bind)
	b = append(b, '/')
	b = token.Append(b, origin)
	b = append(b, '/')
	b = token.Append(b, txKey)
	b = append(b, '/')
	b = strconv.AppendInt(b, index, 10)
	b = append(b, '/')
	b = append(b, phase...)
	return string(b)
}

// SnapshotEventID is the id of a row read by a snapshot:
// <bind>/<origin>/snapshot-<id>/<schema.table:key>/after_commit, the key
// as the JSON of its columns' values, each part escaped as a subject token
// is. A row read again after a crash gets the same id.
func SnapshotEventID(bind, origin, snapshot string, c *Change) string {
	b := make([]byte, 0, 96)
	b = token.Append(b, bind)
	b = append(b, '/')
	b = token.Append(b, origin)
	b = append(b, '/')
	b = token.Append(b, "snapshot-"+snapshot)
	b = append(b, '/')
	k := make([]byte, 0, 48)
	k = append(k, c.Schema...)
	k = append(k, '.')
	k = append(k, c.Table...)
	k = append(k, ':')
	k = c.Key.AppendJSON(k)
	b = token.Append(b, string(k))
	b = append(b, '/')
	b = append(b, PhaseAfterCommit...)
	return string(b)
}

// LifecycleEventID is the id of a snapshot's lifecycle event:
// <bind>/<origin>/snapshot-<id>/<type>[:<table>]/control.
func LifecycleEventID(bind, origin string, l *Lifecycle) string {
	b := make([]byte, 0, 96)
	b = token.Append(b, bind)
	b = append(b, '/')
	b = token.Append(b, origin)
	b = append(b, '/')
	b = token.Append(b, "snapshot-"+l.Snapshot)
	b = append(b, '/')
	what := l.Type
	if l.Table != "" {
		what += ":" + l.Table
	}
	b = token.Append(b, what)
	return string(append(b, "/control"...))
}

// Origin returns the origin token of a source identity (see
// Source.Identity): 16 lower-case hex digits, the first 64 bits of the
// identity's SHA-256. It is part of every event id and of the CloudEvent
// source, so that two deployments whose binds share a key but read
// different servers, databases or slots never publish the same id.
func Origin(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return hex.EncodeToString(sum[:8])
}

// Escape makes s a single NATS subject token by trackerd's reversible rule:
// [A-Za-z0-9_-] stay, every other byte becomes '=' and two upper-case hex
// digits, and the empty string becomes "=". It is [token.Escape], the one
// implementation that subjects and checkpoint keys also use.
func Escape(s string) string { return token.Escape(s) }

// AppendEscaped appends Escape(s) to b.
func AppendEscaped(b []byte, s string) []byte { return token.Append(b, s) }

// ErrBadEscape is returned by Unescape for a token Escape cannot produce.
var ErrBadEscape = token.ErrBadEscape

// Unescape reverses Escape.
func Unescape(tok string) (string, error) { return token.Unescape(tok) }
