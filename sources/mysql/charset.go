package mysql

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/encoding/unicode/utf32"

	"github.com/trackerd/trackerd/internal/jsonw"
)

// textKind says how the bytes of a character column become a JSON string.
type textKind uint8

const (
	// textUTF8 passes UTF-8 bytes through (utf8mb3, utf8mb4, ascii, and
	// any charset trackerd does not know).
	textUTF8 textKind = iota
	// textLatin1 is MySQL's latin1, which is Windows-1252 with the five
	// bytes it leaves undefined mapped to the C1 controls.
	textLatin1
	// textSingle is another single-byte charset, decoded byte by byte.
	textSingle
	// textMulti is a multi-byte legacy charset, decoded with x/text.
	textMulti
	// textBinary is the binary charset: bytes, sent as base64.
	textBinary
)

// charset is a column's character set as the decoder needs it.
type charset struct {
	kind textKind
	// single decodes textSingle bytes.
	single *charmap.Charmap
	// multi decodes textMulti bytes.
	multi encoding.Encoding
}

// charsetByName maps a MySQL/MariaDB character set name to its decoder.
// Unknown names are treated as UTF-8, which is what the server sends for
// every charset trackerd cannot name.
func charsetByName(name string) charset {
	name = strings.ToLower(name)
	switch name {
	case "utf8", "utf8mb3", "utf8mb4", "ascii", "":
		return charset{kind: textUTF8}
	case "binary":
		return charset{kind: textBinary}
	case "latin1":
		return charset{kind: textLatin1}
	}
	if cm := singleByteCharmap(name); cm != nil {
		return charset{kind: textSingle, single: cm}
	}
	if enc := multiByteEncoding(name); enc != nil {
		return charset{kind: textMulti, multi: enc}
	}
	return charset{kind: textUTF8}
}

func singleByteCharmap(name string) *charmap.Charmap {
	switch name {
	case "latin2":
		return charmap.ISO8859_2
	case "latin5":
		return charmap.ISO8859_9
	case "latin7":
		return charmap.ISO8859_13
	case "greek":
		return charmap.ISO8859_7
	case "hebrew":
		return charmap.ISO8859_8
	case "cp1250":
		return charmap.Windows1250
	case "cp1251":
		return charmap.Windows1251
	case "cp1256":
		return charmap.Windows1256
	case "cp1257":
		return charmap.Windows1257
	case "cp850":
		return charmap.CodePage850
	case "cp852":
		return charmap.CodePage852
	case "cp866":
		return charmap.CodePage866
	case "koi8r":
		return charmap.KOI8R
	case "koi8u":
		return charmap.KOI8U
	case "macroman":
		return charmap.Macintosh
	case "tis620":
		return charmap.Windows874
	}
	return nil
}

func multiByteEncoding(name string) encoding.Encoding {
	switch name {
	case "gbk", "gb2312":
		return simplifiedchinese.GBK
	case "gb18030":
		return simplifiedchinese.GB18030
	case "big5":
		return traditionalchinese.Big5
	case "sjis", "cp932":
		return japanese.ShiftJIS
	case "ujis", "eucjpms":
		return japanese.EUCJP
	case "euckr":
		return korean.EUCKR
	case "ucs2", "utf16":
		return unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
	case "utf16le":
		return unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
	case "utf32":
		return utf32.UTF32(utf32.BigEndian, utf32.IgnoreBOM)
	}
	return nil
}

// appendText appends b, text in charset cs, as a JSON string.
//
// The rule, for both values of NATIVE_UNICODE: text is transcoded from the
// column's charset to UTF-8. Bytes that do not decode (invalid UTF-8 in a
// utf8/utf8mb4 column, a byte a single-byte charset leaves undefined) become
// U+FFFD when escapeInvalid is false (NATIVE_UNICODE true: trust the server)
// and the four characters \xHH (upper-case hex) when it is true
// (NATIVE_UNICODE false). Multi-byte legacy charsets (gbk, sjis, big5,
// utf16, ...) are decoded by golang.org/x/text, which turns invalid
// sequences into U+FFFD in both modes.
func appendText(dst []byte, b []byte, cs *charset, escapeInvalid bool) []byte {
	switch cs.kind {
	case textLatin1:
		return appendSingleByte(dst, b, nil, escapeInvalid)
	case textSingle:
		return appendSingleByte(dst, b, cs.single, escapeInvalid)
	case textMulti:
		out, err := cs.multi.NewDecoder().Bytes(b)
		if err != nil {
			// x/text decoders only fail on internal errors; keep the bytes.
			out = b
		}
		return appendJSONText(dst, out, escapeInvalid)
	case textBinary:
		return appendBase64(dst, b)
	}
	return appendJSONText(dst, b, escapeInvalid)
}

// latin1Rune decodes one byte of MySQL's latin1 (cp1252 with the undefined
// 0x81, 0x8D, 0x8F, 0x90 and 0x9D mapped to the C1 controls of the same
// value, as MySQL's own conversion tables do).
func latin1Rune(c byte) rune {
	switch c {
	case 0x81, 0x8D, 0x8F, 0x90, 0x9D:
		return rune(c)
	}
	return charmap.Windows1252.DecodeByte(c)
}

func appendSingleByte(dst, b []byte, cm *charmap.Charmap, escapeInvalid bool) []byte {
	p := textPolicy(escapeInvalid)
	dst = append(dst, '"')
	for _, c := range b {
		if c < utf8.RuneSelf {
			dst = jsonw.AppendRune(dst, rune(c), p)
			continue
		}
		var r rune
		if cm == nil {
			r = latin1Rune(c)
		} else {
			r = cm.DecodeByte(c)
		}
		if r == utf8.RuneError {
			dst = jsonw.AppendInvalid(dst, c, p)
			continue
		}
		dst = jsonw.AppendRune(dst, r, p)
	}
	return append(dst, '"')
}

const hexLower = "0123456789abcdef"

// textPolicy is how text is written as JSON (see appendText): invalid
// bytes as \ufffd, or as \xHH when escapeInvalid is set.
func textPolicy(escapeInvalid bool) jsonw.Policy {
	if escapeInvalid {
		return jsonw.InvalidAsHex
	}
	return jsonw.EncodingJSON
}

// appendJSONText appends UTF-8 text b as a JSON string. Invalid bytes
// become U+FFFD, or \xHH when escapeInvalid is set (see appendText).
func appendJSONText(dst, b []byte, escapeInvalid bool) []byte {
	return jsonw.AppendBytes(dst, b, textPolicy(escapeInvalid))
}
