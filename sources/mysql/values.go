package mysql

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/trackerd/trackerd/sources/internal/srckit"
)

// colKind refines how a column's value is encoded, beyond its binlog type.
type colKind uint8

const (
	kindPlain colKind = iota
	// kindJSONText is MariaDB's JSON: LONGTEXT with a json_valid CHECK,
	// embedded as JSON when the text is valid JSON.
	kindJSONText
	// kindUUID is MariaDB's UUID type (16 bytes in record order).
	kindUUID
	// kindINET6 is MariaDB's INET6 type (16 bytes, network order).
	kindINET6
	// kindINET4 is MariaDB's INET4 type (4 bytes, network order).
	kindINET4
)

// column is one column of a table as the row decoder needs it: its binlog
// type and metadata from the TABLE_MAP event, refined with signedness,
// charset and labels from the event's optional metadata or from
// information_schema.
type column struct {
	name string
	// typ is the real type: for MYSQL_TYPE_STRING columns the ENUM, SET or
	// STRING type packed into the metadata.
	typ byte
	// meta is the TABLE_MAP metadata of the column.
	meta uint16
	// length is the maximum byte length of STRING columns, the pack
	// length of ENUM and the byte count of SET columns.
	length   int
	unsigned bool
	kind     colKind
	cs       charset
	// labels are the ENUM or SET labels, in order.
	labels []string
}

// newColumn builds a column from a TABLE_MAP type and metadata, resolving
// the real type of MYSQL_TYPE_STRING columns as the server packs it.
func newColumn(name string, typ byte, meta uint16) column {
	c := column{name: name, typ: typ, meta: meta}
	switch typ {
	case gm.MYSQL_TYPE_STRING:
		if meta >= 256 {
			b0 := byte(meta >> 8)
			b1 := byte(meta & 0xFF)
			if b0&0x30 != 0x30 {
				c.length = int(uint16(b1) | uint16((b0&0x30)^0x30)<<4)
				c.typ = b0 | 0x30
			} else {
				c.length = int(b1)
				c.typ = b0
			}
		} else {
			c.length = int(meta)
		}
	case gm.MYSQL_TYPE_ENUM, gm.MYSQL_TYPE_SET:
		c.length = int(meta & 0xFF)
	}
	return c
}

// isText reports whether the column holds character data that a charset
// applies to.
func (c *column) isText() bool {
	switch c.typ {
	case gm.MYSQL_TYPE_STRING, gm.MYSQL_TYPE_VARCHAR, gm.MYSQL_TYPE_VAR_STRING, gm.MYSQL_TYPE_BLOB:
		return true
	}
	return false
}

// isNumeric reports whether the column is a numeric type, the ones the
// TABLE_MAP signedness bitmap has a bit for.
func isNumericType(t byte) bool {
	switch t {
	case gm.MYSQL_TYPE_TINY, gm.MYSQL_TYPE_SHORT, gm.MYSQL_TYPE_INT24, gm.MYSQL_TYPE_LONG,
		gm.MYSQL_TYPE_LONGLONG, gm.MYSQL_TYPE_DECIMAL, gm.MYSQL_TYPE_NEWDECIMAL,
		gm.MYSQL_TYPE_FLOAT, gm.MYSQL_TYPE_DOUBLE, gm.MYSQL_TYPE_YEAR:
		return true
	}
	return false
}

var errShort = errors.New("value truncated")

// appendValue decodes one non-NULL value of column c from the start of data,
// appends it to dst as JSON, and returns the number of bytes it used.
// Malformed input gives an error, never a panic.
func appendValue(dst []byte, c *column, data []byte, escapeInvalid bool) ([]byte, int, error) {
	switch c.typ {
	case gm.MYSQL_TYPE_NULL:
		return append(dst, "null"...), 0, nil
	case gm.MYSQL_TYPE_TINY:
		if len(data) < 1 {
			return dst, 0, errShort
		}
		if c.unsigned {
			return strconv.AppendUint(dst, uint64(data[0]), 10), 1, nil
		}
		return strconv.AppendInt(dst, int64(int8(data[0])), 10), 1, nil
	case gm.MYSQL_TYPE_SHORT:
		if len(data) < 2 {
			return dst, 0, errShort
		}
		v := binary.LittleEndian.Uint16(data)
		if c.unsigned {
			return strconv.AppendUint(dst, uint64(v), 10), 2, nil
		}
		return strconv.AppendInt(dst, int64(int16(v)), 10), 2, nil
	case gm.MYSQL_TYPE_INT24:
		if len(data) < 3 {
			return dst, 0, errShort
		}
		v := uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16
		if c.unsigned {
			return strconv.AppendUint(dst, uint64(v), 10), 3, nil
		}
		if v&0x800000 != 0 {
			v |= 0xFF000000
		}
		return strconv.AppendInt(dst, int64(int32(v)), 10), 3, nil
	case gm.MYSQL_TYPE_LONG:
		if len(data) < 4 {
			return dst, 0, errShort
		}
		v := binary.LittleEndian.Uint32(data)
		if c.unsigned {
			return strconv.AppendUint(dst, uint64(v), 10), 4, nil
		}
		return strconv.AppendInt(dst, int64(int32(v)), 10), 4, nil
	case gm.MYSQL_TYPE_LONGLONG:
		if len(data) < 8 {
			return dst, 0, errShort
		}
		v := binary.LittleEndian.Uint64(data)
		if c.unsigned {
			return srckit.AppendUint(dst, v), 8, nil
		}
		return srckit.AppendInt(dst, int64(v)), 8, nil
	case gm.MYSQL_TYPE_YEAR:
		if len(data) < 1 {
			return dst, 0, errShort
		}
		if data[0] == 0 {
			return append(dst, '0'), 1, nil
		}
		return strconv.AppendInt(dst, 1900+int64(data[0]), 10), 1, nil
	case gm.MYSQL_TYPE_FLOAT:
		if len(data) < 4 {
			return dst, 0, errShort
		}
		f := math.Float32frombits(binary.LittleEndian.Uint32(data))
		return appendFloat(dst, float64(f), 32), 4, nil
	case gm.MYSQL_TYPE_DOUBLE:
		if len(data) < 8 {
			return dst, 0, errShort
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(data))
		return appendFloat(dst, f, 64), 8, nil
	case gm.MYSQL_TYPE_NEWDECIMAL:
		dst = append(dst, '"')
		dst, n, err := appendDecimal(dst, data, int(c.meta>>8), int(c.meta&0xFF))
		if err != nil {
			return dst, 0, err
		}
		return append(dst, '"'), n, nil
	case gm.MYSQL_TYPE_BIT:
		nbits := int(c.meta>>8)*8 + int(c.meta&0xFF)
		n := (nbits + 7) / 8
		if n > 8 {
			return dst, 0, fmt.Errorf("BIT of %d bits", nbits)
		}
		if len(data) < n {
			return dst, 0, errShort
		}
		var v uint64
		for _, b := range data[:n] {
			v = v<<8 | uint64(b)
		}
		return srckit.AppendUint(dst, v), n, nil
	case gm.MYSQL_TYPE_TIMESTAMP:
		if len(data) < 4 {
			return dst, 0, errShort
		}
		return appendTimestamp(dst, int64(binary.LittleEndian.Uint32(data)), 0, 0), 4, nil
	case gm.MYSQL_TYPE_TIMESTAMP2:
		dec := int(c.meta)
		n := 4 + (dec+1)/2
		if dec > 6 {
			return dst, 0, fmt.Errorf("TIMESTAMP(%d)", dec)
		}
		if len(data) < n {
			return dst, 0, errShort
		}
		sec := int64(binary.BigEndian.Uint32(data))
		usec, err := fracMicros(data[4:n], dec)
		if err != nil {
			return dst, 0, err
		}
		return appendTimestamp(dst, sec, usec, dec), n, nil
	case gm.MYSQL_TYPE_DATETIME:
		if len(data) < 8 {
			return dst, 0, errShort
		}
		v := binary.LittleEndian.Uint64(data)
		d, t := v/1000000, v%1000000
		dt := dateTime{
			year: int(d / 10000), month: int(d % 10000 / 100), day: int(d % 100),
			hour: int(t / 10000), minute: int(t % 10000 / 100), second: int(t % 100),
		}
		dst, err := dt.appendJSON(dst, 0)
		return dst, 8, err
	case gm.MYSQL_TYPE_DATETIME2:
		dec := int(c.meta)
		if dec > 6 {
			return dst, 0, fmt.Errorf("DATETIME(%d)", dec)
		}
		n := 5 + (dec+1)/2
		if len(data) < n {
			return dst, 0, errShort
		}
		raw := uint64(data[0])<<32 | uint64(binary.BigEndian.Uint32(data[1:]))
		if raw < 0x8000000000 {
			return dst, 0, errors.New("negative DATETIME")
		}
		ymdhms := raw - 0x8000000000
		ymd := ymdhms >> 17
		ym := ymd >> 5
		hms := ymdhms & (1<<17 - 1)
		usec, err := fracMicros(data[5:n], dec)
		if err != nil {
			return dst, 0, err
		}
		dt := dateTime{
			year: int(ym / 13), month: int(ym % 13), day: int(ymd & 31),
			hour: int(hms >> 12), minute: int(hms >> 6 & 63), second: int(hms & 63),
			usec: usec,
		}
		dst, err = dt.appendJSON(dst, dec)
		return dst, n, err
	case gm.MYSQL_TYPE_DATE, gm.MYSQL_TYPE_NEWDATE:
		if len(data) < 3 {
			return dst, 0, errShort
		}
		v := uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16
		dst = append(dst, '"')
		dst = appendDate(dst, int(v>>9), int(v>>5&15), int(v&31))
		return append(dst, '"'), 3, nil
	case gm.MYSQL_TYPE_TIME:
		if len(data) < 3 {
			return dst, 0, errShort
		}
		v := int32(uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16)
		if v&0x800000 != 0 {
			v |= -0x1000000
		}
		neg := v < 0
		if neg {
			v = -v
		}
		return appendTime(dst, neg, int(v/10000), int(v%10000/100), int(v%100), 0), 3, nil
	case gm.MYSQL_TYPE_TIME2:
		dec := int(c.meta)
		if dec > 6 {
			return dst, 0, fmt.Errorf("TIME(%d)", dec)
		}
		n := 3 + (dec+1)/2
		if len(data) < n {
			return dst, 0, errShort
		}
		packed := time2Packed(data[:n], dec)
		neg := packed < 0
		if neg {
			packed = -packed
		}
		hms := packed >> 24
		usec := int(packed & (1<<24 - 1))
		if usec > 999999 {
			return dst, 0, errors.New("bad TIME fraction")
		}
		return appendTime(dst, neg, int(hms>>12&1023), int(hms>>6&63), int(hms&63), usec), n, nil
	case gm.MYSQL_TYPE_ENUM:
		var idx int
		switch c.length {
		case 1:
			if len(data) < 1 {
				return dst, 0, errShort
			}
			idx = int(data[0])
		case 2:
			if len(data) < 2 {
				return dst, 0, errShort
			}
			idx = int(binary.LittleEndian.Uint16(data))
		default:
			return dst, 0, fmt.Errorf("ENUM pack length %d", c.length)
		}
		return appendEnum(dst, c, idx, escapeInvalid), c.length, nil
	case gm.MYSQL_TYPE_SET:
		n := c.length
		if n < 1 || n > 8 {
			return dst, 0, fmt.Errorf("SET of %d bytes", n)
		}
		if len(data) < n {
			return dst, 0, errShort
		}
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(data[i])
		}
		return appendSet(dst, c, v), n, nil
	case gm.MYSQL_TYPE_VARCHAR, gm.MYSQL_TYPE_VAR_STRING:
		b, n, err := lengthPrefixed(data, int(c.meta))
		if err != nil {
			return dst, 0, err
		}
		return appendString(dst, c, b, escapeInvalid), n, nil
	case gm.MYSQL_TYPE_STRING:
		b, n, err := lengthPrefixed(data, c.length)
		if err != nil {
			return dst, 0, err
		}
		return appendString(dst, c, b, escapeInvalid), n, nil
	case gm.MYSQL_TYPE_BLOB, gm.MYSQL_TYPE_GEOMETRY, gm.MYSQL_TYPE_VECTOR:
		b, n, err := blob(data, int(c.meta))
		if err != nil {
			return dst, 0, err
		}
		if c.typ != gm.MYSQL_TYPE_BLOB {
			return appendBase64(dst, b), n, nil
		}
		return appendString(dst, c, b, escapeInvalid), n, nil
	case gm.MYSQL_TYPE_JSON:
		b, n, err := blob(data, int(c.meta))
		if err != nil {
			return dst, 0, err
		}
		if len(b) == 0 {
			// An empty document (INSERT IGNORE of NULL into NOT NULL):
			// MySQL reads it as JSON null.
			return append(dst, "null"...), n, nil
		}
		dst, err = appendJSONB(dst, b)
		return dst, n, err
	}
	return dst, 0, fmt.Errorf("unsupported column type %d", c.typ)
}

// appendString encodes a string-like value by the column's kind and charset.
func appendString(dst []byte, c *column, b []byte, escapeInvalid bool) []byte {
	switch c.kind {
	case kindJSONText:
		if utf8.Valid(b) {
			if out, err := appendCompactJSON(dst, b); err == nil {
				return out
			}
		}
	case kindUUID:
		if u, ok := uuidFromRecord(b); ok {
			return appendUUID(dst, u)
		}
	case kindINET6:
		if len(b) <= 16 {
			var a [16]byte
			copy(a[:], b)
			dst = append(dst, '"')
			dst = netip.AddrFrom16(a).AppendTo(dst)
			return append(dst, '"')
		}
	case kindINET4:
		if len(b) <= 4 {
			var a [4]byte
			copy(a[:], b)
			dst = append(dst, '"')
			dst = netip.AddrFrom4(a).AppendTo(dst)
			return append(dst, '"')
		}
	}
	if c.cs.kind == textBinary && c.typ == gm.MYSQL_TYPE_STRING && len(b) < c.length {
		// BINARY(n) is right-padded with zero bytes; the binlog leaves the
		// padding out and a SELECT puts it back.
		return appendBase64Padded(dst, b, c.length)
	}
	return appendText(dst, b, &c.cs, escapeInvalid)
}

// appendCompactJSON appends the compact form of JSON text b, or returns
// an error (and dst unchanged) when b is not JSON.
func appendCompactJSON(dst, b []byte) ([]byte, error) {
	buf := bytes.NewBuffer(dst)
	if err := json.Compact(buf, b); err != nil {
		return dst, err
	}
	return buf.Bytes(), nil
}

func appendEnum(dst []byte, c *column, idx int, escapeInvalid bool) []byte {
	if idx == 0 {
		// The empty string MySQL stores for an invalid value.
		return append(dst, `""`...)
	}
	if idx <= len(c.labels) {
		return appendJSONText(dst, []byte(c.labels[idx-1]), escapeInvalid)
	}
	return strconv.AppendInt(dst, int64(idx), 10)
}

func appendSet(dst []byte, c *column, v uint64) []byte {
	if len(c.labels) == 0 {
		return srckit.AppendUint(dst, v)
	}
	dst = append(dst, '[')
	first := true
	for i := 0; i < 64 && v>>uint(i) != 0; i++ {
		if v&(1<<uint(i)) == 0 {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if i < len(c.labels) {
			dst = appendJSONText(dst, []byte(c.labels[i]), false)
		} else {
			dst = strconv.AppendInt(dst, int64(i+1), 10)
		}
	}
	return append(dst, ']')
}

// lengthPrefixed reads a string with a 1-byte length prefix when maxLen
// is below 256, else a 2-byte one.
func lengthPrefixed(data []byte, maxLen int) ([]byte, int, error) {
	if maxLen < 256 {
		if len(data) < 1 {
			return nil, 0, errShort
		}
		l := int(data[0])
		if len(data) < 1+l {
			return nil, 0, errShort
		}
		return data[1 : 1+l], 1 + l, nil
	}
	if len(data) < 2 {
		return nil, 0, errShort
	}
	l := int(binary.LittleEndian.Uint16(data))
	if len(data) < 2+l {
		return nil, 0, errShort
	}
	return data[2 : 2+l], 2 + l, nil
}

// blob reads a value with a packLen-byte little-endian length prefix.
func blob(data []byte, packLen int) ([]byte, int, error) {
	if packLen < 1 || packLen > 4 {
		return nil, 0, fmt.Errorf("blob pack length %d", packLen)
	}
	if len(data) < packLen {
		return nil, 0, errShort
	}
	var l uint64
	for i := packLen - 1; i >= 0; i-- {
		l = l<<8 | uint64(data[i])
	}
	if uint64(len(data)-packLen) < l {
		return nil, 0, errShort
	}
	end := packLen + int(l)
	return data[packLen:end], end, nil
}

func appendBase64(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

func appendBase64Padded(dst, b []byte, n int) []byte {
	var small [256]byte
	buf := small[:0]
	if n > len(small) {
		buf = make([]byte, 0, n)
	}
	buf = append(buf, b...)
	for len(buf) < n {
		buf = append(buf, 0)
	}
	return appendBase64(dst, buf)
}

// appendFloat appends f as encoding/json does, with bits of precision (32
// for FLOAT, so 0.1 stays 0.1). NaN and infinities, which MySQL cannot
// store, become strings.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		dst = append(dst, '"')
		dst = strconv.AppendFloat(dst, f, 'g', -1, bits)
		return append(dst, '"')
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// fracMicros decodes the big-endian fractional-seconds bytes of a
// TIME2/DATETIME2/TIMESTAMP2 value with dec digits into microseconds.
func fracMicros(b []byte, dec int) (int, error) {
	var v int
	switch dec {
	case 0:
		return 0, nil
	case 1, 2:
		v = int(b[0]) * 10000
	case 3, 4:
		v = int(binary.BigEndian.Uint16(b)) * 100
	case 5, 6:
		v = int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	}
	if v > 999999 {
		return 0, errors.New("bad fractional seconds")
	}
	return v, nil
}

// time2Packed converts a TIME2 value to MySQL's packed longlong form
// (my_time_packed_from_binary).
func time2Packed(b []byte, dec int) int64 {
	const intOfs = 0x800000
	intpart := int64(uint32(b[0])<<16|uint32(b[1])<<8|uint32(b[2])) - intOfs
	switch dec {
	case 1, 2:
		frac := int64(b[3])
		if intpart < 0 && frac != 0 {
			intpart++
			frac -= 0x100
		}
		return intpart<<24 + frac*10000
	case 3, 4:
		frac := int64(binary.BigEndian.Uint16(b[3:]))
		if intpart < 0 && frac != 0 {
			intpart++
			frac -= 0x10000
		}
		return intpart<<24 + frac*100
	case 5, 6:
		v := int64(b[0])<<40 | int64(b[1])<<32 | int64(b[2])<<24 | int64(b[3])<<16 | int64(b[4])<<8 | int64(b[5])
		return v - 0x800000000000
	}
	return intpart << 24
}

// dateTime is a DATETIME value's fields.
type dateTime struct {
	year, month, day, hour, minute, second, usec int
}

// appendJSON appends a DATETIME as "2006-01-02T15:04:05.999999" (no zone,
// fraction without trailing zeros). A date with a zero month or day (zero
// dates) is kept literally as MySQL shows it: "0000-00-00 00:00:00" with
// dec fraction digits.
func (d dateTime) appendJSON(dst []byte, dec int) ([]byte, error) {
	if d.month > 12 || d.day > 31 || d.hour > 23 || d.minute > 59 || d.second > 59 || d.year > 9999 {
		return dst, errors.New("bad DATETIME")
	}
	dst = append(dst, '"')
	dst = appendDate(dst, d.year, d.month, d.day)
	if d.month == 0 || d.day == 0 {
		dst = append(dst, ' ')
		dst = appendClock(dst, d.hour, d.minute, d.second)
		dst = appendFixedFrac(dst, d.usec, dec)
		return append(dst, '"'), nil
	}
	dst = append(dst, 'T')
	dst = appendClock(dst, d.hour, d.minute, d.second)
	dst = appendTrimmedFrac(dst, d.usec)
	return append(dst, '"'), nil
}

// appendTimestamp appends a TIMESTAMP (seconds since the epoch, UTC) as
// RFC 3339 with Z; 0 is the zero date, kept literally.
func appendTimestamp(dst []byte, sec int64, usec, dec int) []byte {
	dst = append(dst, '"')
	if sec == 0 {
		dst = append(dst, "0000-00-00 00:00:00"...)
		dst = appendFixedFrac(dst, usec, dec)
		return append(dst, '"')
	}
	t := time.Unix(sec, 0).UTC()
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	dst = appendDate(dst, y, int(mo), d)
	dst = append(dst, 'T')
	dst = appendClock(dst, h, mi, s)
	dst = appendTrimmedFrac(dst, usec)
	return append(dst, 'Z', '"')
}

// appendTime appends a TIME as "[-]hh:mm:ss.ffffff" (hours may exceed 24,
// fraction without trailing zeros).
func appendTime(dst []byte, neg bool, h, m, s, usec int) []byte {
	dst = append(dst, '"')
	if neg {
		dst = append(dst, '-')
	}
	if h < 10 {
		dst = append(dst, '0')
	}
	dst = strconv.AppendInt(dst, int64(h), 10)
	dst = append(dst, ':')
	dst = append2(dst, m)
	dst = append(dst, ':')
	dst = append2(dst, s)
	dst = appendTrimmedFrac(dst, usec)
	return append(dst, '"')
}

func appendDate(dst []byte, y, m, d int) []byte {
	dst = append(dst, byte('0'+y/1000%10), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	dst = append2(dst, m)
	dst = append(dst, '-')
	return append2(dst, d)
}

func appendClock(dst []byte, h, m, s int) []byte {
	dst = append2(dst, h)
	dst = append(dst, ':')
	dst = append2(dst, m)
	dst = append(dst, ':')
	return append2(dst, s)
}

func append2(dst []byte, v int) []byte {
	return append(dst, byte('0'+v/10%10), byte('0'+v%10))
}

// appendTrimmedFrac appends ".ffffff" without trailing zeros, nothing for 0.
func appendTrimmedFrac(dst []byte, usec int) []byte {
	if usec == 0 {
		return dst
	}
	var buf [7]byte
	buf[0] = '.'
	for i := 6; i >= 1; i-- {
		buf[i] = byte('0' + usec%10)
		usec /= 10
	}
	n := 7
	for buf[n-1] == '0' {
		n--
	}
	return append(dst, buf[:n]...)
}

// appendFixedFrac appends dec fraction digits (MySQL's display form).
func appendFixedFrac(dst []byte, usec, dec int) []byte {
	if dec <= 0 {
		return dst
	}
	var buf [7]byte
	buf[0] = '.'
	for i := 6; i >= 1; i-- {
		buf[i] = byte('0' + usec%10)
		usec /= 10
	}
	return append(dst, buf[:1+dec]...)
}

// dig2bytes is the number of bytes a group of n < 9 decimal digits takes in
// MySQL's binary DECIMAL format.
var dig2bytes = [10]int{0, 1, 1, 2, 2, 3, 3, 4, 4, 4}

// decimalSize returns the byte size of a binary DECIMAL(precision, scale).
func decimalSize(precision, scale int) int {
	intg := precision - scale
	return intg/9*4 + dig2bytes[intg%9] + scale/9*4 + dig2bytes[scale%9]
}

// appendDecimal decodes MySQL's binary DECIMAL(precision, scale) and
// appends its exact digits ("-12.3400"), the form MySQL displays: scale
// fraction digits, no leading zeros.
func appendDecimal(dst []byte, data []byte, precision, scale int) ([]byte, int, error) {
	if precision < 1 || precision > 65 || scale > 38 || scale > precision {
		return dst, 0, fmt.Errorf("DECIMAL(%d,%d)", precision, scale)
	}
	intg := precision - scale
	intg0, intg0x := intg/9, intg%9
	frac0, frac0x := scale/9, scale%9
	size := decimalSize(precision, scale)
	if len(data) < size {
		return dst, 0, errShort
	}
	var raw [48]byte
	b := raw[:size]
	copy(b, data[:size])
	neg := b[0]&0x80 == 0
	b[0] ^= 0x80
	if neg {
		for i := range b {
			b[i] ^= 0xFF
		}
	}
	// Digits of the integer part, then the fraction, at most 65+ digits.
	var digits [96]byte
	nd := 0
	readGroup := func(p []byte, ndig int) error {
		var v uint32
		for _, x := range p {
			v = v<<8 | uint32(x)
		}
		lim := uint32(1)
		for range ndig {
			lim *= 10
		}
		if v >= lim {
			return errors.New("bad DECIMAL digits")
		}
		for i := ndig - 1; i >= 0; i-- {
			digits[nd+i] = byte('0' + v%10)
			v /= 10
		}
		nd += ndig
		return nil
	}
	p := 0
	if intg0x > 0 {
		n := dig2bytes[intg0x]
		if err := readGroup(b[p:p+n], intg0x); err != nil {
			return dst, 0, err
		}
		p += n
	}
	for range intg0 {
		if err := readGroup(b[p:p+4], 9); err != nil {
			return dst, 0, err
		}
		p += 4
	}
	intDigits := nd
	for range frac0 {
		if err := readGroup(b[p:p+4], 9); err != nil {
			return dst, 0, err
		}
		p += 4
	}
	if frac0x > 0 {
		n := dig2bytes[frac0x]
		if err := readGroup(b[p:p+n], frac0x); err != nil {
			return dst, 0, err
		}
	}
	ip := digits[:intDigits]
	for len(ip) > 1 && ip[0] == '0' {
		ip = ip[1:]
	}
	fp := digits[intDigits:nd]
	zero := true
	for _, d := range ip {
		if d != '0' {
			zero = false
		}
	}
	for _, d := range fp {
		if d != '0' {
			zero = false
		}
	}
	if neg && !zero {
		dst = append(dst, '-')
	}
	if len(ip) == 0 {
		dst = append(dst, '0')
	} else {
		dst = append(dst, ip...)
	}
	if len(fp) > 0 {
		dst = append(dst, '.')
		dst = append(dst, fp...)
	}
	return dst, size, nil
}

// uuidFromRecord converts a MariaDB UUID column's record bytes to the
// UUID's memory (display) order. MariaDB stores RFC 4122 variant UUIDs of
// versions 1-5 with their segments swapped (node, clock-seq, time-hi,
// time-mid, time-low) so that time-based UUIDs index well; it marks them by
// the variant bit, which the swap brings to byte 6.
func uuidFromRecord(b []byte) ([16]byte, bool) {
	var u [16]byte
	if len(b) > 16 {
		return u, false
	}
	var rec [16]byte
	copy(rec[:], b)
	if rec[6]&0x80 == 0 {
		return rec, true
	}
	// record: node(6) clock_seq(2) time_hi(2) time_mid(2) time_low(4)
	copy(u[0:4], rec[12:16])
	copy(u[4:6], rec[10:12])
	copy(u[6:8], rec[8:10])
	copy(u[8:10], rec[6:8])
	copy(u[10:16], rec[0:6])
	return u, true
}

func appendUUID(dst []byte, u [16]byte) []byte {
	dst = append(dst, '"')
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexLower[x>>4], hexLower[x&0xF])
	}
	return append(dst, '"')
}

// valueSize returns the number of bytes one non-NULL value of column c
// takes at the start of data, without decoding it: what appendValue would
// use. It counts the rows of tables a bind does not track.
func valueSize(c *column, data []byte) (int, error) {
	n := 0
	switch c.typ {
	case gm.MYSQL_TYPE_NULL:
		return 0, nil
	case gm.MYSQL_TYPE_TINY, gm.MYSQL_TYPE_YEAR:
		n = 1
	case gm.MYSQL_TYPE_SHORT:
		n = 2
	case gm.MYSQL_TYPE_INT24, gm.MYSQL_TYPE_DATE, gm.MYSQL_TYPE_NEWDATE, gm.MYSQL_TYPE_TIME:
		n = 3
	case gm.MYSQL_TYPE_LONG, gm.MYSQL_TYPE_FLOAT, gm.MYSQL_TYPE_TIMESTAMP:
		n = 4
	case gm.MYSQL_TYPE_LONGLONG, gm.MYSQL_TYPE_DOUBLE, gm.MYSQL_TYPE_DATETIME:
		n = 8
	case gm.MYSQL_TYPE_NEWDECIMAL:
		precision, scale := int(c.meta>>8), int(c.meta&0xFF)
		if precision < 1 || precision > 65 || scale > 38 || scale > precision {
			return 0, fmt.Errorf("DECIMAL(%d,%d)", precision, scale)
		}
		n = decimalSize(precision, scale)
	case gm.MYSQL_TYPE_BIT:
		nbits := int(c.meta>>8)*8 + int(c.meta&0xFF)
		n = (nbits + 7) / 8
		if n > 8 {
			return 0, fmt.Errorf("BIT of %d bits", nbits)
		}
	case gm.MYSQL_TYPE_TIMESTAMP2, gm.MYSQL_TYPE_DATETIME2, gm.MYSQL_TYPE_TIME2:
		dec := int(c.meta)
		if dec > 6 {
			return 0, fmt.Errorf("fractional seconds of %d digits", dec)
		}
		switch c.typ {
		case gm.MYSQL_TYPE_TIMESTAMP2:
			n = 4
		case gm.MYSQL_TYPE_DATETIME2:
			n = 5
		default:
			n = 3
		}
		n += (dec + 1) / 2
	case gm.MYSQL_TYPE_ENUM:
		if c.length != 1 && c.length != 2 {
			return 0, fmt.Errorf("ENUM pack length %d", c.length)
		}
		n = c.length
	case gm.MYSQL_TYPE_SET:
		if c.length < 1 || c.length > 8 {
			return 0, fmt.Errorf("SET of %d bytes", c.length)
		}
		n = c.length
	case gm.MYSQL_TYPE_VARCHAR, gm.MYSQL_TYPE_VAR_STRING:
		_, n, err := lengthPrefixed(data, int(c.meta))
		return n, err
	case gm.MYSQL_TYPE_STRING:
		_, n, err := lengthPrefixed(data, c.length)
		return n, err
	case gm.MYSQL_TYPE_BLOB, gm.MYSQL_TYPE_GEOMETRY, gm.MYSQL_TYPE_VECTOR, gm.MYSQL_TYPE_JSON:
		_, n, err := blob(data, int(c.meta))
		return n, err
	default:
		return 0, fmt.Errorf("unsupported column type %d", c.typ)
	}
	if len(data) < n {
		return 0, errShort
	}
	return n, nil
}
