package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trackerd/trackerd/internal/fastjson"
	"github.com/trackerd/trackerd/tracker"
)

// Event is a trackerd event read back from its message: what [EncodeEvent]
// wrote, less what only the transport knows (subject, stream sequence).
type Event struct {
	// Change is the row change. For a rollback event it describes the
	// transaction only (Bind, Source, Schema and Table when the retraction
	// concerns one table, TxID, TxKey, SubTx, Seq), and its Op is empty.
	Change tracker.Change
	// Phase is the event's type without TypePrefix.
	Phase tracker.Phase
	// ID and Source are the CloudEvent id and source.
	ID, Source string
	// TxTotal is trackerdtxtotal, 0 when absent (outside after_commit).
	TxTotal int
	// Time is the CloudEvent time, zero when absent.
	Time time.Time
	// Retract is set on rollback events, from their [RollbackData].
	Retract *tracker.Retraction
	// Snapshot is trackerdsnapshot: the snapshot or backfill that read a
	// row of op snapshot, or the snapshot of a lifecycle event.
	Snapshot string
	// Lifecycle is set on a snapshot's lifecycle event (type
	// trackerd.snapshot.<type>), from its data. Phase is then after_commit,
	// and Change holds only the bind, the origin and, for table_done, the
	// table (split at its first dot into Schema and Table).
	Lifecycle *tracker.Lifecycle
}

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
	Snapshot        string          `json:"trackerdsnapshot"`
}

// Decode reads a trackerd event from a message's headers and body: a
// structured-mode CloudEvent (Content-Type application/cloudevents+json,
// as trackerd publishes it), or a binary-mode one (ce-* headers, the body
// being the data), as sdk-go writes when it relays an event. header may be
// a nats.Header. Its errors say what is not a trackerd event.
func Decode(header map[string][]string, data []byte) (Event, error) {
	var ce ceJSON
	if binaryMode(header) {
		ce = binaryEvent(header, data)
	} else if err := fastjson.Unmarshal(data, &ce); err != nil {
		return Event{}, err
	}
	return fromCloudEvent(&ce)
}

// binaryMode reports a binary-mode CloudEvent: a ce-specversion header, in
// any case (NATS headers are case-sensitive; writers differ).
func binaryMode(h map[string][]string) bool {
	for k := range h {
		if strings.EqualFold(k, "ce-specversion") {
			return true
		}
	}
	return false
}

// binaryEvent reads a binary-mode CloudEvent: attributes in ce-* headers.
func binaryEvent(h map[string][]string, data []byte) ceJSON {
	get := func(name string) string {
		for k, vs := range h {
			if len(vs) > 0 && strings.EqualFold(k, "ce-"+name) {
				return vs[0]
			}
		}
		return ""
	}
	var contentType string
	if vs := h[HeaderContentType]; len(vs) > 0 {
		contentType = vs[0]
	}
	return ceJSON{
		SpecVersion: get("specversion"), ID: get("id"), Source: get("source"), Type: get("type"),
		Subject: get("subject"), DataContentType: contentType, Time: get("time"), Data: data,
		Bind: get(ExtBind), Op: get(ExtOp), Pos: get(ExtPos),
		TxID: get(ExtTxID), TxSeq: get(ExtTxSeq), TxTotal: get(ExtTxTotal), Snapshot: get(ExtSnapshot),
	}
}

func fromCloudEvent(ce *ceJSON) (Event, error) {
	if ce.SpecVersion != SpecVersion {
		return Event{}, fmt.Errorf("specversion %q, want %q", ce.SpecVersion, SpecVersion)
	}
	if typ, ok := strings.CutPrefix(ce.Type, LifecycleTypePrefix); ok {
		return lifecycleEvent(ce, typ)
	}
	phase, ok := strings.CutPrefix(ce.Type, TypePrefix)
	if !ok || !tracker.Phase(phase).Valid() {
		return Event{}, fmt.Errorf("type %q is not a trackerd event type", ce.Type)
	}
	if ce.ID == "" {
		return Event{}, errors.New("no id")
	}
	m := Event{Phase: tracker.Phase(phase), ID: ce.ID, Source: ce.Source, Snapshot: ce.Snapshot}
	var err error
	if m.Time, err = ceTime(ce.Time); err != nil {
		return Event{}, err
	}
	if ce.TxTotal != "" {
		n, err := strconv.Atoi(ce.TxTotal)
		if err != nil || n < 0 {
			return Event{}, fmt.Errorf("%s %q: want a count", ExtTxTotal, ce.TxTotal)
		}
		m.TxTotal = n
	}
	seq := -1
	if ce.TxSeq != "" {
		n, err := strconv.Atoi(ce.TxSeq)
		if err != nil || n < 0 {
			return Event{}, fmt.Errorf("%s %q: want a sequence number", ExtTxSeq, ce.TxSeq)
		}
		seq = n
	}
	if m.Phase == tracker.PhaseRollback {
		var d RollbackData
		if err := fastjson.Unmarshal(ce.Data, &d); err != nil {
			return Event{}, fmt.Errorf("rollback data: %v", err)
		}
		m.Change = tracker.Change{Bind: d.Bind, Source: d.Source, Schema: d.Schema, Table: d.Table,
			TxID: d.TxID, TxKey: d.TxKey, SubTx: d.SubTx}
		r := d.Retraction
		m.Retract = &r
	} else if err := m.Change.UnmarshalJSON(ce.Data); err != nil {
		return Event{}, fmt.Errorf("data: %v", err)
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

// ceTime reads the CloudEvent time, zero when absent.
func ceTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: %v", s, err)
	}
	return t, nil
}

// lifecycleEvent reads a snapshot's lifecycle event, of type
// trackerd.snapshot.<typ>.
func lifecycleEvent(ce *ceJSON, typ string) (Event, error) {
	if ce.ID == "" {
		return Event{}, errors.New("no id")
	}
	var l tracker.Lifecycle
	if err := fastjson.Unmarshal(ce.Data, &l); err != nil {
		return Event{}, fmt.Errorf("snapshot lifecycle data: %v", err)
	}
	if l.Type == "" {
		l.Type = typ
	} else if l.Type != typ {
		return Event{}, fmt.Errorf("type %q holds a lifecycle event of type %q", ce.Type, l.Type)
	}
	if l.Bind == "" {
		l.Bind = ce.Bind
	}
	if l.Snapshot == "" {
		l.Snapshot = ce.Snapshot
	}
	t, err := ceTime(ce.Time)
	if err != nil {
		return Event{}, err
	}
	if l.Time.IsZero() {
		l.Time = t
	}
	m := Event{Phase: tracker.PhaseAfterCommit, ID: ce.ID, Source: ce.Source, Time: t, Snapshot: l.Snapshot, Lifecycle: &l}
	m.Change = tracker.Change{Bind: l.Bind, Origin: sourceOrigin(ce.Source), CommitTime: t}
	if l.Table != "" {
		m.Change.Schema, m.Change.Table, _ = strings.Cut(l.Table, ".")
		if m.Change.Table == "" {
			m.Change.Schema, m.Change.Table = "", l.Table
		}
	}
	return m, nil
}

// sourceOrigin returns the origin of a source "/trackerd/<bind>/<origin>"
// (see [Source]), empty for the "/trackerd/<bind>" of trackerd before
// 2026-12.
func sourceOrigin(source string) string {
	rest, ok := strings.CutPrefix(source, SourcePrefix)
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

// idIndex returns the index part of an event id
// <bind>/<origin>/<txkey>/<index>/<phase> (see [tracker.EventID]), 0 when
// the id has another shape.
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
