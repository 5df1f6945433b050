package mysql

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// MySQL's binary JSON format (sql-common/json_binary.h). Only MySQL's JSON
// column type uses it; MariaDB's JSON is text.
const (
	jsonbSmallObject = 0x00
	jsonbLargeObject = 0x01
	jsonbSmallArray  = 0x02
	jsonbLargeArray  = 0x03
	jsonbLiteral     = 0x04
	jsonbInt16       = 0x05
	jsonbUint16      = 0x06
	jsonbInt32       = 0x07
	jsonbUint32      = 0x08
	jsonbInt64       = 0x09
	jsonbUint64      = 0x0a
	jsonbDouble      = 0x0b
	jsonbString      = 0x0c
	jsonbOpaque      = 0x0f

	jsonbLiteralNull  = 0x00
	jsonbLiteralTrue  = 0x01
	jsonbLiteralFalse = 0x02

	// jsonbMaxDepth bounds nesting; MySQL allows 100 levels.
	jsonbMaxDepth = 150
)

var errJSONB = errors.New("malformed binary JSON")

// appendJSONB appends MySQL binary JSON doc as JSON text. Numbers are
// written exactly as stored (64-bit integers are not quoted inside a JSON
// document), dates and times as MySQL prints them, and opaque values of
// other types as MySQL does: "base64:type<N>:<data>".
func appendJSONB(dst, doc []byte) ([]byte, error) {
	if len(doc) < 1 {
		return dst, errJSONB
	}
	return appendJSONBValue(dst, doc[0], doc[1:], 0)
}

func appendJSONBValue(dst []byte, typ byte, data []byte, depth int) ([]byte, error) {
	if depth > jsonbMaxDepth {
		return dst, errors.New("binary JSON nested too deeply")
	}
	switch typ {
	case jsonbSmallObject, jsonbLargeObject:
		return appendJSONBContainer(dst, data, typ == jsonbLargeObject, true, depth)
	case jsonbSmallArray, jsonbLargeArray:
		return appendJSONBContainer(dst, data, typ == jsonbLargeArray, false, depth)
	case jsonbLiteral:
		if len(data) < 1 {
			return dst, errJSONB
		}
		switch data[0] {
		case jsonbLiteralNull:
			return append(dst, "null"...), nil
		case jsonbLiteralTrue:
			return append(dst, "true"...), nil
		case jsonbLiteralFalse:
			return append(dst, "false"...), nil
		}
		return dst, errJSONB
	case jsonbInt16:
		if len(data) < 2 {
			return dst, errJSONB
		}
		return strconv.AppendInt(dst, int64(int16(binary.LittleEndian.Uint16(data))), 10), nil
	case jsonbUint16:
		if len(data) < 2 {
			return dst, errJSONB
		}
		return strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint16(data)), 10), nil
	case jsonbInt32:
		if len(data) < 4 {
			return dst, errJSONB
		}
		return strconv.AppendInt(dst, int64(int32(binary.LittleEndian.Uint32(data))), 10), nil
	case jsonbUint32:
		if len(data) < 4 {
			return dst, errJSONB
		}
		return strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint32(data)), 10), nil
	case jsonbInt64:
		if len(data) < 8 {
			return dst, errJSONB
		}
		return strconv.AppendInt(dst, int64(binary.LittleEndian.Uint64(data)), 10), nil
	case jsonbUint64:
		if len(data) < 8 {
			return dst, errJSONB
		}
		return strconv.AppendUint(dst, binary.LittleEndian.Uint64(data), 10), nil
	case jsonbDouble:
		if len(data) < 8 {
			return dst, errJSONB
		}
		return appendFloat(dst, math.Float64frombits(binary.LittleEndian.Uint64(data)), 64), nil
	case jsonbString:
		s, err := jsonbVarBytes(data)
		if err != nil {
			return dst, err
		}
		return appendJSONText(dst, s, false), nil
	case jsonbOpaque:
		if len(data) < 1 {
			return dst, errJSONB
		}
		b, err := jsonbVarBytes(data[1:])
		if err != nil {
			return dst, err
		}
		return appendJSONBOpaque(dst, data[0], b)
	}
	return dst, fmt.Errorf("binary JSON type %#x", typ)
}

// jsonbVarBytes reads a string with a variable-length size (7 bits per
// byte, high bit set on all but the last).
func jsonbVarBytes(data []byte) ([]byte, error) {
	var l uint64
	for i := 0; i < 5; i++ {
		if i >= len(data) {
			return nil, errJSONB
		}
		l |= uint64(data[i]&0x7f) << (7 * uint(i))
		if data[i]&0x80 == 0 {
			n := i + 1
			if uint64(len(data)-n) < l {
				return nil, errJSONB
			}
			return data[n : n+int(l)], nil
		}
	}
	return nil, errJSONB
}

func appendJSONBContainer(dst, data []byte, large, object bool, depth int) ([]byte, error) {
	offSize := 2
	if large {
		offSize = 4
	}
	if len(data) < 2*offSize {
		return dst, errJSONB
	}
	readOff := func(p []byte) int {
		if large {
			return int(binary.LittleEndian.Uint32(p))
		}
		return int(binary.LittleEndian.Uint16(p))
	}
	count := readOff(data)
	size := readOff(data[offSize:])
	if size > len(data) || size < 2*offSize {
		return dst, errJSONB
	}
	data = data[:size]
	keyEntry := offSize + 2
	valEntry := 1 + offSize
	hdr := 2 * offSize
	if object {
		hdr += count * keyEntry
	}
	if count < 0 || count > size || hdr+count*valEntry > size {
		return dst, errJSONB
	}
	if object {
		dst = append(dst, '{')
	} else {
		dst = append(dst, '[')
	}
	for i := range count {
		if i > 0 {
			dst = append(dst, ',')
		}
		if object {
			ke := 2*offSize + i*keyEntry
			ko := readOff(data[ke:])
			kl := int(binary.LittleEndian.Uint16(data[ke+offSize:]))
			if ko < 0 || ko+kl > size {
				return dst, errJSONB
			}
			dst = appendJSONText(dst, data[ko:ko+kl], false)
			dst = append(dst, ':')
		}
		ve := hdr + i*valEntry
		vt := data[ve]
		var err error
		switch {
		case vt == jsonbLiteral || vt == jsonbInt16 || vt == jsonbUint16,
			large && (vt == jsonbInt32 || vt == jsonbUint32):
			// Inlined in the value entry.
			dst, err = appendJSONBValue(dst, vt, data[ve+1:ve+1+offSize], depth+1)
		default:
			vo := readOff(data[ve+1:])
			if vo < 0 || vo >= size {
				return dst, errJSONB
			}
			dst, err = appendJSONBValue(dst, vt, data[vo:], depth+1)
		}
		if err != nil {
			return dst, err
		}
	}
	if object {
		return append(dst, '}'), nil
	}
	return append(dst, ']'), nil
}

// appendJSONBOpaque appends a custom-typed scalar of a JSON document.
func appendJSONBOpaque(dst []byte, typ byte, b []byte) ([]byte, error) {
	switch typ {
	case gm.MYSQL_TYPE_NEWDECIMAL:
		if len(b) < 2 {
			return dst, errJSONB
		}
		out, _, err := appendDecimal(dst, b[2:], int(b[0]), int(b[1]))
		return out, err
	case gm.MYSQL_TYPE_DATE, gm.MYSQL_TYPE_DATETIME, gm.MYSQL_TYPE_TIMESTAMP,
		gm.MYSQL_TYPE_DATETIME2, gm.MYSQL_TYPE_TIMESTAMP2, gm.MYSQL_TYPE_NEWDATE:
		if len(b) < 8 {
			return dst, errJSONB
		}
		v := int64(binary.LittleEndian.Uint64(b))
		if v < 0 {
			v = -v
		}
		ymdhms := v >> 24
		usec := int(v & (1<<24 - 1))
		ymd := ymdhms >> 17
		ym := ymd >> 5
		hms := ymdhms & (1<<17 - 1)
		dst = append(dst, '"')
		dst = appendDate(dst, int(ym/13%10000), int(ym%13), int(ymd&31))
		if typ != gm.MYSQL_TYPE_DATE && typ != gm.MYSQL_TYPE_NEWDATE {
			dst = append(dst, ' ')
			dst = appendClock(dst, int(hms>>12%24), int(hms>>6&63), int(hms&63))
			dst = appendFixedFrac(dst, usec%1000000, 6)
		}
		return append(dst, '"'), nil
	case gm.MYSQL_TYPE_TIME, gm.MYSQL_TYPE_TIME2:
		if len(b) < 8 {
			return dst, errJSONB
		}
		v := int64(binary.LittleEndian.Uint64(b))
		neg := v < 0
		if neg {
			v = -v
		}
		hms := v >> 24
		usec := int(v & (1<<24 - 1))
		dst = append(dst, '"')
		if neg {
			dst = append(dst, '-')
		}
		h := int(hms >> 12 & 1023)
		if h < 10 {
			dst = append(dst, '0')
		}
		dst = strconv.AppendInt(dst, int64(h), 10)
		dst = append(dst, ':')
		dst = append2(dst, int(hms>>6&63))
		dst = append(dst, ':')
		dst = append2(dst, int(hms&63))
		dst = appendFixedFrac(dst, usec%1000000, 6)
		return append(dst, '"'), nil
	}
	dst = append(dst, `"base64:type`...)
	dst = strconv.AppendInt(dst, int64(typ), 10)
	dst = append(dst, ':')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"'), nil
}
