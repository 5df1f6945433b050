package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire/token"
)

// The NAMING_CONVENTION keys that hold templates; every other key is a
// user-defined static token.
const (
	convSubject = "subject" // every phase
)

// opRollback is the op token of rollback events: a retraction is not a row
// operation, and giving it its own op keeps it apart from every change.
const opRollback = "rollback"

// Subjects renders the NATS subject of every event from NAMING_CONVENTION
// templates, and subscription patterns from them.
//
// The template of a phase is NAMING_CONVENTION's key of that phase's name
// ("before_commit", "after_commit", "rollback") if set, else its "subject"
// key, else [config.DefaultSubjectTemplate]:
//
//	%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s
//
// Every other key of NAMING_CONVENTION is a user-defined static token.
//
// Values:
//
//   - prefix is SUBJECT_PREFIX, copied as it is, like the template's literal
//     text (it may hold several tokens, "acme.trackerd"); the stream captures
//     "<prefix>.>", so every template must begin with "%(prefix)s.";
//   - signal is the phase: before_commit, after_commit or rollback;
//   - bind, schema, table are the change's; op is its operation, and
//     "rollback" for rollback events, whose schema and table are empty (so
//     "=") unless the retraction concerns one table:
//     trackerd.rollback.default.=.=.rollback;
//   - key_<N> is the Nth primary-key value (a JSON string without its
//     quotes, anything else as its JSON text), escaped, and "~"
//     ([config.KeyNone]) when it is null or missing; key_0_N is all of them
//     joined with "," ([config.KeyJoin]). Neither byte is ever part of an
//     escaped value, so ("a_b", "c") and ("a", "b_c") render apart, as do
//     "" ("=") and null ("~");
//   - user tokens are their configured text.
//
// Every value but the prefix is escaped with [token.Escape], so a
// value is always exactly one subject token and two different tables never
// share a subject. A Subjects is immutable and safe for concurrent use.
type Subjects struct {
	prefix string
	// tmpl holds the parts of each phase's template, by phaseIndex.
	tmpl [3][]part
}

// tokenKind says what a part of a compiled template renders.
type tokenKind uint8

const (
	kindLiteral tokenKind = iota // lit as it is (prefix and user tokens included)
	kindSignal
	kindBind
	kindSchema
	kindTable
	kindOp
	kindKey     // the key-th primary-key value
	kindAllKeys // every primary-key value, joined with config.KeyJoin
)

type part struct {
	kind tokenKind
	lit  string
	key  int
}

// phaseIndex maps a phase to its template; an unknown phase renders with
// the after_commit template (Publish refuses unknown phases before).
func phaseIndex(p tracker.Phase) int {
	switch p {
	case tracker.PhaseBeforeCommit:
		return 0
	case tracker.PhaseRollback:
		return 2
	}
	return 1
}

// NewSubjects compiles the subject templates of NAMING_CONVENTION conv (nil:
// the default template) for the given SUBJECT_PREFIX. Its errors match
// [tracker.ErrConfig] and name the key at fault.
func NewSubjects(prefix string, conv map[string]string) (*Subjects, error) {
	s, err := newSubjects(prefix, conv)
	if err != nil {
		return nil, tracker.ConfigError(fmt.Errorf("nats: %w", err))
	}
	return s, nil
}

func newSubjects(prefix string, conv map[string]string) (*Subjects, error) {
	if err := checkLiteralSubject(prefix); err != nil {
		return nil, fmt.Errorf("SUBJECT_PREFIX %q: %w", prefix, err)
	}
	var userNames []string
	user := map[string]string{}
	for k, v := range conv {
		if k == convSubject || tracker.Phase(k).Valid() {
			continue
		}
		if slices.Contains(config.BuiltinTokens(), k) || strings.HasPrefix(k, "key_") {
			return nil, fmt.Errorf("NAMING_CONVENTION.%s: a user token may not take the name of a built-in token", k)
		}
		if v == "" {
			return nil, fmt.Errorf("NAMING_CONVENTION.%s: a user token needs a value", k)
		}
		user[k] = v
		userNames = append(userNames, k)
	}
	slices.Sort(userNames)
	base := config.DefaultSubjectTemplate
	if t, ok := conv[convSubject]; ok {
		base = t
	}
	s := &Subjects{prefix: prefix}
	for i, ph := range [...]tracker.Phase{tracker.PhaseBeforeCommit, tracker.PhaseAfterCommit, tracker.PhaseRollback} {
		key, src := convSubject, base
		if t, ok := conv[string(ph)]; ok {
			key, src = string(ph), t
		}
		parts, err := compileTemplate(src, prefix, user, userNames)
		if err != nil {
			return nil, fmt.Errorf("NAMING_CONVENTION.%s %q: %w", key, src, err)
		}
		s.tmpl[i] = parts
	}
	return s, nil
}

func compileTemplate(src, prefix string, user map[string]string, userNames []string) ([]part, error) {
	t, err := config.ParseTemplate(src, userNames)
	if err != nil {
		return nil, err
	}
	cp := t.Parts()
	if len(cp) < 2 || cp[0].Token != config.TokenPrefix || !strings.HasPrefix(cp[1].Literal, ".") {
		return nil, errors.New(`must begin with "%(prefix)s." and go on: the stream captures "<prefix>.>"`)
	}
	var parts []part
	addLit := func(s string) {
		if n := len(parts); n > 0 && parts[n-1].kind == kindLiteral {
			parts[n-1].lit += s
			return
		}
		parts = append(parts, part{kind: kindLiteral, lit: s})
	}
	for _, p := range cp {
		switch p.Token {
		case "":
			addLit(p.Literal)
		case config.TokenPrefix:
			addLit(prefix)
		case config.TokenSignal:
			parts = append(parts, part{kind: kindSignal})
		case config.TokenBind:
			parts = append(parts, part{kind: kindBind})
		case config.TokenSchema:
			parts = append(parts, part{kind: kindSchema})
		case config.TokenTable:
			parts = append(parts, part{kind: kindTable})
		case config.TokenOp:
			parts = append(parts, part{kind: kindOp})
		case config.TokenAllKeys:
			parts = append(parts, part{kind: kindAllKeys})
		default:
			if p.Key >= 0 {
				parts = append(parts, part{kind: kindKey, key: p.Key})
				continue
			}
			v, ok := user[p.Token]
			if !ok {
				return nil, fmt.Errorf("unknown token %%(%s)s", p.Token)
			}
			addLit(token.Escape(v))
		}
	}
	return parts, nil
}

// checkLiteralSubject reports why s is not a literal NATS subject fit for
// publishing: empty tokens, white space, control characters, wildcards or
// invalid UTF-8.
func checkLiteralSubject(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return errors.New("empty subject token: no leading, trailing or doubled '.'")
		}
		if r, bad := badRune(tok); bad {
			switch {
			case r == utf8.RuneError:
				return errors.New("not valid UTF-8")
			case r == '*' || r == '>':
				return fmt.Errorf("%q is a NATS wildcard", r)
			}
			return fmt.Errorf("%q: white space and control characters are not allowed", r)
		}
	}
	return nil
}

// CheckPattern reports why p is not a NATS subscription subject: an empty
// token, '>' before the last token, a wildcard that is not a whole token,
// white space, a control character or invalid UTF-8.
func CheckPattern(p string) error {
	toks := strings.Split(p, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return errors.New("empty token: no leading, trailing or doubled '.'")
		case tok == ">" && i != len(toks)-1:
			return errors.New("'>' must be the last token")
		case tok == "*" || tok == ">":
			continue
		}
		if r, bad := badRune(tok); bad {
			switch {
			case r == utf8.RuneError:
				return errors.New("not valid UTF-8")
			case r == '*' || r == '>':
				return fmt.Errorf("a wildcard %q must be a whole token", r)
			}
			return errors.New("white space and control characters are not allowed")
		}
	}
	return nil
}

// badRune returns the first rune of tok that a literal subject token may
// not hold: invalid UTF-8, a wildcard, white space or a control character.
func badRune(tok string) (rune, bool) {
	for _, r := range tok {
		if r == utf8.RuneError || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return r, true
		}
	}
	return 0, false
}

// Prefix returns SUBJECT_PREFIX; every subject begins with it and a dot.
func (s *Subjects) Prefix() string { return s.prefix }

// Append appends the subject of c's event in phase to b.
func (s *Subjects) Append(b []byte, phase tracker.Phase, c *tracker.Change) []byte {
	for _, p := range s.tmpl[phaseIndex(phase)] {
		switch p.kind {
		case kindLiteral:
			b = append(b, p.lit...)
		case kindSignal:
			b = token.Append(b, string(phase))
		case kindBind:
			b = token.Append(b, c.Bind)
		case kindSchema:
			b = token.Append(b, c.Schema)
		case kindTable:
			b = token.Append(b, c.Table)
		case kindOp:
			if phase == tracker.PhaseRollback {
				b = append(b, opRollback...)
			} else {
				b = token.Append(b, string(c.Op))
			}
		case kindKey:
			b = appendKeyToken(b, c.Key, p.key, p.key+1)
		case kindAllKeys:
			b = appendKeyToken(b, c.Key, 0, len(c.Key.Values))
		}
	}
	return b
}

// appendKeyToken appends the key values [from, to) of key, each escaped,
// joined with config.KeyJoin; no value at all renders as config.KeyNone.
func appendKeyToken(b []byte, key tracker.Row, from, to int) []byte {
	to = min(to, len(key.Values))
	if from >= to {
		return append(b, config.KeyNone...)
	}
	for i := from; i < to; i++ {
		if i > from {
			b = append(b, config.KeyJoin...)
		}
		b = appendKeyValue(b, key.Values[i])
	}
	return b
}

// appendKeyValue appends a key value's escaped text: a string's, "=" for
// "", its JSON text for any other value, and config.KeyNone for a null or
// missing one.
func appendKeyValue(b []byte, v json.RawMessage) []byte {
	switch {
	case len(v) == 0 || string(v) == "null":
		return append(b, config.KeyNone...)
	case v[0] == '"':
		var s string
		if !slices.Contains(v, '\\') && len(v) >= 2 {
			s = string(v[1 : len(v)-1])
		} else if err := json.Unmarshal(v, &s); err != nil {
			s = string(v)
		}
		return token.Append(b, s)
	}
	return token.Append(b, string(v))
}

// Filter selects events for a subscription. A field that is empty or "*"
// matches anything; any other value matches exactly (it is escaped as the
// subject token is). Primary-key and user tokens are always matched by a
// wildcard.
type Filter struct {
	// Phase is before_commit, after_commit or rollback.
	Phase string
	// Bind is the bind key.
	Bind string
	// Schema is the schema (the database for MySQL binds).
	Schema string
	// Table is the table.
	Table string
	// Op is insert, update, delete, truncate, snapshot or rollback.
	Op string
}

// Filter returns the NATS subscription pattern that matches the events f
// selects: the subject template with every wildcard field's subject token
// replaced by "*". A subject token that mixes a wildcard field with other
// text becomes "*" as a whole, so the pattern may match more than f (a
// consumer that needs exactness compares the event's attributes).
//
// It fails when f.Phase is not a phase, or is a wildcard while the phases
// have templates of different shapes (filter on one phase at a time then).
func (s *Subjects) Filter(f Filter) (string, error) {
	if !isAny(f.Phase) {
		ph := tracker.Phase(f.Phase)
		if !ph.Valid() {
			return "", fmt.Errorf("nats: filter phase %q: want before_commit, after_commit, rollback or *", f.Phase)
		}
		return s.pattern(s.tmpl[phaseIndex(ph)], f), nil
	}
	p := s.pattern(s.tmpl[0], f)
	for _, t := range s.tmpl[1:] {
		if q := s.pattern(t, f); q != p {
			return "", fmt.Errorf("nats: NAMING_CONVENTION gives the phases templates of different shapes (%s, %s): filter on one phase at a time", p, q)
		}
	}
	return p, nil
}

func isAny(v string) bool { return v == "" || v == "*" }

// pattern renders one template for Filter, token by token.
func (s *Subjects) pattern(parts []part, f Filter) string {
	var (
		out, tok []byte
		wild     bool
	)
	flush := func() {
		if wild {
			out = append(out, '*')
		} else {
			out = append(out, tok...)
		}
		tok, wild = tok[:0], false
	}
	value := func(v string) {
		if isAny(v) {
			wild = true
		} else {
			tok = token.Append(tok, v)
		}
	}
	for _, p := range parts {
		switch p.kind {
		case kindLiteral:
			lit := p.lit
			for {
				i := strings.IndexByte(lit, '.')
				if i < 0 {
					tok = append(tok, lit...)
					break
				}
				tok = append(tok, lit[:i]...)
				flush()
				out = append(out, '.')
				lit = lit[i+1:]
			}
		case kindSignal:
			value(f.Phase)
		case kindBind:
			value(f.Bind)
		case kindSchema:
			value(f.Schema)
		case kindTable:
			value(f.Table)
		case kindOp:
			value(f.Op)
		case kindKey, kindAllKeys:
			wild = true
		}
	}
	flush()
	return string(out)
}

// ControlToken and SnapshotControlToken make the subject of a bind's
// snapshot lifecycle events: <prefix>.control.<bind>.snapshot.
const (
	ControlToken         = "control"
	SnapshotControlToken = "snapshot"
)

// AppendControl appends the subject of bind's snapshot lifecycle events,
// <prefix>.control.<bind>.snapshot, the bind escaped as a subject token.
// It lies under the stream's <prefix>.>; config's checks refuse templates
// that could render it for a change.
func (s *Subjects) AppendControl(b []byte, bind string) []byte {
	b = append(b, s.prefix...)
	b = append(b, "."+ControlToken+"."...)
	b = token.Append(b, bind)
	return append(b, "."+SnapshotControlToken...)
}

// AppendEvent appends the subject of ev: the control subject of its bind
// for a lifecycle event (ev.Lifecycle set), else the template's subject of
// its change in its phase ([Subjects.Append]; a snapshot row renders with
// op token "snapshot").
func (s *Subjects) AppendEvent(b []byte, ev *tracker.Event) []byte {
	if l := ev.Lifecycle; l != nil {
		bind := l.Bind
		if ev.Change != nil && ev.Change.Bind != "" {
			bind = ev.Change.Bind
		}
		return s.AppendControl(b, bind)
	}
	return s.Append(b, ev.Phase, ev.Change)
}

// ControlFilter returns the subscription pattern of the snapshot lifecycle
// events of bind, every bind when bind is empty or "*":
// <prefix>.control.*.snapshot.
func (s *Subjects) ControlFilter(bind string) string {
	if isAny(bind) {
		return s.prefix + "." + ControlToken + ".*." + SnapshotControlToken
	}
	return string(s.AppendControl(nil, bind))
}

// StreamSubject returns the subject filter of the stream: "<prefix>.>".
func (s *Subjects) StreamSubject() string { return s.prefix + ".>" }
