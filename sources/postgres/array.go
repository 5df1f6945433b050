package postgres

// Arrays arrive in PostgreSQL's text form: {1,2,NULL}, {{1,2},{3,4}},
// {"a b","with \"quote\""}, and with a dimension decoration when a lower
// bound is not 1: [0:1]={1,2}. See array_out in
// https://github.com/postgres/postgres/blob/master/src/backend/utils/adt/arrayfuncs.c.

// arrayText is a cursor over an array's text form.
type arrayText struct {
	s   []byte
	pos int
}

func (p *arrayText) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

// appendArray appends the JSON array for the array text v of type t. It
// reports false, leaving b's contents past its length undefined, when v is
// not a well-formed array.
func (e *valueEncoder) appendArray(b []byte, t *colType, v []byte) ([]byte, bool) {
	if len(v) > 0 && v[0] == '[' {
		// Dimension decoration: [lo:hi][lo:hi]=...; JSON arrays have
		// no lower bounds, so it is dropped.
		i := 0
		for i < len(v) && v[i] != '=' {
			i++
		}
		if i == len(v) {
			return b, false
		}
		v = v[i+1:]
	}
	p := arrayText{s: v}
	b, ok := e.appendArrayLevel(b, t.elem, t.delim, &p, 1)
	return b, ok && p.pos == len(v)
}

func (e *valueEncoder) appendArrayLevel(b []byte, elem *colType, delim byte, p *arrayText, depth int) ([]byte, bool) {
	if depth > maxArrayDepth || p.peek() != '{' {
		return b, false
	}
	p.pos++
	b = append(b, '[')
	if p.peek() == '}' {
		p.pos++
		return append(b, ']'), true
	}
	for first := true; ; first = false {
		if !first {
			b = append(b, ',')
		}
		var ok bool
		switch p.peek() {
		case '{':
			if b, ok = e.appendArrayLevel(b, elem, delim, p, depth+1); !ok {
				return b, false
			}
		case '"':
			text, ok := e.quotedElement(p)
			if !ok {
				return b, false
			}
			b = e.appendElement(b, elem, text)
		default:
			start := p.pos
			for p.pos < len(p.s) && p.s[p.pos] != delim && p.s[p.pos] != '}' {
				c := p.s[p.pos]
				if c == '{' || c == '"' || c == '\\' {
					return b, false
				}
				p.pos++
			}
			text := p.s[start:p.pos]
			switch {
			case len(text) == 0:
				return b, false
			case isNULL(text):
				b = append(b, "null"...)
			default:
				b = e.appendElement(b, elem, text)
			}
		}
		switch p.peek() {
		case delim:
			p.pos++
		case '}':
			p.pos++
			return append(b, ']'), true
		default:
			return b, false
		}
	}
}

// quotedElement reads a double-quoted element, undoing backslash escapes,
// into e.quote.
func (e *valueEncoder) quotedElement(p *arrayText) ([]byte, bool) {
	p.pos++ // opening quote
	q := e.quote[:0]
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		switch c {
		case '"':
			e.quote = q
			return q, true
		case '\\':
			if p.pos == len(p.s) {
				return nil, false
			}
			c = p.s[p.pos]
			p.pos++
		}
		q = append(q, c)
	}
	return nil, false
}

func (e *valueEncoder) appendElement(b []byte, elem *colType, text []byte) []byte {
	if elem == nil {
		return appendString(b, text)
	}
	if elem.kind == kindArray {
		// A domain over an array as an element: its text is an array
		// itself, and decoding it reuses e.quote, so it needs a copy.
		text = append([]byte(nil), text...)
	}
	return e.appendValue(b, elem, text)
}

func isNULL(v []byte) bool {
	return len(v) == 4 && (v[0]|0x20) == 'n' && (v[1]|0x20) == 'u' && (v[2]|0x20) == 'l' && (v[3]|0x20) == 'l'
}
