package mysql

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// jsonbObj is an object with ordered members, for the test encoder.
type jsonbObj []struct {
	k string
	v any
}

// jsonbEncoder writes MySQL binary JSON (json_binary.cc), small or large
// containers.
type jsonbEncoder struct{ large bool }

func (e jsonbEncoder) doc(v any) []byte {
	t, b := e.value(v)
	return append([]byte{t}, b...)
}

func varLen(n int) []byte {
	var out []byte
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

// value returns the type byte and the encoded value (not inlined).
func (e jsonbEncoder) value(v any) (byte, []byte) {
	switch x := v.(type) {
	case nil:
		return jsonbLiteral, []byte{jsonbLiteralNull}
	case bool:
		if x {
			return jsonbLiteral, []byte{jsonbLiteralTrue}
		}
		return jsonbLiteral, []byte{jsonbLiteralFalse}
	case int16:
		return jsonbInt16, binary.LittleEndian.AppendUint16(nil, uint16(x))
	case int32:
		return jsonbInt32, binary.LittleEndian.AppendUint32(nil, uint32(x))
	case int64:
		return jsonbInt64, binary.LittleEndian.AppendUint64(nil, uint64(x))
	case uint64:
		return jsonbUint64, binary.LittleEndian.AppendUint64(nil, x)
	case float64:
		return jsonbDouble, binary.LittleEndian.AppendUint64(nil, math.Float64bits(x))
	case string:
		return jsonbString, append(varLen(len(x)), x...)
	case opaque:
		return jsonbOpaque, append(append([]byte{x.typ}, varLen(len(x.data))...), x.data...)
	case []any:
		return e.container(false, nil, x)
	case jsonbObj:
		keys := make([]string, len(x))
		vals := make([]any, len(x))
		for i, m := range x {
			keys[i], vals[i] = m.k, m.v
		}
		return e.container(true, keys, vals)
	}
	panic("unsupported")
}

type opaque struct {
	typ  byte
	data []byte
}

func (e jsonbEncoder) container(object bool, keys []string, vals []any) (byte, []byte) {
	off := 2
	if e.large {
		off = 4
	}
	put := func(b []byte, v int) []byte {
		if e.large {
			return binary.LittleEndian.AppendUint32(b, uint32(v))
		}
		return binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	hdr := 2*off + len(vals)*(1+off)
	if object {
		hdr += len(keys) * (off + 2)
	}
	var tail []byte
	var keyEntries, valEntries []byte
	for _, k := range keys {
		keyEntries = put(keyEntries, hdr+len(tail))
		keyEntries = binary.LittleEndian.AppendUint16(keyEntries, uint16(len(k)))
		tail = append(tail, k...)
	}
	for _, v := range vals {
		t, b := e.value(v)
		inline := t == jsonbLiteral || t == jsonbInt16 || t == jsonbUint16 || e.large && (t == jsonbInt32 || t == jsonbUint32)
		valEntries = append(valEntries, t)
		if inline {
			var in [4]byte
			copy(in[:], b)
			valEntries = append(valEntries, in[:off]...)
			continue
		}
		valEntries = put(valEntries, hdr+len(tail))
		tail = append(tail, b...)
	}
	out := put(nil, len(vals))
	out = put(out, hdr+len(tail))
	out = append(out, keyEntries...)
	out = append(out, valEntries...)
	out = append(out, tail...)
	typ := byte(jsonbSmallArray)
	if object {
		typ = jsonbSmallObject
	}
	if e.large {
		typ++
	}
	return typ, out
}

func jsonbCases() []struct {
	name string
	v    any
	want string
} {
	decimal := opaque{gm.MYSQL_TYPE_NEWDECIMAL, append([]byte{14, 4}, 0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2)}
	// 2015-01-15 23:24:25.5 packed: ymd<<17|hms <<24 | usec
	ymd := int64((2015*13+1)<<5 | 15)
	packed := (ymd<<17|int64(23<<12|24<<6|25))<<24 | 500000
	dt := opaque{gm.MYSQL_TYPE_DATETIME, binary.LittleEndian.AppendUint64(nil, uint64(packed))}
	neg := -(int64(100<<12|2<<6|3)<<24 | 4)
	tm := opaque{gm.MYSQL_TYPE_TIME, binary.LittleEndian.AppendUint64(nil, uint64(neg))}
	return []struct {
		name string
		v    any
		want string
	}{
		{"null", nil, `null`},
		{"true", true, `true`},
		{"int16", int16(-2), `-2`},
		{"int32", int32(-70000), `-70000`},
		{"int64", int64(math.MinInt64), `-9223372036854775808`},
		{"uint64 max stays exact", uint64(math.MaxUint64), `18446744073709551615`},
		{"double", 2.5, `2.5`},
		{"string", "hé \"x\"", `"hé \"x\""`},
		{"long string", string(make([]byte, 300)), `"` + repeat(`\u0000`, 300) + `"`},
		{"array", []any{int16(1), "a", nil, false, 1.5}, `[1,"a",null,false,1.5]`},
		{"object", jsonbObj{{"k", true}, {"n", int32(5)}, {"s", "v"}}, `{"k":true,"n":5,"s":"v"}`},
		{"nested", jsonbObj{{"a", []any{int16(1), jsonbObj{{"b", nil}}}}, {"c", "x"}}, `{"a":[1,{"b":null}],"c":"x"}`},
		{"empty object", jsonbObj{}, `{}`},
		{"empty array", []any{}, `[]`},
		{"decimal", []any{decimal}, `[1234567890.1234]`},
		{"datetime", dt, `"2015-01-15 23:24:25.500000"`},
		{"negative time", tm, `"-100:02:03.000004"`},
		{"other opaque", opaque{gm.MYSQL_TYPE_BLOB, []byte{1, 2}}, `"base64:type252:AQI="`},
	}
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestAppendJSONB(t *testing.T) {
	for _, large := range []bool{false, true} {
		enc := jsonbEncoder{large: large}
		for _, tc := range jsonbCases() {
			name := tc.name
			if large {
				name += " large"
			}
			t.Run(name, func(t *testing.T) {
				got, err := appendJSONB(nil, enc.doc(tc.v))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tc.want {
					t.Errorf("got %s, want %s", got, tc.want)
				}
				if !json.Valid(got) {
					t.Errorf("%s is not valid JSON", got)
				}
			})
		}
	}
}

func TestAppendJSONBErrors(t *testing.T) {
	cases := []struct {
		name string
		doc  []byte
	}{
		{"empty", nil},
		{"bad type", []byte{0x0e}},
		{"bad literal", []byte{jsonbLiteral, 9}},
		{"short int", []byte{jsonbInt32, 1}},
		{"string too long", []byte{jsonbString, 5, 'a'}},
		{"size beyond data", []byte{jsonbSmallArray, 1, 0, 100, 0}},
		{"count beyond size", []byte{jsonbSmallArray, 200, 0, 7, 0, 0, 0, 0}},
		{"offset beyond size", []byte{jsonbSmallArray, 1, 0, 7, 0, jsonbString, 50, 0}},
		{"key beyond size", []byte{jsonbSmallObject, 1, 0, 11, 0, 40, 0, 1, 0, jsonbLiteral, 1, 0}},
		{"nested too deeply", nestedArrays(200)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := appendJSONB(nil, tc.doc); err == nil {
				t.Fatalf("got %s, want an error", got)
			}
		})
	}
}

// nestedArrays builds [[[...]]] n deep.
func nestedArrays(n int) []byte {
	var v any = []any{}
	for range n {
		v = []any{v}
	}
	return jsonbEncoder{}.doc(v)
}

func FuzzAppendJSONB(f *testing.F) {
	for _, large := range []bool{false, true} {
		for _, tc := range jsonbCases() {
			f.Add(jsonbEncoder{large: large}.doc(tc.v))
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, err := appendJSONB(nil, doc)
		if err == nil && !json.Valid(out) {
			t.Fatalf("invalid JSON %q from %x", out, doc)
		}
	})
}
