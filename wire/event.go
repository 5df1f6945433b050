package wire

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/trackerd/trackerd/internal/jsonw"
	"github.com/trackerd/trackerd/tracker"
)

// The CloudEvent constants (see the package documentation).
const (
	// ContentType is the Content-Type header of every message: a structured
	// CloudEvent in JSON.
	ContentType = "application/cloudevents+json"
	// DataContentType is the datacontenttype of every event.
	DataContentType = "application/json"
	// SpecVersion is the CloudEvents version written.
	SpecVersion = "1.0"
	// TypePrefix prefixes the phase in an event's type:
	// trackerd.before_commit, trackerd.after_commit, trackerd.rollback.
	TypePrefix = "trackerd."
	// SourcePrefix prefixes the bind and origin in an event's source.
	SourcePrefix = "/trackerd/"

	// HeaderContentType and HeaderMsgID are the NATS headers of every
	// message, spelled exactly so (NATS headers are case-sensitive).
	HeaderContentType = "Content-Type"
	HeaderMsgID       = "Nats-Msg-Id"
)

// The extension attributes, all strings (sdk-go refuses integers beyond 32
// bits; strings keep them uniform).
const (
	ExtOp      = "trackerdop"      // insert, update, delete, truncate, snapshot, rollback
	ExtBind    = "trackerdbind"    // the bind key
	ExtTxID    = "trackerdtxid"    // the source's transaction id
	ExtTxSeq   = "trackerdtxseq"   // the change's 0-based ordinal in its transaction
	ExtPos     = "trackerdpos"     // the replication position of the change
	ExtTxTotal = "trackerdtxtotal" // after_commit only: the transaction's number of changes
	// ExtSnapshot names the snapshot or backfill that read a row of op
	// snapshot, and the snapshot of a lifecycle event; absent elsewhere.
	ExtSnapshot = "trackerdsnapshot"
)

// LifecycleTypePrefix prefixes a snapshot lifecycle event's type:
// trackerd.snapshot.started, .table_done, .completed, .cancelled, .failed.
const LifecycleTypePrefix = TypePrefix + "snapshot."

// Source returns the CloudEvent source of a bind's events:
// "/trackerd/<bind>/<origin>", each percent-encoded as a URI path segment
// (as url.PathEscape does). The origin ([tracker.Origin]) names the server,
// database and stream the bind reads, so that two deployments whose binds
// share a key have different sources; it never holds credentials. An empty
// origin (events built by hand) leaves the last segment out.
func Source(bind, origin string) string {
	return string(appendSource(make([]byte, 0, len(SourcePrefix)+len(bind)+len(origin)+8), bind, origin))
}

func appendSource(b []byte, bind, origin string) []byte {
	b = append(b, SourcePrefix...)
	b = appendPathSegment(b, bind)
	if origin != "" {
		b = append(b, '/')
		b = appendPathSegment(b, origin)
	}
	return b
}

func appendPathSegment(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if pathSegmentSafe(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', upperHex[c>>4], upperHex[c&0xF])
	}
	return b
}

const upperHex = "0123456789ABCDEF"

// pathSegmentSafe reports whether url.PathEscape leaves c as it is:
// unreserved characters and the sub-delimiters $ & + = : @.
func pathSegmentSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '~', '$', '&', '+', '=', ':', '@':
		return true
	}
	return false
}

// RollbackData is the data of a trackerd.rollback event: which before_commit
// events of a streamed transaction are withdrawn because the transaction (or
// one of its subtransactions) rolled back. No after_commit event follows for
// them. Example:
//
//	{"op":"rollback","bind":"default","source":"postgresql","txid":"7321",
//	 "txkey":"lsn-00000000016B3748","subtx":"7322","ranges":[{"from":4,"to":9}]}
//
// op is always "rollback"; txkey and the retraction fields are those of
// [tracker.Retraction] (subtx is absent when the whole transaction rolled
// back); schema and table are present only when every withdrawn change
// belongs to one table. Decode it with encoding/json.
type RollbackData struct {
	Op     string `json:"op"`
	Bind   string `json:"bind"`
	Source string `json:"source,omitempty"`
	Schema string `json:"schema,omitempty"`
	Table  string `json:"table,omitempty"`
	TxID   string `json:"txid,omitempty"`
	tracker.Retraction
}

// rollbackData encodes the data of a rollback event.
func rollbackData(ev *tracker.Event) []byte {
	c := ev.Change
	d := RollbackData{Op: opRollback, Bind: c.Bind, Source: c.Source, Schema: c.Schema, Table: c.Table, TxID: c.TxID}
	if ev.Retract != nil {
		d.Retraction = *ev.Retract
	}
	if d.TxKey == "" {
		d.TxKey = c.TxKey
	}
	if d.SubTx == "" {
		d.SubTx = c.SubTx
	}
	b, err := json.Marshal(&d)
	if err != nil {
		// Only strings and ints: Marshal cannot fail.
		panic("wire: encode rollback data: " + err.Error())
	}
	return b
}

// EventData returns the data of ev: ev.Data when the tracker has encoded it,
// else the change's JSON ([tracker.Change.AppendJSON]), or for a rollback
// event its [RollbackData].
func EventData(ev *tracker.Event) []byte {
	if ev.Data != nil {
		return ev.Data
	}
	if ev.Lifecycle != nil {
		return lifecycleData(ev.Lifecycle)
	}
	if ev.Phase == tracker.PhaseRollback {
		return rollbackData(ev)
	}
	return ev.Change.AppendJSON(nil)
}

// lifecycleData encodes the data of a lifecycle event: the Lifecycle's
// JSON, its time in UTC.
func lifecycleData(l *tracker.Lifecycle) []byte {
	c := *l
	c.Time = c.Time.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		// Strings, ints and a time in range: Marshal cannot fail.
		panic("wire: encode lifecycle data: " + err.Error())
	}
	return b
}

// EncodeEvent appends the structured-mode CloudEvent JSON of ev to b:
//
//	{"specversion":"1.0","id":"<ev.ID>","source":"/trackerd/<bind>/<origin>",
//	 "type":"trackerd.<phase>","subject":"<schema>.<table>",
//	 "datacontenttype":"application/json","time":"<commit time>",
//	 "data":{...},"trackerdbind":"...","trackerdop":"...","trackerdpos":"...",
//	 "trackerdtxid":"...","trackerdtxseq":"3","trackerdtxtotal":"10"}
//
// The output is byte for byte what github.com/cloudevents/sdk-go/v2's event
// encoder (event.WriteJson, Event.MarshalJSON) writes for the same event,
// at a fraction of its cost (tests hold it to that, and a fuzz test):
// attributes in sdk-go's order, extensions sorted by name, strings escaped
// as sdk-go's JSON writer does them, id, type and subject trimmed of white
// space as sdk-go's setters do, time in RFC 3339 with nanoseconds in UTC,
// and data copied as it is. It differs in one way only: invalid UTF-8 in an
// attribute is replaced by U+FFFD, where sdk-go would copy the bytes and
// write invalid JSON. (sdk-go's structured format, format.JSON, passes that
// output through encoding/json, which also escapes <, >, & and U+2028/2029:
// the same JSON value, other bytes.)
//
// time is left out while the commit time is unknown, subject for a rollback
// with neither schema nor table, trackerdtxtotal outside after_commit. data
// is ev.Data if set, else the change's JSON ([tracker.Change.AppendJSON]),
// or for a rollback event its [RollbackData].
//
// A snapshot row (ev.Snapshot set) also carries [ExtSnapshot], between
// trackerdpos and trackerdtxid in the sorted order. A snapshot's lifecycle
// event (ev.Lifecycle set) is written by [AppendLifecycle].
func EncodeEvent(b []byte, ev *tracker.Event) []byte {
	return AppendEvent(b, ev, EventData(ev))
}

// AppendEvent is EncodeEvent with the data given: a sink that re-encodes
// the data (to leave column values out) writes the envelope around it.
func AppendEvent(b []byte, ev *tracker.Event, data []byte) []byte {
	if ev.Lifecycle != nil {
		return AppendLifecycle(b, ev, data)
	}
	c := ev.Change
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendCEString(b, strings.TrimSpace(ev.ID))
	b = append(b, `,"source":"`...)
	b = appendSource(b, c.Bind, c.Origin) // never needs JSON escaping
	b = append(b, `","type":`...)
	b = appendCEString(b, TypePrefix+strings.TrimRightFunc(string(ev.Phase), unicode.IsSpace))
	if ev.Phase != tracker.PhaseRollback || c.Schema != "" || c.Table != "" {
		b = appendSubject(b, c.Schema, c.Table)
	}
	b = append(b, `,"datacontenttype":"application/json"`...)
	if !c.CommitTime.IsZero() {
		b = append(b, `,"time":"`...)
		b = c.CommitTime.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, `,"trackerdbind":`...)
	b = appendCEString(b, c.Bind)
	b = append(b, `,"trackerdop":`...)
	if ev.Phase == tracker.PhaseRollback {
		b = append(b, `"rollback"`...)
	} else {
		b = appendCEString(b, string(c.Op))
	}
	b = append(b, `,"trackerdpos":`...)
	b = appendCEString(b, c.Pos)
	if ev.Snapshot != "" {
		b = append(b, `,"trackerdsnapshot":`...)
		b = appendCEString(b, ev.Snapshot)
	}
	b = append(b, `,"trackerdtxid":`...)
	b = appendCEString(b, c.TxID)
	b = append(b, `,"trackerdtxseq":"`...)
	b = strconv.AppendInt(b, int64(c.Seq), 10)
	b = append(b, '"')
	if ev.Phase == tracker.PhaseAfterCommit {
		b = append(b, `,"trackerdtxtotal":"`...)
		b = strconv.AppendInt(b, int64(ev.TxTotal), 10)
		b = append(b, '"')
	}
	return append(b, '}')
}

// AppendLifecycle appends the CloudEvent of a snapshot's lifecycle event
// (ev.Lifecycle set) with the given data (see [EventData]: the Lifecycle's
// JSON), byte for byte as sdk-go writes it:
//
//	{"specversion":"1.0","id":"<ev.ID>","source":"/trackerd/<bind>/<origin>",
//	 "type":"trackerd.snapshot.<type>","subject":"<table>",
//	 "datacontenttype":"application/json","time":"<lifecycle time>",
//	 "data":{...},"trackerdbind":"...","trackerdsnapshot":"..."}
//
// The source is the bind's events' own; subject is the table of a
// table_done event and absent otherwise; time is absent when zero.
func AppendLifecycle(b []byte, ev *tracker.Event, data []byte) []byte {
	c, l := ev.Change, ev.Lifecycle
	bind := l.Bind
	if c != nil && c.Bind != "" {
		bind = c.Bind
	}
	origin := ""
	if c != nil {
		origin = c.Origin
	}
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendCEString(b, strings.TrimSpace(ev.ID))
	b = append(b, `,"source":"`...)
	b = appendSource(b, bind, origin)
	b = append(b, `","type":`...)
	b = appendCEString(b, LifecycleTypePrefix+strings.TrimRightFunc(l.Type, unicode.IsSpace))
	if subject := strings.TrimSpace(l.Table); subject != "" {
		b = append(b, `,"subject":`...)
		b = appendCEString(b, subject)
	}
	b = append(b, `,"datacontenttype":"application/json"`...)
	if !l.Time.IsZero() {
		b = append(b, `,"time":"`...)
		b = l.Time.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, `,"trackerdbind":`...)
	b = appendCEString(b, bind)
	b = append(b, `,"trackerdsnapshot":`...)
	b = appendCEString(b, l.Snapshot)
	return append(b, '}')
}

// appendSubject appends the subject member, "schema.table" trimmed of white
// space as sdk-go's SetSubject does. Only white space at the start of the
// schema or the end of the table can be trimmed: the dot stops the rest.
func appendSubject(b []byte, schema, table string) []byte {
	if leadingSpace(schema) || trailingSpace(table) {
		b = append(b, `,"subject":`...)
		return appendCEString(b, strings.TrimSpace(schema+"."+table))
	}
	b = append(b, `,"subject":"`...)
	b = appendCEStringBody(b, schema)
	b = append(b, '.')
	b = appendCEStringBody(b, table)
	return append(b, '"')
}

func leadingSpace(s string) bool {
	if s == "" {
		return false
	}
	if s[0] < utf8.RuneSelf {
		return asciiSpace(s[0])
	}
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsSpace(r)
}

func trailingSpace(s string) bool {
	if s == "" {
		return false
	}
	if c := s[len(s)-1]; c < utf8.RuneSelf {
		return asciiSpace(c)
	}
	r, _ := utf8.DecodeLastRuneInString(s)
	return unicode.IsSpace(r)
}

func asciiSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// appendCEString appends s as a JSON string the way sdk-go's JSON writer
// does ([jsonw.CloudEvents]).
func appendCEString(b []byte, s string) []byte {
	return jsonw.AppendString(b, s, jsonw.CloudEvents)
}

func appendCEStringBody(b []byte, s string) []byte {
	return jsonw.AppendStringBody(b, s, jsonw.CloudEvents)
}
