package srckit

import "strconv"

// MaxSafeInt is 2^53-1, the largest integer that every JSON reader (any
// that reads numbers as IEEE doubles, JavaScript's) holds exactly. DESIGN
// section 4: integers within ±MaxSafeInt are JSON numbers, integers beyond
// are decimal strings ("9007199254740993"), so that no reader rounds them.
const MaxSafeInt = 1<<53 - 1

// maxSafeText is MaxSafeInt in decimal.
const maxSafeText = "9007199254740991"

// AppendInt appends v as a JSON number when |v| <= MaxSafeInt, else as a
// decimal string.
func AppendInt(dst []byte, v int64) []byte {
	if v > MaxSafeInt || v < -MaxSafeInt {
		dst = append(dst, '"')
		dst = strconv.AppendInt(dst, v, 10)
		return append(dst, '"')
	}
	return strconv.AppendInt(dst, v, 10)
}

// AppendUint appends v as a JSON number when v <= MaxSafeInt, else as a
// decimal string.
func AppendUint(dst []byte, v uint64) []byte {
	if v > MaxSafeInt {
		dst = append(dst, '"')
		dst = strconv.AppendUint(dst, v, 10)
		return append(dst, '"')
	}
	return strconv.AppendUint(dst, v, 10)
}

// SafeIntText reports whether the text v is a JSON integer,
// -?(0|[1-9][0-9]*), with |v| <= MaxSafeInt: a server's text form of an
// integer that may go into JSON as it is. Otherwise it belongs in a string.
func SafeIntText(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if len(v) == 0 || v[0] == '0' && len(v) > 1 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	switch {
	case len(v) < len(maxSafeText):
		return true
	case len(v) > len(maxSafeText):
		return false
	}
	return string(v) <= maxSafeText
}
