package postgres

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// planOf returns the built-in plan of a type OID.
func planOf(t testing.TB, oid uint32) *colType {
	t.Helper()
	return newBuiltinTypes().plan(oid)
}

type valueCase struct {
	name string
	oid  uint32
	in   string
	want string
}

var valueCases = []valueCase{
	{"int2", pgtype.Int2OID, "-32768", `-32768`},
	{"int4", pgtype.Int4OID, "42", `42`},
	{"int4 zero", pgtype.Int4OID, "0", `0`},
	{"int4 not a number", pgtype.Int4OID, "4x2", `"4x2"`},
	{"oid", pgtype.OIDOID, "4294967295", `4294967295`},
	{"int8 small", pgtype.Int8OID, "-123", `-123`},
	{"int8 max safe", pgtype.Int8OID, "9007199254740991", `9007199254740991`},
	{"int8 min safe", pgtype.Int8OID, "-9007199254740991", `-9007199254740991`},
	{"int8 beyond 2^53", pgtype.Int8OID, "9007199254740993", `"9007199254740993"`},
	{"int8 max", pgtype.Int8OID, "9223372036854775807", `"9223372036854775807"`},
	{"int8 min", pgtype.Int8OID, "-9223372036854775808", `"-9223372036854775808"`},
	{"numeric", pgtype.NumericOID, "12.50", `"12.50"`},
	{"numeric NaN", pgtype.NumericOID, "NaN", `"NaN"`},
	{"numeric Infinity", pgtype.NumericOID, "-Infinity", `"-Infinity"`},
	{"float8", pgtype.Float8OID, "0.1", `0.1`},
	{"float8 exponent", pgtype.Float8OID, "1e+100", `1e+100`},
	{"float8 negative zero", pgtype.Float8OID, "-0", `-0`},
	{"float8 NaN", pgtype.Float8OID, "NaN", `"NaN"`},
	{"float8 Infinity", pgtype.Float8OID, "Infinity", `"Infinity"`},
	{"float4 -Infinity", pgtype.Float4OID, "-Infinity", `"-Infinity"`},
	{"bool true", pgtype.BoolOID, "t", `true`},
	{"bool false", pgtype.BoolOID, "f", `false`},
	{"text", pgtype.TextOID, "héllo \"wörld\"\n", `"héllo \"wörld\"\n"`},
	{"text invalid utf8", pgtype.TextOID, "a\xffb", `"a\ufffdb"`},
	{"varchar", pgtype.VarcharOID, "x", `"x"`},
	{"uuid", pgtype.UUIDOID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
	{"jsonb", pgtype.JSONBOID, `{"a": [1, 2.50, "x"]}`, `{"a": [1, 2.50, "x"]}`},
	{"json invalid", pgtype.JSONOID, `{"a":`, `"{\"a\":"`},
	{"bytea hex", pgtype.ByteaOID, `\x00ff10`, `"AP8Q"`},
	{"bytea empty", pgtype.ByteaOID, `\x`, `""`},
	{"bytea escape format", pgtype.ByteaOID, `a\\b\001`, `"YVxiAQ=="`},
	{"bytea bad hex", pgtype.ByteaOID, `\x0g`, `"\\x0g"`},
	{"timestamptz", pgtype.TimestamptzOID, "2024-03-01 12:34:56.789+00", `"2024-03-01T12:34:56.789Z"`},
	{"timestamptz whole second", pgtype.TimestamptzOID, "2024-03-01 12:34:56+00", `"2024-03-01T12:34:56Z"`},
	{"timestamptz offset", pgtype.TimestamptzOID, "2024-03-01 12:34:56.5+05:30", `"2024-03-01T07:04:56.5Z"`},
	{"timestamptz infinity", pgtype.TimestamptzOID, "infinity", `"infinity"`},
	{"timestamptz BC", pgtype.TimestamptzOID, "0044-03-15 12:00:00+00 BC", `"0044-03-15 12:00:00+00 BC"`},
	{"timestamp", pgtype.TimestampOID, "2024-03-01 12:34:56.000001", `"2024-03-01T12:34:56.000001"`},
	{"timestamp -infinity", pgtype.TimestampOID, "-infinity", `"-infinity"`},
	{"date", pgtype.DateOID, "2024-03-01", `"2024-03-01"`},
	{"interval", pgtype.IntervalOID, "P1Y2M3DT4H5M6S", `"P1Y2M3DT4H5M6S"`},
	{"unknown oid", 790 /* money */, "$1.00", `"$1.00"`},
	{"int4 array", pgtype.Int4ArrayOID, "{1,2,NULL}", `[1,2,null]`},
	{"int4 array 2-D", pgtype.Int4ArrayOID, "{{1,2},{3,4}}", `[[1,2],[3,4]]`},
	{"int4 array bounds", pgtype.Int4ArrayOID, "[0:1]={7,8}", `[7,8]`},
	{"empty array", pgtype.TextArrayOID, "{}", `[]`},
	{"text array quoted", pgtype.TextArrayOID, `{a,"b c","NULL","q\"\\",NULL}`, `["a","b c","NULL","q\"\\",null]`},
	{"int8 array", pgtype.Int8ArrayOID, "{1,9223372036854775807}", `[1,"9223372036854775807"]`},
	{"numeric array", pgtype.NumericArrayOID, "{1.5,NaN}", `["1.5","NaN"]`},
	{"bool array", pgtype.BoolArrayOID, "{t,f}", `[true,false]`},
	{"jsonb array", pgtype.JSONBArrayOID, `{"{\"a\": 1}",null}`, `[{"a": 1},null]`},
	{"bytea array", pgtype.ByteaArrayOID, `{"\\x0102"}`, `["AQI="]`},
	{"timestamptz array", pgtype.TimestamptzArrayOID, `{"2024-03-01 00:00:00+00"}`, `["2024-03-01T00:00:00Z"]`},
	{"box array", pgtype.BoxArrayOID, `{(1,1),(0,0);(2,2),(1,1)}`, `["(1,1),(0,0)","(2,2),(1,1)"]`},
	{"malformed array", pgtype.Int4ArrayOID, "{1,2", `"{1,2"`},
	{"array junk after", pgtype.Int4ArrayOID, "{1}x", `"{1}x"`},
}

func TestAppendValue(t *testing.T) {
	for _, tc := range valueCases {
		t.Run(tc.name, func(t *testing.T) {
			var e valueEncoder
			got := string(e.appendValue(nil, planOf(t, tc.oid), []byte(tc.in)))
			if got != tc.want {
				t.Fatalf("appendValue(%q) = %s, want %s", tc.in, got, tc.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("appendValue(%q) = %s: not valid JSON", tc.in, got)
			}
		})
	}
}

func TestReformatFloats(t *testing.T) {
	e := valueEncoder{reformatFloats: true}
	for _, tc := range []struct {
		name string
		oid  uint32
		in   string
		want string
	}{
		{"float8 17 digits", pgtype.Float8OID, "0.10000000000000001", "0.1"},
		{"float4 9 digits", pgtype.Float4OID, "0.100000001", "0.1"},
		{"large", pgtype.Float8OID, "1.0000000000000001e+300", "1e+300"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(e.appendValue(nil, planOf(t, tc.oid), []byte(tc.in))); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPlanForLoadedTypes(t *testing.T) {
	m := pgtype.NewMap()
	enum := &pgtype.Type{Name: "mood", OID: 90001, Codec: &pgtype.EnumCodec{}}
	m.RegisterType(enum)
	int4, _ := m.TypeForOID(pgtype.Int4OID)
	domain := &pgtype.Type{Name: "posint", OID: 90002, Codec: int4.Codec}
	m.RegisterType(domain)
	m.RegisterType(&pgtype.Type{Name: "_mood", OID: 90003, Codec: &pgtype.ArrayCodec{ElementType: enum}})
	m.RegisterType(&pgtype.Type{Name: "_posint", OID: 90004, Codec: &pgtype.ArrayCodec{ElementType: domain}})
	for _, tc := range []struct {
		name string
		oid  uint32
		in   string
		want string
	}{
		{"enum", 90001, "happy", `"happy"`},
		{"domain over int4", 90002, "7", `7`},
		{"enum array", 90003, "{happy,NULL,sad}", `["happy",null,"sad"]`},
		{"domain array", 90004, "{1,2}", `[1,2]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, _ := m.TypeForOID(tc.oid)
			var e valueEncoder
			if got := string(e.appendValue(nil, planForType(typ), []byte(tc.in))); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestLSN(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want lsn
		ok   bool
	}{
		{"zero", "0/0", 0, true},
		{"empty", "", 0, true},
		{"typical", "16/B374D848", 0x16_B374D848, true},
		{"lower case", "16/b374d848", 0x16_B374D848, true},
		{"max", "FFFFFFFF/FFFFFFFF", ^lsn(0), true},
		{"no slash", "16B374D848", 0, false},
		{"empty half", "16/", 0, false},
		{"too long", "123456789/0", 0, false},
		{"junk", "1/2x", 0, false},
		{"two slashes", "1/2/3", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLSN(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseLSN(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
			if tc.ok && tc.in != "" && tc.name != "lower case" {
				if s := formatLSN(got); s != tc.in {
					t.Fatalf("formatLSN(%v) = %q, want %q", got, s, tc.in)
				}
				if s := got.String(); s != tc.in {
					t.Fatalf("pglogrepl formats %q, we %q", s, tc.in)
				}
			}
		})
	}
	if got := txKey(0x16_B374D848); got != "lsn-00000016B374D848" {
		t.Fatalf("txKey = %q", got)
	}
}

func FuzzAppendValue(f *testing.F) {
	for _, tc := range valueCases {
		f.Add(tc.oid, []byte(tc.in))
	}
	types := newBuiltinTypes()
	f.Fuzz(func(t *testing.T, oid uint32, in []byte) {
		var e valueEncoder
		out := e.appendValue([]byte("x"), types.plan(oid), in)
		if out[0] != 'x' || !json.Valid(out[1:]) {
			t.Fatalf("oid %d, %q: %q is not valid JSON", oid, in, out[1:])
		}
	})
}

func BenchmarkValues(b *testing.B) {
	var e valueEncoder
	buf := make([]byte, 0, 1024)
	for _, tc := range []valueCase{valueCases[1], valueCases[7], valueCases[11], valueCases[20], valueCases[32], valueCases[42]} {
		p := planOf(b, tc.oid)
		in := []byte(tc.in)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf = e.appendValue(buf[:0], p, in)
			}
		})
	}
}

func TestStatusInterval(t *testing.T) {
	for _, tc := range []struct {
		name    string
		every   time.Duration
		timeout int64
		want    time.Duration
	}{
		{"default timeout keeps 10s", 10 * time.Second, 60000, 10 * time.Second},
		{"short timeout: a third of it", 10 * time.Second, 10000, 10 * time.Second / 3},
		{"disabled timeout", 10 * time.Second, 0, 10 * time.Second},
		{"tiny timeout: floor", 10 * time.Second, 100, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := statusInterval(tc.every, tc.timeout); got != tc.want {
				t.Fatalf("statusInterval(%v, %d) = %v, want %v", tc.every, tc.timeout, got, tc.want)
			}
		})
	}
}
