// Package fastjson decodes JSON with github.com/goccy/go-json where that
// gives encoding/json's result, and with encoding/json everywhere else.
//
// It pays on the consumer's path only while encoding/json is the v1
// decoder: changefeed's BenchmarkDecode (one event: envelope, data, rows)
// took 17.2-17.6 µs and 32 allocations with it against 28.9-29.3 µs and 57
// allocations with encoding/json alone, on Go 1.26 (2026-12, same run);
// with GOEXPERIMENT=jsonv2 encoding/json alone took 14.0-17.2 µs and 24
// allocations, as fast as this package. When json/v2 becomes the default
// decoder, drop this package and the dependency.
//
// go-json alone differs from encoding/json in two ways that matter to a
// consumer of untrusted messages: it lets some invalid JSON through in the
// members it skips, and it keeps invalid UTF-8 that encoding/json replaces
// with U+FFFD. So input that is not valid UTF-8 and valid JSON goes to
// encoding/json, which also gives its familiar errors. FuzzUnmarshal checks
// that both decoders agree on the rest.
package fastjson

import (
	"encoding/json"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
)

// Unmarshal decodes data into v as encoding/json's Unmarshal does.
func Unmarshal(data []byte, v any) error {
	if !utf8.Valid(data) || !json.Valid(data) {
		return json.Unmarshal(data, v)
	}
	return gojson.Unmarshal(data, v)
}
