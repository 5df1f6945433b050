package srckit

import (
	"strconv"
	"testing"
)

func TestRowBuilder(t *testing.T) {
	var b RowBuilder
	for round := range 2 { // the second change reuses the buffer
		b.Reset()
		b.Add(strconv.AppendInt(b.Buf(), int64(round+1), 10)) // key id
		b.Add(strconv.AppendInt(b.Buf(), int64(round+1), 10)) // id
		b.Null()                                              // note
		b.Absent()                                            // blob, not sent
		if b.Len() != 4 {
			t.Fatalf("Len = %d, want 4", b.Len())
		}
		vals := b.Values(1)
		if len(vals) != 5 || vals[4] != nil {
			t.Fatalf("Values(1) has %d values, the extra one %q", len(vals), vals[4])
		}
		vals[4] = vals[1]
		key := Row([]string{"id"}, vals, 0)
		after := Row([]string{"id", "note", "blob"}, vals, 1)
		want := strconv.Itoa(round + 1)
		if got := string(key.AppendJSON(nil)); got != `{"id":`+want+`}` {
			t.Fatalf("key %s", got)
		}
		if got := string(after.AppendJSON(nil)); got != `{"id":`+want+`,"note":null}` || after.Values[2] != nil {
			t.Fatalf("after %s", got)
		}
		if cap(key.Values) != 1 || cap(after.Values) != 3 {
			t.Fatalf("capacities %d, %d: a row could grow into the next", cap(key.Values), cap(after.Values))
		}
		if round == 0 {
			first := after
			b.Reset()
			b.Add(append(b.Buf(), "99"...))
			b.Values(0)
			if string(first.Values[0]) != "1" {
				t.Fatalf("the next change overwrote a handed value: %s", first.Values[0])
			}
		}
	}
}

func TestRowBuilderDropsAHugeBuffer(t *testing.T) {
	var b RowBuilder
	b.Add(append(b.Buf(), make([]byte, 2*maxKept)...))
	b.Values(0)
	if cap(b.Buf()) != 0 {
		t.Fatalf("kept a buffer of %d bytes", cap(b.Buf()))
	}
}

func BenchmarkRowBuilder(b *testing.B) {
	var rb RowBuilder
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	b.ReportAllocs()
	for b.Loop() {
		rb.Reset()
		for i := range names {
			rb.Add(strconv.AppendInt(rb.Buf(), int64(i), 10))
		}
		vals := rb.Values(0)
		_ = Row(names, vals, 0)
	}
}
