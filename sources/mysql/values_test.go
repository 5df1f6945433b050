package mysql

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// encodeDecimal writes s in MySQL's binary DECIMAL(prec, scale) format
// (decimal2bin), the inverse of appendDecimal.
func encodeDecimal(t testing.TB, s string, prec, scale int) []byte {
	t.Helper()
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	ip, fp, _ := strings.Cut(s, ".")
	intg := prec - scale
	if len(ip) > intg || len(fp) > scale {
		t.Fatalf("%s does not fit DECIMAL(%d,%d)", s, prec, scale)
	}
	ip = strings.Repeat("0", intg-len(ip)) + ip
	fp += strings.Repeat("0", scale-len(fp))
	var out []byte
	put := func(digits string, n int) {
		v, err := strconv.ParseUint(digits, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		for i := n - 1; i >= 0; i-- {
			out = append(out, byte(v>>(8*uint(i))))
		}
	}
	intg0, intg0x := intg/9, intg%9
	frac0, frac0x := scale/9, scale%9
	if intg0x > 0 {
		put(ip[:intg0x], dig2bytes[intg0x])
	}
	for i := range intg0 {
		put(ip[intg0x+9*i:intg0x+9*i+9], 4)
	}
	for i := range frac0 {
		put(fp[9*i:9*i+9], 4)
	}
	if frac0x > 0 {
		put(fp[9*frac0:], dig2bytes[frac0x])
	}
	out[0] ^= 0x80
	if neg {
		for i := range out {
			out[i] ^= 0xFF
		}
	}
	return out
}

// encodeFrac writes microseconds as the fsp bytes of a dec-digit column.
func encodeFrac(usec, dec int) []byte {
	switch dec {
	case 1, 2:
		return []byte{byte(usec / 10000)}
	case 3, 4:
		return binary.BigEndian.AppendUint16(nil, uint16(usec/100))
	case 5, 6:
		return []byte{byte(usec >> 16), byte(usec >> 8), byte(usec)}
	}
	return nil
}

func encodeDatetime2(y, mo, d, h, mi, s, usec, dec int) []byte {
	ym := uint64(y*13 + mo)
	v := (ym<<5|uint64(d))<<17 | uint64(h<<12|mi<<6|s)
	v += 0x8000000000
	out := []byte{byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return append(out, encodeFrac(usec, dec)...)
}

func encodeTimestamp2(sec uint32, usec, dec int) []byte {
	return append(binary.BigEndian.AppendUint32(nil, sec), encodeFrac(usec, dec)...)
}

// encodeTime2 follows my_time_packed_to_binary.
func encodeTime2(neg bool, h, m, s, usec, dec int) []byte {
	nr := int64(h<<12|m<<6|s)<<24 | int64(usec)
	if neg {
		nr = -nr
	}
	const intOfs = 0x800000
	put3 := func(v int64) []byte { return []byte{byte(v >> 16), byte(v >> 8), byte(v)} }
	intPart := nr >> 24
	frac := nr % (1 << 24)
	switch dec {
	case 0:
		return put3(intOfs + intPart)
	case 1, 2:
		return append(put3(intOfs+intPart), byte(int8(frac/10000)))
	case 3, 4:
		return binary.BigEndian.AppendUint16(put3(intOfs+intPart), uint16(int16(frac/100)))
	default:
		v := nr + 0x800000000000
		return []byte{byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
}

func le(n int, v uint64) []byte {
	b := make([]byte, n)
	for i := range n {
		b[i] = byte(v >> (8 * uint(i)))
	}
	return b
}

func prefixed(n int, s string) []byte { return append(le(n, uint64(len(s))), s...) }

// stringMeta packs a MYSQL_TYPE_STRING column's real type and length as
// the server does.
func stringMeta(real byte, length int) uint16 {
	return uint16(real^byte((length>>4)&0x30))<<8 | uint16(length&0xFF)
}

type valueCase struct {
	name   string
	col    column
	data   []byte
	want   string
	wantN  int // 0: len(data)
	escape bool
	err    bool
}

func col(typ byte, meta uint16, opts ...func(*column)) column {
	c := newColumn("c", typ, meta)
	for _, o := range opts {
		o(&c)
	}
	return c
}

func unsigned(c *column) { c.unsigned = true }
func latin1(c *column)   { c.cs = charset{kind: textLatin1} }
func binaryCS(c *column) { c.cs = charset{kind: textBinary} }
func labels(l ...string) func(*column) {
	return func(c *column) { c.labels = l }
}
func kind(k colKind) func(*column) { return func(c *column) { c.kind = k } }

func valueCases(t testing.TB) []valueCase {
	return []valueCase{
		{name: "tinyint signed", col: col(gm.MYSQL_TYPE_TINY, 0), data: []byte{0xFF}, want: `-1`},
		{name: "tinyint unsigned", col: col(gm.MYSQL_TYPE_TINY, 0, unsigned), data: []byte{0xFF}, want: `255`},
		{name: "smallint signed", col: col(gm.MYSQL_TYPE_SHORT, 0), data: le(2, 0x8000), want: `-32768`},
		{name: "mediumint signed", col: col(gm.MYSQL_TYPE_INT24, 0), data: le(3, 0xFFFFFF), want: `-1`},
		{name: "mediumint unsigned", col: col(gm.MYSQL_TYPE_INT24, 0, unsigned), data: le(3, 0xFFFFFF), want: `16777215`},
		{name: "int signed", col: col(gm.MYSQL_TYPE_LONG, 0), data: le(4, 0x80000000), want: `-2147483648`},
		{name: "int unsigned", col: col(gm.MYSQL_TYPE_LONG, 0, unsigned), data: le(4, 0xFFFFFFFF), want: `4294967295`},
		{name: "bigint unsigned max", col: col(gm.MYSQL_TYPE_LONGLONG, 0, unsigned), data: le(8, math.MaxUint64), want: `"18446744073709551615"`},
		{name: "bigint 2^53-1 stays a number", col: col(gm.MYSQL_TYPE_LONGLONG, 0), data: le(8, 1<<53-1), want: `9007199254740991`},
		{name: "bigint 2^53 is a string", col: col(gm.MYSQL_TYPE_LONGLONG, 0), data: le(8, 1<<53), want: `"9007199254740992"`},
		{name: "bigint min", col: col(gm.MYSQL_TYPE_LONGLONG, 0), data: le(8, 1<<63), want: `"-9223372036854775808"`},
		{name: "bigint -(2^53-1)", col: col(gm.MYSQL_TYPE_LONGLONG, 0), data: le(8, uint64(-(1<<53-1)&(1<<64-1))), want: `-9007199254740991`},
		{name: "year", col: col(gm.MYSQL_TYPE_YEAR, 0), data: []byte{124}, want: `2024`},
		{name: "year zero", col: col(gm.MYSQL_TYPE_YEAR, 0), data: []byte{0}, want: `0`},
		{name: "float keeps float32 precision", col: col(gm.MYSQL_TYPE_FLOAT, 4), data: le(4, uint64(math.Float32bits(0.1))), want: `0.1`},
		{name: "float large", col: col(gm.MYSQL_TYPE_FLOAT, 4), data: le(4, uint64(math.Float32bits(3.4e38))), want: `3.4e+38`},
		{name: "double", col: col(gm.MYSQL_TYPE_DOUBLE, 8), data: le(8, math.Float64bits(-2.5)), want: `-2.5`},
		{name: "double tiny", col: col(gm.MYSQL_TYPE_DOUBLE, 8), data: le(8, math.Float64bits(1e-7)), want: `1e-7`},
		{name: "double NaN is a string", col: col(gm.MYSQL_TYPE_DOUBLE, 8), data: le(8, math.Float64bits(math.NaN())), want: `"NaN"`},
		{name: "decimal documented vector", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 14<<8|4), data: []byte{0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2}, want: `"1234567890.1234"`},
		{name: "decimal documented negative", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 14<<8|4), data: []byte{0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D}, want: `"-1234567890.1234"`},
		{name: "decimal 65,30", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 65<<8|30), data: encodeDecimal(t, "-12345678901234567890123456789012345.123456789012345678901234567890", 65, 30), want: `"-12345678901234567890123456789012345.123456789012345678901234567890"`},
		{name: "decimal zero", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 5<<8|2), data: encodeDecimal(t, "0", 5, 2), want: `"0.00"`},
		{name: "decimal negative fraction", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 5<<8|2), data: encodeDecimal(t, "-0.5", 5, 2), want: `"-0.50"`},
		{name: "decimal no scale", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 10<<8), data: encodeDecimal(t, "-42", 10, 0), want: `"-42"`},
		{name: "decimal only scale", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 3<<8|3), data: encodeDecimal(t, ".125", 3, 3), want: `"0.125"`},
		{name: "decimal bad digits", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 9<<8), data: []byte{0xFF, 0xFF, 0xFF, 0xFF}, err: true},
		{name: "decimal bad precision", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 0), data: []byte{0x80}, err: true},
		{name: "bit 64 max", col: col(gm.MYSQL_TYPE_BIT, 8<<8), data: []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, want: `"18446744073709551615"`},
		{name: "bit 5", col: col(gm.MYSQL_TYPE_BIT, 5), data: []byte{0x15}, want: `21`},
		{name: "bit 10", col: col(gm.MYSQL_TYPE_BIT, 1<<8|2), data: []byte{0x02, 0x01}, want: `513`},
		{name: "timestamp", col: col(gm.MYSQL_TYPE_TIMESTAMP, 0), data: le(4, 1714557600), want: `"2024-05-01T10:00:00Z"`},
		{name: "timestamp2 fraction", col: col(gm.MYSQL_TYPE_TIMESTAMP2, 6), data: encodeTimestamp2(1714557600, 500000, 6), want: `"2024-05-01T10:00:00.5Z"`},
		{name: "timestamp2 millis", col: col(gm.MYSQL_TYPE_TIMESTAMP2, 3), data: encodeTimestamp2(1714557600, 123000, 3), want: `"2024-05-01T10:00:00.123Z"`},
		{name: "timestamp2 zero", col: col(gm.MYSQL_TYPE_TIMESTAMP2, 3), data: encodeTimestamp2(0, 0, 3), want: `"0000-00-00 00:00:00.000"`},
		{name: "datetime2", col: col(gm.MYSQL_TYPE_DATETIME2, 6), data: encodeDatetime2(2024, 2, 29, 23, 59, 58, 123456, 6), want: `"2024-02-29T23:59:58.123456"`},
		{name: "datetime2 no fraction", col: col(gm.MYSQL_TYPE_DATETIME2, 0), data: encodeDatetime2(1999, 12, 31, 23, 59, 59, 0, 0), want: `"1999-12-31T23:59:59"`},
		{name: "datetime2 fraction 2", col: col(gm.MYSQL_TYPE_DATETIME2, 2), data: encodeDatetime2(2000, 1, 1, 0, 0, 0, 120000, 2), want: `"2000-01-01T00:00:00.12"`},
		{name: "datetime2 zero date", col: col(gm.MYSQL_TYPE_DATETIME2, 6), data: encodeDatetime2(0, 0, 0, 0, 0, 0, 0, 6), want: `"0000-00-00 00:00:00.000000"`},
		{name: "datetime2 zero in date", col: col(gm.MYSQL_TYPE_DATETIME2, 0), data: encodeDatetime2(2024, 0, 0, 0, 0, 0, 0, 0), want: `"2024-00-00 00:00:00"`},
		{name: "datetime2 bad month", col: col(gm.MYSQL_TYPE_DATETIME2, 0), data: encodeDatetime2(2024, 0, 31, 25, 0, 0, 0, 0), err: true},
		{name: "datetime old", col: col(gm.MYSQL_TYPE_DATETIME, 0), data: le(8, 20240501123456), want: `"2024-05-01T12:34:56"`},
		{name: "date", col: col(gm.MYSQL_TYPE_DATE, 0), data: le(3, 2024<<9|5<<5|1), want: `"2024-05-01"`},
		{name: "date zero", col: col(gm.MYSQL_TYPE_DATE, 0), data: le(3, 0), want: `"0000-00-00"`},
		{name: "time2", col: col(gm.MYSQL_TYPE_TIME2, 0), data: encodeTime2(false, 12, 34, 56, 0, 0), want: `"12:34:56"`},
		{name: "time2 negative fraction", col: col(gm.MYSQL_TYPE_TIME2, 1), data: encodeTime2(true, 12, 34, 56, 500000, 1), want: `"-12:34:56.5"`},
		{name: "time2 negative millis", col: col(gm.MYSQL_TYPE_TIME2, 3), data: encodeTime2(true, 0, 0, 1, 1000, 3), want: `"-00:00:01.001"`},
		{name: "time2 long", col: col(gm.MYSQL_TYPE_TIME2, 6), data: encodeTime2(false, 838, 59, 59, 999999, 6), want: `"838:59:59.999999"`},
		{name: "time2 negative micros", col: col(gm.MYSQL_TYPE_TIME2, 6), data: encodeTime2(true, 1, 2, 3, 4, 6), want: `"-01:02:03.000004"`},
		{name: "time old negative", col: col(gm.MYSQL_TYPE_TIME, 0), data: le(3, 0x1000000-123456), want: `"-12:34:56"`},
		{name: "enum label", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_ENUM, 1), labels("small", "medium")), data: []byte{2}, want: `"medium"`},
		{name: "enum invalid value", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_ENUM, 1), labels("small")), data: []byte{0}, want: `""`},
		{name: "enum without labels", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_ENUM, 2)), data: le(2, 300), want: `300`},
		{name: "enum bad pack length", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_ENUM, 3)), data: []byte{1, 2, 3}, err: true},
		{name: "set labels", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_SET, 1), labels("a", "b", "c", "d")), data: []byte{0b0101}, want: `["a","c"]`},
		{name: "set empty", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_SET, 1), labels("a")), data: []byte{0}, want: `[]`},
		{name: "set without labels", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_SET, 2)), data: le(2, 0x0101), want: `257`},
		{name: "varchar utf8", col: col(gm.MYSQL_TYPE_VARCHAR, 80), data: prefixed(1, "hi \"😀\"\n"), want: `"hi \"😀\"\n"`},
		{name: "varchar long prefix", col: col(gm.MYSQL_TYPE_VARCHAR, 1000), data: prefixed(2, "abc"), want: `"abc"`},
		{name: "varchar latin1", col: col(gm.MYSQL_TYPE_VARCHAR, 20, latin1), data: prefixed(1, "caf\xe9 \x80 \x81"), want: "\"café € \u0081\""},
		{name: "varchar latin1 escape mode", col: col(gm.MYSQL_TYPE_VARCHAR, 20, latin1), data: prefixed(1, "caf\xe9"), want: `"café"`, escape: true},
		{name: "invalid utf8 replaced", col: col(gm.MYSQL_TYPE_VARCHAR, 20), data: prefixed(1, "a\xe9b"), want: `"a\ufffdb"`},
		{name: "invalid utf8 escaped", col: col(gm.MYSQL_TYPE_VARCHAR, 20), data: prefixed(1, "a\xe9b"), want: `"a\\xE9b"`, escape: true},
		{name: "cp1250 undefined byte escaped", col: col(gm.MYSQL_TYPE_VARCHAR, 20, func(c *column) { c.cs = charsetByName("cp1250") }), data: prefixed(1, "\x8a\x81"), want: `"Š\\x81"`, escape: true},
		{name: "gbk", col: col(gm.MYSQL_TYPE_VARCHAR, 20, func(c *column) { c.cs = charsetByName("gbk") }), data: prefixed(1, "\xc4\xe3\xba\xc3"), want: `"你好"`},
		{name: "line separator escaped", col: col(gm.MYSQL_TYPE_VARCHAR, 20), data: prefixed(1, "a\u2028b"), want: `"a\u2028b"`},
		{name: "char", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_STRING, 40)), data: prefixed(1, "abc"), want: `"abc"`},
		{name: "char long", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_STRING, 600)), data: prefixed(2, "abc"), want: `"abc"`},
		{name: "binary padded", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_STRING, 4), binaryCS), data: prefixed(1, "\x01\x02"), want: `"AQIAAA=="`},
		{name: "varbinary", col: col(gm.MYSQL_TYPE_VARCHAR, 20, binaryCS), data: prefixed(1, "\x00\xff\x10"), want: `"AP8Q"`},
		{name: "blob", col: col(gm.MYSQL_TYPE_BLOB, 2, binaryCS), data: prefixed(2, "\xde\xad\xbe\xef"), want: `"3q2+7w=="`},
		{name: "longtext", col: col(gm.MYSQL_TYPE_BLOB, 4), data: prefixed(4, "text"), want: `"text"`},
		{name: "mariadb json", col: col(gm.MYSQL_TYPE_BLOB, 4, kind(kindJSONText)), data: prefixed(4, `{"a": [1, 2.5, {"b": null}], "big": 18446744073709551615}`), want: `{"a":[1,2.5,{"b":null}],"big":18446744073709551615}`},
		{name: "mariadb json invalid is text", col: col(gm.MYSQL_TYPE_BLOB, 4, kind(kindJSONText)), data: prefixed(4, `{oops`), want: `"{oops"`},
		{name: "mysql json", col: col(gm.MYSQL_TYPE_JSON, 4), data: prefixed(4, "\x04\x01"), want: `true`},
		{name: "mysql json empty is null", col: col(gm.MYSQL_TYPE_JSON, 4), data: le(4, 0), want: `null`},
		{name: "geometry", col: col(gm.MYSQL_TYPE_GEOMETRY, 4), data: prefixed(4, "\x00\x00\x00\x00\x01\x01"), want: `"AAAAAAEB"`},
		{name: "uuid swapped", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_STRING, 16), binaryCS, kind(kindUUID)),
			data: prefixed(1, "\x00\xc0\x4f\xd4\x30\xc8\x80\xb4\x11\xd1\x9d\xad\x6b\xa7\xb8\x10"), want: `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`},
		{name: "uuid unswapped", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_STRING, 16), binaryCS, kind(kindUUID)),
			data: prefixed(1, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), want: `"00000000-0000-0000-0000-000000000001"`},
		{name: "inet6", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_STRING, 16), binaryCS, kind(kindINET6)),
			data: prefixed(1, "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), want: `"2001:db8::1"`},
		{name: "inet4", col: col(gm.MYSQL_TYPE_STRING, stringMeta(gm.MYSQL_TYPE_STRING, 4), binaryCS, kind(kindINET4)), data: prefixed(1, "\x0a\x00\x00\x01"), want: `"10.0.0.1"`},
		// Vectors from real servers, in go-mysql's tests (replication/row_event_test.go).
		{name: "upstream time2 max", col: col(gm.MYSQL_TYPE_TIME2, 0), data: []byte("\xb4\x6e\xfb"), want: `"838:59:59"`},
		{name: "upstream time2 -1s", col: col(gm.MYSQL_TYPE_TIME2, 0), data: []byte("\x7f\xff\xff"), want: `"-00:00:01"`},
		{name: "upstream time2 min", col: col(gm.MYSQL_TYPE_TIME2, 0), data: []byte("\x4b\x91\x05"), want: `"-838:59:59"`},
		{name: "upstream time2 -0.01", col: col(gm.MYSQL_TYPE_TIME2, 2), data: []byte("\x7f\xff\xff\xff"), want: `"-00:00:00.01"`},
		{name: "upstream time2 dec2", col: col(gm.MYSQL_TYPE_TIME2, 2), data: []byte("\x4b\x91\x05\xf4"), want: `"-838:59:58.12"`},
		{name: "upstream time2 dec4", col: col(gm.MYSQL_TYPE_TIME2, 4), data: []byte("\x7f\x0e\xfa\xfb\x2d"), want: `"-15:04:05.1235"`},
		{name: "upstream time2 dec6", col: col(gm.MYSQL_TYPE_TIME2, 6), data: []byte("\x7f\x0e\xfa\xfe\x1d\xc0"), want: `"-15:04:05.123456"`},
		{name: "upstream time2 -1us", col: col(gm.MYSQL_TYPE_TIME2, 6), data: []byte("\x7f\xff\xff\xff\xff\xff"), want: `"-00:00:00.000001"`},
		{name: "upstream datetime2 max", col: col(gm.MYSQL_TYPE_DATETIME2, 0), data: []byte("\xfe\xf3\xff\x7e\xfb"), want: `"9999-12-31T23:59:59"`},
		{name: "upstream datetime2", col: col(gm.MYSQL_TYPE_DATETIME2, 0), data: []byte("\x99\x9a\xb8\xf7\xaa"), want: `"2016-10-28T15:30:42"`},
		{name: "upstream datetime2 zero month", col: col(gm.MYSQL_TYPE_DATETIME2, 0), data: []byte("\x99\x98\x38\xf7\xaa"), want: `"2016-00-28 15:30:42"`},
		{name: "upstream datetime2 dec4", col: col(gm.MYSQL_TYPE_DATETIME2, 4), data: []byte("\x80\x03\x82\x00\x00\x04\xd3"), want: `"0001-01-01T00:00:00.1235"`},
		{name: "upstream decimal 40,16", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 10256), data: []byte{128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 123, 27, 46, 2, 0, 0, 0, 0, 0}, want: `"123.4560000000000000"`},
		{name: "upstream decimal negative", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 10256), data: []byte{127, 255, 132, 228, 206, 107, 5, 242, 1, 225, 232, 248, 164, 50, 234, 255, 254, 29, 191}, want: `"-123456234234234757655.1234567890123456"`},
		{name: "upstream decimal 60,0", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 15360), data: []byte{128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, want: `"1000000000000000000000000000000"`},
		{name: "upstream decimal 30,30", col: col(gm.MYSQL_TYPE_NEWDECIMAL, 7710), data: []byte{133, 245, 225, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, want: `"0.100000000000000000000000000000"`},
		{name: "upstream json object", col: col(gm.MYSQL_TYPE_JSON, 4), data: []byte(")\x00\x00\x00\x00\x02\x00(\x00\x12\x00\x04\x00\x16\x00\x04\x00\x0c\x1a\x00\x0c!\x00key1key2\x06value1\x06value2"), want: `{"key1":"value1","key2":"value2"}`},
		{name: "upstream json inline int", col: col(gm.MYSQL_TYPE_JSON, 4), data: []byte("\r\x00\x00\x00\x00\x01\x00\x0c\x00\x0b\x00\x01\x00\x05\xd2\x04a"), want: `{"a":1234}`},
		{name: "upstream json empty object", col: col(gm.MYSQL_TYPE_JSON, 4), data: []byte("\x05\x00\x00\x00\x00\x00\x00\x04\x00"), want: `{}`},
		{name: "null type", col: col(gm.MYSQL_TYPE_NULL, 0), data: nil, want: `null`},
		{name: "truncated int", col: col(gm.MYSQL_TYPE_LONG, 0), data: []byte{1, 2}, err: true},
		{name: "truncated varchar", col: col(gm.MYSQL_TYPE_VARCHAR, 20), data: []byte{5, 'a'}, err: true},
		{name: "truncated blob", col: col(gm.MYSQL_TYPE_BLOB, 4), data: le(4, 1<<31), err: true},
		{name: "bad blob pack length", col: col(gm.MYSQL_TYPE_BLOB, 5), data: le(5, 0), err: true},
		{name: "unsupported type", col: col(gm.MYSQL_TYPE_TINY_BLOB, 0), data: []byte{1}, err: true},
	}
}

func TestAppendValue(t *testing.T) {
	for _, tc := range valueCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.col
			got, n, err := appendValue([]byte("x"), &c, tc.data, tc.escape)
			if tc.err {
				if err == nil {
					t.Fatalf("got %s, want an error", got[1:])
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got[1:]) != tc.want {
				t.Errorf("got %s, want %s", got[1:], tc.want)
			}
			wantN := tc.wantN
			if wantN == 0 {
				wantN = len(tc.data)
			}
			if n != wantN {
				t.Errorf("used %d bytes, want %d", n, wantN)
			}
			if !json.Valid(got[1:]) {
				t.Errorf("%s is not valid JSON", got[1:])
			}
		})
	}
}

func TestDecimalRoundTrip(t *testing.T) {
	cases := []struct {
		in          string
		prec, scale int
		want        string
	}{
		{"1", 1, 0, "1"},
		{"-9", 1, 0, "-9"},
		{"999999999", 9, 0, "999999999"},
		{"-999999999.999999999", 18, 9, "-999999999.999999999"},
		{"123456789012345678", 18, 0, "123456789012345678"},
		{"0.000000001", 10, 9, "0.000000001"},
		{"-0.1", 2, 1, "-0.1"},
		{"7.5", 10, 4, "7.5000"},
		{"99999999999999999999999999999999999999999999999999999999999999999", 65, 0, "99999999999999999999999999999999999999999999999999999999999999999"},
		{"12.345678901234567890123456789012345678", 40, 38, "12.34567890123456789012345678901234567800"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			b := encodeDecimal(t, tc.in, tc.prec, tc.scale)
			got, n, err := appendDecimal(nil, b, tc.prec, tc.scale)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(b) || n != decimalSize(tc.prec, tc.scale) {
				t.Errorf("used %d bytes of %d", n, len(b))
			}
			if string(got) != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAppendTextRule(t *testing.T) {
	// The documented NATIVE_UNICODE rule, on a utf8 column.
	utf := charset{kind: textUTF8}
	for _, tc := range []struct {
		name   string
		in     string
		escape bool
		want   string
	}{
		{"valid passes", "é😀", false, `"é😀"`},
		{"invalid replaced", "\xff\xfe", false, `"\ufffd\ufffd"`},
		{"invalid escaped", "\xff\xfe", true, `"\\xFF\\xFE"`},
		{"truncated sequence escaped", "a\xe2\x82", true, `"a\\xE2\\x82"`},
		{"controls", "\x00\x1f\t", true, `"\u0000\u001f\t"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendText(nil, []byte(tc.in), &utf, tc.escape)
			if string(got) != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Errorf("%s is not valid JSON", got)
			}
		})
	}
}

func FuzzDecodeValue(f *testing.F) {
	for _, tc := range valueCases(f) {
		f.Add(tc.col.typ, tc.col.meta, tc.col.unsigned, uint8(tc.col.kind), uint8(tc.col.cs.kind), tc.escape, tc.data)
	}
	f.Fuzz(func(t *testing.T, typ byte, meta uint16, unsigned bool, k, csKind uint8, escape bool, data []byte) {
		c := newColumn("c", typ, meta)
		c.unsigned = unsigned
		c.kind = colKind(k % 5)
		switch csKind % 5 {
		case 1:
			c.cs = charset{kind: textLatin1}
		case 2:
			c.cs = charsetByName("cp1251")
		case 3:
			c.cs = charsetByName("sjis")
		case 4:
			c.cs = charset{kind: textBinary}
		}
		if k&0x80 != 0 {
			c.labels = []string{"a", "b\"", "ç"}
		}
		size, sizeErr := valueSize(&c, data)
		out, n, err := appendValue(nil, &c, data, escape)
		if err != nil {
			return
		}
		if n < 0 || n > len(data) {
			t.Fatalf("used %d bytes of %d", n, len(data))
		}
		if sizeErr != nil || size != n {
			t.Fatalf("type %d meta %#x: valueSize = %d, %v; appendValue used %d", typ, meta, size, sizeErr, n)
		}
		if !json.Valid(out) {
			t.Fatalf("type %d meta %#x: invalid JSON %q", typ, meta, out)
		}
	})
}

// valueSize, which counts the rows of untracked tables, walks every value
// as appendValue decodes it.
func TestValueSize(t *testing.T) {
	for _, tc := range valueCases(t) {
		_, n, err := appendValue(nil, &tc.col, tc.data, tc.escape)
		if err != nil {
			continue
		}
		if got, err := valueSize(&tc.col, tc.data); err != nil || got != n {
			t.Errorf("%s: valueSize = %d, %v; appendValue used %d", tc.name, got, err, n)
		}
		if n > 0 {
			if _, err := valueSize(&tc.col, tc.data[:n-1]); err == nil {
				t.Errorf("%s: valueSize of a truncated value: no error", tc.name)
			}
		}
	}
}
