package wire

import (
	"reflect"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding/format"

	"github.com/trackerd/trackerd/internal/wiretest"
	"github.com/trackerd/trackerd/tracker"
)

// TestDecodeRoundTrip: every event of the golden files reads back with its
// snapshot extension and lifecycle, from EncodeEvent's output and from
// sdk-go's structured format (json.Marshal, HTML-escaped).
func TestDecodeRoundTrip(t *testing.T) {
	for _, tc := range wiretest.Events() {
		if tc.Name == "invalid-utf8" {
			continue // invalid UTF-8 is replaced: the id differs
		}
		t.Run(tc.Name, func(t *testing.T) {
			viaSDK, err := format.JSON.Marshal(sdkEvent(t, tc.Ev))
			if err != nil {
				t.Fatal(err)
			}
			for name, data := range map[string][]byte{"EncodeEvent": EncodeEvent(nil, tc.Ev), "sdk-go": viaSDK} {
				got, err := Decode(nil, data)
				if err != nil {
					t.Fatalf("%s: Decode: %v\n%s", name, err, data)
				}
				if got.ID != tc.Ev.ID || got.Snapshot != snapshotOf(tc.Ev) {
					t.Errorf("%s: id %q snapshot %q, want %q %q", name, got.ID, got.Snapshot, tc.Ev.ID, snapshotOf(tc.Ev))
				}
				if l := tc.Ev.Lifecycle; l != nil {
					want := *l
					want.Time = want.Time.UTC()
					if got.Lifecycle == nil || !reflect.DeepEqual(*got.Lifecycle, want) {
						t.Errorf("%s: lifecycle %+v, want %+v", name, got.Lifecycle, want)
					}
					if got.Phase != tracker.PhaseAfterCommit || got.Change.Bind != l.Bind || got.Change.Origin != tc.Ev.Change.Origin || got.Change.Op != "" {
						t.Errorf("%s: lifecycle event decoded as phase %q change %+v", name, got.Phase, got.Change)
					}
					continue
				}
				if got.Lifecycle != nil {
					t.Errorf("%s: a lifecycle on a change event: %+v", name, got.Lifecycle)
				}
				c := tc.Ev.Change
				if got.Phase != tc.Ev.Phase || got.Change.Op != c.Op && tc.Ev.Phase != tracker.PhaseRollback || got.Change.Table != c.Table || got.Change.TxKey != c.TxKey {
					t.Errorf("%s: decoded %+v, want the change %+v", name, got.Change, c)
				}
			}
		})
	}
}

func snapshotOf(ev *tracker.Event) string {
	if ev.Lifecycle != nil {
		return ev.Lifecycle.Snapshot
	}
	return ev.Snapshot
}

// TestDecodeLifecycleBinaryMode reads a lifecycle event sdk-go relays in
// binary mode: attributes in ce-* headers, the data as the body.
func TestDecodeLifecycleBinaryMode(t *testing.T) {
	var ev *tracker.Event
	for _, tc := range wiretest.Events() {
		if tc.Name == "lifecycle-table-done" {
			ev = tc.Ev
		}
	}
	e := sdkEvent(t, ev)
	h := map[string][]string{HeaderContentType: {DataContentType}}
	for name, v := range e.Context.AsV1().Extensions {
		h["ce-"+name] = []string{v.(string)}
	}
	for name, v := range map[string]string{"specversion": "1.0", "id": e.ID(), "source": e.Source(), "type": e.Type(), "subject": e.Subject(),
		"time": e.Time().Format("2006-01-02T15:04:05.999999999Z07:00")} {
		h["ce-"+name] = []string{v}
	}
	got, err := Decode(h, e.Data())
	if err != nil {
		t.Fatal(err)
	}
	if got.Lifecycle == nil || got.Lifecycle.Type != tracker.LifecycleTableDone || got.Lifecycle.Rows != 1200 || got.Snapshot != "01JF3Q8Z" ||
		got.Change.Schema != "public" || got.Change.Table != "orders" {
		t.Fatalf("binary mode: %+v %+v", got, got.Lifecycle)
	}
}

func TestDecodeLifecycleErrors(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"error - no id", `{"specversion":"1.0","source":"/x","type":"trackerd.snapshot.started","data":{"type":"started"}}`},
		{"error - data not an object", `{"specversion":"1.0","id":"1","source":"/x","type":"trackerd.snapshot.started","data":[1]}`},
		{"error - type and data disagree", `{"specversion":"1.0","id":"1","source":"/x","type":"trackerd.snapshot.started","data":{"type":"failed"}}`},
		{"error - bad time", `{"specversion":"1.0","id":"1","source":"/x","type":"trackerd.snapshot.started","time":"soon","data":{"type":"started"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ev, err := Decode(nil, []byte(tc.data)); err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", tc.data, ev)
			}
		})
	}
}
