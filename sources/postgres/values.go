package postgres

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// valueKind is how a column's text form becomes JSON (see the package
// documentation for the table).
type valueKind uint8

const (
	kindString      valueKind = iota // any text, as a JSON string
	kindInt                          // int2, int4, oid, xid, cid: a JSON number
	kindInt8                         // int8, xid8: a number up to 2^53-1, else a string
	kindNumeric                      // numeric: always a string (exact)
	kindFloat                        // float4, float8: a number; NaN and infinities as strings
	kindBool                         // bool: true or false
	kindJSON                         // json, jsonb: embedded
	kindBytea                        // bytea: standard base64 string
	kindTimestamptz                  // RFC 3339 UTC string
	kindTimestamp                    // RFC 3339 without offset
	kindArray                        // a JSON array of the element type's encoding
)

// colType is the decoding plan of one column (or array element) type.
type colType struct {
	kind  valueKind
	elem  *colType // arrays: the element type
	delim byte     // arrays: the element delimiter, ',' except for box
	bits  int      // floats: 32 or 64
}

// stringPlan is the plan of types decoded as strings.
func stringPlan() *colType { return &colType{kind: kindString} }

// maxArrayDepth bounds array nesting (PostgreSQL's MAXDIM is 6).
const maxArrayDepth = 6

// planForType derives a column plan from a pgx type: the codec says what
// kind of value it is, so loaded user types (domains carry their base type's
// codec, enums the enum codec, arrays the array codec) decode like the
// built-in ones.
func planForType(t *pgtype.Type) *colType {
	return planForTypeDepth(t, 0)
}

func planForTypeDepth(t *pgtype.Type, depth int) *colType {
	if t == nil || depth > maxArrayDepth {
		return stringPlan()
	}
	switch c := t.Codec.(type) {
	case pgtype.Int2Codec, *pgtype.Int2Codec, pgtype.Int4Codec, *pgtype.Int4Codec,
		pgtype.Uint32Codec, *pgtype.Uint32Codec:
		return &colType{kind: kindInt}
	case pgtype.Int8Codec, *pgtype.Int8Codec, pgtype.Uint64Codec, *pgtype.Uint64Codec:
		return &colType{kind: kindInt8}
	case pgtype.NumericCodec, *pgtype.NumericCodec:
		return &colType{kind: kindNumeric}
	case pgtype.Float4Codec, *pgtype.Float4Codec:
		return &colType{kind: kindFloat, bits: 32}
	case pgtype.Float8Codec, *pgtype.Float8Codec:
		return &colType{kind: kindFloat, bits: 64}
	case pgtype.BoolCodec, *pgtype.BoolCodec:
		return &colType{kind: kindBool}
	case *pgtype.JSONCodec, *pgtype.JSONBCodec:
		return &colType{kind: kindJSON}
	case pgtype.ByteaCodec, *pgtype.ByteaCodec:
		return &colType{kind: kindBytea}
	case *pgtype.TimestamptzCodec:
		return &colType{kind: kindTimestamptz}
	case *pgtype.TimestampCodec:
		return &colType{kind: kindTimestamp}
	case *pgtype.ArrayCodec:
		d := c.Delimiter
		if d == 0 {
			d = ','
		}
		return &colType{kind: kindArray, elem: planForTypeDepth(c.ElementType, depth+1), delim: d}
	}
	return stringPlan()
}

// valueEncoder turns column text into JSON. It keeps scratch buffers, so one
// encoder must not be used from two goroutines at once.
type valueEncoder struct {
	raw   []byte // bytea: decoded bytes
	quote []byte // arrays: an unescaped quoted element
	// reformatFloats re-encodes floats in the shortest round-trip form,
	// for servers before PostgreSQL 12 whose extra_float_digits=3 output
	// has 17 significant digits.
	reformatFloats bool
}

// bytesString views b as a string without copying. The callers only pass the
// view to functions that read it and do not keep it.
func bytesString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func appendString(b, v []byte) []byte {
	return tracker.AppendJSONString(b, bytesString(v))
}

// appendValue appends the JSON encoding of v, a column's text form, to b.
// It never fails: text it cannot interpret becomes a JSON string.
func (e *valueEncoder) appendValue(b []byte, t *colType, v []byte) []byte {
	switch t.kind {
	case kindInt:
		if isJSONInteger(v) {
			return append(b, v...)
		}
	case kindInt8:
		if srckit.SafeIntText(v) { // DESIGN section 4: beyond 2^53-1, a string
			return append(b, v...)
		}
	case kindFloat:
		if isJSONNumber(v) {
			if e.reformatFloats {
				return appendShortestFloat(b, v, t.bits)
			}
			return append(b, v...)
		}
	case kindBool:
		if len(v) == 1 {
			switch v[0] {
			case 't':
				return append(b, "true"...)
			case 'f':
				return append(b, "false"...)
			}
		}
	case kindJSON:
		if json.Valid(v) {
			return append(b, v...)
		}
	case kindBytea:
		if raw, ok := e.decodeBytea(v); ok {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			return append(b, '"')
		}
	case kindTimestamptz:
		return appendTimestamptz(b, v)
	case kindTimestamp:
		return appendTimestamp(b, v)
	case kindArray:
		start := len(b)
		if out, ok := e.appendArray(b, t, v); ok {
			return out
		}
		b = b[:start]
	}
	return appendString(b, v)
}

// isJSONInteger reports whether v is -?(0|[1-9][0-9]*).
func isJSONInteger(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if len(v) == 0 || (v[0] == '0' && len(v) > 1) {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isJSONNumber reports whether v is a JSON number:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(v []byte) bool {
	i := 0
	if i < len(v) && v[i] == '-' {
		i++
	}
	switch {
	case i < len(v) && v[i] == '0':
		i++
	case i < len(v) && v[i] >= '1' && v[i] <= '9':
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(v) && v[i] == '.' {
		i++
		d := i
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		d := i
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	return i == len(v)
}

// decodeBytea decodes bytea's text output, hex ("\x0a0b") or the older
// escape format, into e.raw.
func (e *valueEncoder) decodeBytea(v []byte) ([]byte, bool) {
	raw := e.raw[:0]
	if len(v) >= 2 && v[0] == '\\' && v[1] == 'x' {
		h := v[2:]
		if len(h)%2 != 0 {
			return nil, false
		}
		for i := 0; i < len(h); i += 2 {
			hi, ok1 := unhex(h[i])
			lo, ok2 := unhex(h[i+1])
			if !ok1 || !ok2 {
				return nil, false
			}
			raw = append(raw, hi<<4|lo)
		}
		e.raw = raw
		return raw, true
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\\' {
			raw = append(raw, c)
			continue
		}
		switch {
		case i+1 < len(v) && v[i+1] == '\\':
			raw = append(raw, '\\')
			i++
		case i+3 < len(v) && isOctal(v[i+1]) && isOctal(v[i+2]) && isOctal(v[i+3]) && v[i+1] <= '3':
			raw = append(raw, (v[i+1]-'0')<<6|(v[i+2]-'0')<<3|(v[i+3]-'0'))
			i += 3
		default:
			return nil, false
		}
	}
	e.raw = raw
	return raw, true
}

// appendShortestFloat re-encodes the float text v in the shortest form that
// reads back to the same value.
func appendShortestFloat(b, v []byte, bits int) []byte {
	if bits != 32 {
		bits = 64
	}
	f, err := strconv.ParseFloat(bytesString(v), bits)
	if err != nil {
		return append(b, v...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// isISODateTime reports whether v starts with "YYYY-MM-DD HH:MM:SS" and
// returns the length of that prefix (19), or 0.
func isISODateTime(v []byte) bool {
	if len(v) < 19 {
		return false
	}
	for i := 0; i < 19; i++ {
		c := v[i]
		switch i {
		case 4, 7:
			if c != '-' {
				return false
			}
		case 10:
			if c != ' ' {
				return false
			}
		case 13, 16:
			if c != ':' {
				return false
			}
		default:
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// fractionEnd returns the index after an optional ".digits" at v[i:].
func fractionEnd(v []byte, i int) int {
	if i < len(v) && v[i] == '.' {
		j := i + 1
		for j < len(v) && v[j] >= '0' && v[j] <= '9' {
			j++
		}
		if j > i+1 {
			return j
		}
	}
	return i
}

// appendTimestamptz turns "2006-01-02 15:04:05.999999+00" (the output with
// TimeZone=UTC and DateStyle=ISO) into "2006-01-02T15:04:05.999999Z".
// Other offsets are converted to UTC; infinity, BC dates and years past
// 9999 stay as the server wrote them, as strings.
func appendTimestamptz(b, v []byte) []byte {
	if isISODateTime(v) {
		end := fractionEnd(v, 19)
		if string(v[end:]) == "+00" {
			b = append(b, '"')
			b = append(b, v[:10]...)
			b = append(b, 'T')
			b = append(b, v[11:end]...)
			return append(b, 'Z', '"')
		}
		for _, layout := range [...]string{"2006-01-02 15:04:05.999999999-07", "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999-07:00:00"} {
			if t, err := time.Parse(layout, string(v)); err == nil {
				b = append(b, '"')
				b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.999999Z")
				return append(b, '"')
			}
		}
	}
	return appendString(b, v)
}

// appendTimestamp turns "2006-01-02 15:04:05.999999" into
// "2006-01-02T15:04:05.999999" (no offset: the column has none).
func appendTimestamp(b, v []byte) []byte {
	if isISODateTime(v) && fractionEnd(v, 19) == len(v) {
		b = append(b, '"')
		b = append(b, v[:10]...)
		b = append(b, 'T')
		b = append(b, v[11:]...)
		return append(b, '"')
	}
	return appendString(b, v)
}
