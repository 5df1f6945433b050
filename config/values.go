package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Raw values. A value from the environment or a flag is a string; a value
// from the TOML file is whatever the TOML decoder made of it (string,
// int64, float64, bool, time.Time, []any, map[string]any,
// []map[string]any). Every converter accepts both, so that a string in the
// file ("30", "yes") parses as it would from the environment.

// secrecy says how much of a bad value an error may show.
type secrecy int

const (
	public      secrecy = iota
	secretURI           // a database URI: hide its password (RedactURI)
	secretNATS          // a NATS URL: hide its whole user information
	secretValue         // a password or token: never show
)

// field is the context of one value being parsed: its key path, source and
// secrecy, and where its problems go.
type field struct {
	key    string
	source string
	secret secrecy
	p      *problems
}

// at returns the field of a member of a table.
func (f field) at(name string) field {
	f.key = f.key + "." + name
	return f
}

// bad records a problem with value v.
func (f field) bad(v any, allowed string, err error) {
	f.p.add(&FieldError{Key: f.key, Value: display(v, f.secret), Source: f.source, Allowed: allowed, Err: err})
}

// display renders a scalar value for an error message, redacted; tables
// and arrays are not shown.
func display(v any, s secrecy) string {
	var text string
	switch x := v.(type) {
	case string:
		text = x
	case bool, int64, float64, int:
		text = fmt.Sprint(x)
	case time.Time:
		text = x.String()
	default:
		return ""
	}
	switch s {
	case secretURI:
		return RedactURI(text)
	case secretNATS:
		return redactUserinfo(text)
	case secretValue:
		if text == "" {
			return ""
		}
		return "***"
	}
	return text
}

// kind names a raw value's type for messages ("got an array").
func kind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, int:
		return "an integer"
	case float64:
		return "a number"
	case time.Time:
		return "a date"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

func gotKind(v any) error { return fmt.Errorf("got %s", kind(v)) }

const allowedBool = "true or false"

func toString(f field, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		f.bad(v, "a string", gotKind(v))
	}
	return s, ok
}

func parseBoolText(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes", "on":
		return true, true
	case "false", "0", "no", "off":
		return false, true
	}
	return false, false
}

func toBool(f field, v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		if b, ok := parseBoolText(x); ok {
			return b, true
		}
	case int64:
		if x == 0 || x == 1 {
			return x == 1, true
		}
	}
	f.bad(v, allowedBool, nil)
	return false, false
}

func toInt(f field, v any, allowed string) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err == nil {
			return n, true
		}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	}
	f.bad(v, allowed, nil)
	return 0, false
}

// maxSeconds keeps seconds*1e9 inside an int64.
const maxSeconds = float64(math.MaxInt64/int64(time.Second)) - 1

func secondsToDuration(s float64) (time.Duration, bool) {
	if math.IsNaN(s) || math.Abs(s) > maxSeconds {
		return 0, false
	}
	return time.Duration(math.Round(s * float64(time.Second))), true
}

// toDuration accepts a Go duration ("10m", "1.5s") or a number of seconds
// (30, 1.5, "30").
func toDuration(f field, v any, allowed string) (time.Duration, bool) {
	switch x := v.(type) {
	case int64:
		if d, ok := secondsToDuration(float64(x)); ok {
			return d, true
		}
	case float64:
		if d, ok := secondsToDuration(x); ok {
			return d, true
		}
	case string:
		s := strings.TrimSpace(x)
		if n, err := strconv.ParseFloat(s, 64); err == nil && !strings.ContainsAny(s, "xXpPnN_") {
			if d, ok := secondsToDuration(n); ok {
				return d, true
			}
			break
		}
		if d, err := time.ParseDuration(s); err == nil {
			return d, true
		}
	}
	f.bad(v, allowed, nil)
	return 0, false
}

// sizeUnits are the byte-size suffixes toSize accepts, longest first.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// toSize accepts a number of bytes, or a whole number with a unit: B, KB,
// MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB or K, M, G, T (powers of
// 1024), case-insensitive.
func toSize(f field, v any, allowed string) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case string:
		s := strings.ToLower(strings.TrimSpace(x))
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, true
		}
		for _, u := range sizeUnits {
			num, ok := strings.CutSuffix(s, u.suffix)
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 || n > math.MaxInt64/u.mult {
				break
			}
			return n * u.mult, true
		}
	}
	f.bad(v, allowed, nil)
	return 0, false
}

// toList accepts an array of strings, or a string holding a JSON array or
// comma-separated items (trimmed, empty items dropped).
func toList(f field, v any) ([]string, bool) {
	const allowed = "a list of strings (a TOML array; in the environment or a flag, a JSON array or comma-separated)"
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				f.at(strconv.Itoa(i)).bad(e, "a string", gotKind(e))
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	case string:
		s := strings.TrimSpace(x)
		if strings.HasPrefix(s, "[") {
			var out []string
			if err := json.Unmarshal([]byte(s), &out); err != nil {
				f.bad(v, allowed, fmt.Errorf("not a JSON array of strings"))
				return nil, false
			}
			return out, true
		}
		out := []string{}
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
		return out, true
	}
	f.bad(v, allowed, gotKind(v))
	return nil, false
}

// toTable accepts a table, or a string holding a JSON object.
func toTable(f field, v any, allowed string) (map[string]any, bool) {
	switch x := v.(type) {
	case map[string]any:
		return x, true
	case string:
		dec := json.NewDecoder(strings.NewReader(x))
		dec.UseNumber()
		var m map[string]any
		err := dec.Decode(&m)
		if err == nil && dec.More() {
			err = fmt.Errorf("text after the object")
		}
		if err != nil || m == nil {
			// The text may hold passwords: it is never shown, only where
			// it went wrong.
			f.p.add(&FieldError{Key: f.key, Source: f.source, Allowed: allowed, Err: jsonProblem(x, err)})
			return nil, false
		}
		return normalizeJSON(m).(map[string]any), true
	}
	f.bad(v, allowed, gotKind(v))
	return nil, false
}

// jsonProblem describes a JSON syntax error without quoting the text.
func jsonProblem(text string, err error) error {
	var se *json.SyntaxError
	switch {
	case err == nil:
		return fmt.Errorf("not a JSON object")
	case errors.As(err, &se):
		line := 1 + bytes.Count([]byte(text[:min(int(se.Offset), len(text))]), []byte("\n"))
		return fmt.Errorf("not a JSON object: syntax error at byte %d (line %d)", se.Offset, line)
	default:
		return fmt.Errorf("not a JSON object")
	}
}

// normalizeJSON turns json.Number into int64 or float64, as TOML decodes
// numbers.
func normalizeJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeJSON(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalizeJSON(e)
		}
		return x
	}
	return v
}

// sortedKeys returns a map's keys in order, for deterministic errors.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// unknownKey records a key that is not one of known, suggesting the
// closest, or listing them all when listAll is set and none is close.
func unknownKey(f field, known []string, listAll bool) {
	name := f.key[strings.LastIndexByte(f.key, '.')+1:]
	e := &FieldError{Key: f.key, Source: f.source, Err: ErrUnknownKey}
	if s := suggest(name, known); s != "" {
		e.Err = fmt.Errorf("%w; did you mean %q?", ErrUnknownKey, s)
	} else if listAll {
		e.Allowed = "one of " + strings.Join(known, ", ")
	}
	f.p.add(e)
}
