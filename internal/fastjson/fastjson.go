// Package fastjson decodes JSON with github.com/goccy/go-json, about three
// times as fast as encoding/json on trackerd's events, where that gives
// encoding/json's result, and with encoding/json everywhere else.
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
