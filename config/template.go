package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/trackerd/trackerd/wire/token"
)

// DefaultSubjectTemplate is NAMING_CONVENTION's default "subject": one
// subject per row change and phase (the README's "Subjects and events").
const DefaultSubjectTemplate = "%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s"

// The built-in subject template tokens.
const (
	TokenPrefix = "prefix" // SUBJECT_PREFIX
	TokenSignal = "signal" // before_commit, after_commit, rollback
	TokenBind   = "bind"   // the bind key
	TokenSchema = "schema" // the schema; the database name for MySQL binds
	TokenTable  = "table"  // the table
	TokenOp     = "op"     // insert, update, delete, truncate, snapshot
	// TokenAllKeys is every primary-key value, joined with "_"
	// (SQLAlchemy's column_0_N_name). key_0, key_1, ... are single values.
	TokenAllKeys = "key_0_N"
)

// BuiltinTokens returns the names of the built-in tokens, in the order the
// default template uses them, then key_0_N. key_<N> (any N ≥ 0) is also
// built in.
func BuiltinTokens() []string {
	return []string{TokenPrefix, TokenSignal, TokenBind, TokenSchema, TokenTable, TokenOp, TokenAllKeys}
}

// Template is a parsed NAMING_CONVENTION template: SQLAlchemy's %(name)s
// syntax, with %% for a literal %.
//
// A renderer walks Parts: a literal Part is copied into the subject as it
// is and never escaped (ParseTemplate has checked that it holds no white
// space, '*' or '>' and makes no empty subject token); a token Part is
// replaced by its value escaped with the subject escaping rule (package
// wire/token), which never yields '.', white space, '*', '>' or an
// empty string. So every rendered subject is a valid literal NATS subject
// with as many tokens as the template promises.
//
// The zero Template has no parts and renders the empty subject; only
// ParseTemplate makes valid ones.
type Template struct {
	src   string
	parts []Part
}

// Part is one piece of a Template: literal text when Token is empty,
// otherwise a token to substitute.
type Part struct {
	// Literal is text copied as it is (with %% already turned into %).
	Literal string
	// Token is the token's name: a built-in one (TokenPrefix, ...,
	// TokenAllKeys, key_<N>) or a user token from NAMING_CONVENTION.
	Token string
	// Key is N for the token key_<N> (the Nth primary-key value; empty when
	// the key has fewer values), and -1 for every other part.
	Key int
}

// String returns the template's source text.
func (t Template) String() string { return t.src }

// Parts returns the template's pieces in order. The slice is a copy;
// renderers should call it once and keep the result.
func (t Template) Parts() []Part { return slices.Clone(t.parts) }

// Tokens returns the names of the tokens the template uses, in order of
// first use.
func (t Template) Tokens() []string {
	var out []string
	for _, p := range t.parts {
		if p.Token != "" && !slices.Contains(out, p.Token) {
			out = append(out, p.Token)
		}
	}
	return out
}

// TemplateError is a template ParseTemplate refuses.
type TemplateError struct {
	// Offset is the byte offset in the template where the problem is.
	Offset int
	// Problem says what is wrong.
	Problem string
}

// Error returns the problem with its offset.
func (e *TemplateError) Error() string {
	return fmt.Sprintf("template at offset %d: %s", e.Offset, e.Problem)
}

// ParseTemplate parses a subject template. extraTokens are the user-defined
// static tokens allowed beside the built-in ones (the other keys of
// NAMING_CONVENTION).
//
// Grammar: %(name)s substitutes a token, %% is a literal %, and anything
// else after a % is an error; name is one or more of [A-Za-z0-9_]. An
// unknown token is an error naming it and listing the allowed ones. The
// literal text must be valid UTF-8 with no white space, control
// characters, '*' or '>', and the template must not produce an empty
// subject token (a leading, trailing or doubled '.', or an empty template).
func ParseTemplate(s string, extraTokens []string) (Template, error) {
	var (
		parts []Part
		lit   strings.Builder
		// empty is true while the current subject token is empty so far.
		// Token values are never empty and never hold '.', so only the dots
		// of the literal text can make an empty token.
		empty = true
	)
	const emptyToken = "empty subject token: no leading, trailing or doubled '.'"
	if s == "" {
		return Template{}, &TemplateError{0, "empty template: a subject needs at least one token"}
	}
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, Part{Literal: lit.String(), Key: -1})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return Template{}, &TemplateError{i, "not valid UTF-8"}
			}
			switch {
			case r == '*' || r == '>':
				return Template{}, &TemplateError{i, fmt.Sprintf("%q is a NATS wildcard and may not appear in a subject", r)}
			case unicode.IsSpace(r) || unicode.IsControl(r):
				return Template{}, &TemplateError{i, fmt.Sprintf("%q: white space and control characters may not appear in a subject", r)}
			}
			if r == '.' {
				if empty {
					return Template{}, &TemplateError{i, emptyToken}
				}
				empty = true
			} else {
				empty = false
			}
			lit.WriteString(s[i : i+size])
			i += size
			continue
		}
		if i+1 >= len(s) {
			return Template{}, &TemplateError{i, `a lone "%" at the end; write %% for a literal %`}
		}
		switch s[i+1] {
		case '%':
			lit.WriteByte('%')
			empty = false
			i += 2
			continue
		case '(':
		default:
			return Template{}, &TemplateError{i, fmt.Sprintf("%q after %%: want %%(name)s or %%%%", s[i+1:i+2])}
		}
		end := strings.IndexByte(s[i+2:], ')')
		if end < 0 {
			return Template{}, &TemplateError{i, `unclosed "%(": want %(name)s`}
		}
		name := s[i+2 : i+2+end]
		if !isTokenName(name) {
			return Template{}, &TemplateError{i, fmt.Sprintf("bad token name %q: want letters, digits and _", name)}
		}
		after := i + 2 + end + 1
		if after >= len(s) || s[after] != 's' {
			return Template{}, &TemplateError{i, fmt.Sprintf("%%(%s) must be followed by s, as in %%(%s)s", name, name)}
		}
		key, ok := knownToken(name, extraTokens)
		if !ok {
			return Template{}, &TemplateError{i, fmt.Sprintf("unknown token %%(%s)s; want one of %s", name, allowedTokens(extraTokens))}
		}
		flush()
		parts = append(parts, Part{Token: name, Key: key})
		empty = false
		i = after + 1
	}
	flush()
	if empty {
		return Template{}, &TemplateError{len(s), emptyToken}
	}
	return Template{src: s, parts: parts}, nil
}

func isTokenName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// keyIndex returns N for "key_<N>" (no sign, no leading zeros) or -1.
func keyIndex(name string) int {
	digits, ok := strings.CutPrefix(name, "key_")
	if !ok || !allDigits(digits) || len(digits) > 1 && digits[0] == '0' || len(digits) > 6 {
		return -1
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		return -1
	}
	return n
}

// knownToken reports whether name is allowed, and its key index.
func knownToken(name string, extra []string) (int, bool) {
	if slices.Contains(BuiltinTokens(), name) || slices.Contains(extra, name) {
		return -1, true
	}
	if n := keyIndex(name); n >= 0 {
		return n, true
	}
	return -1, false
}

func allowedTokens(extra []string) string {
	names := []string{TokenPrefix, TokenSignal, TokenBind, TokenSchema, TokenTable, TokenOp, "key_0, key_1, ...", TokenAllKeys}
	user := slices.Clone(extra)
	slices.Sort(user)
	names = append(names, user...)
	return strings.Join(names, ", ")
}

// isBuiltinToken reports whether a user token of this name would shadow a
// built-in one.
func isBuiltinToken(name string) bool {
	return slices.Contains(BuiltinTokens(), name) || keyIndex(name) >= 0 ||
		strings.HasPrefix(name, "key_")
}

// How key tokens render beside the escaping of values (the NATS sink's
// renderer follows these): key_0_N joins the escaped values with KeyJoin,
// and a null or missing value renders as KeyNone, while an empty string is
// "=" as any empty value. Neither byte is ever part of an escaped value, so
// ("a_b", "c") and ("a", "b_c"), or "" and null, never share a subject.
const (
	KeyJoin = ","
	KeyNone = "~"
)

// variableToken reports whether a template part renders a value that
// differs between events: the signal, bind, schema, table, op and key
// tokens. The prefix and user tokens are fixed text.
func variableToken(p Part) bool {
	switch p.Token {
	case TokenSignal, TokenBind, TokenSchema, TokenTable, TokenOp, TokenAllKeys:
		return true
	}
	return p.Key >= 0
}

// separatorByte reports whether c, in a template's literal text, ends the
// value of the token before it: no escaped value and no key token holds it.
func separatorByte(c byte) bool {
	switch {
	case c == '_' || c == '-' || c == '=' || c == KeyJoin[0] || c == KeyNone[0]:
		return false
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return false
	}
	return true
}

// subjectNeeds says which tokens a subject template must hold so that no
// two tables, ops or binds share a subject.
type subjectNeeds struct {
	bind    bool // several binds publish
	changes bool // the template serves change events, not only rollbacks
}

// checkSubjectTemplate reports why t could give two events that differ in
// their bind, schema, table or op the same subject (the README's
// "Subjects and events"):
// a literal '=' (which reads as an escape), a required token missing
// (schema, table and op in a template of change events; bind with several
// binds), or two tokens in one subject token with nothing between them that
// a value cannot hold. A template of rollback events alone needs no
// schema, table or op: a rollback retracts a transaction. Each error says
// how to fix the template.
func checkSubjectTemplate(t Template, needs subjectNeeds) error {
	for _, p := range t.parts {
		if p.Token == "" && strings.Contains(p.Literal, "=") {
			return fmt.Errorf("the literal text %q holds '=', which reads as an escaped value (=2E is an escaped '.', a lone = an empty value), so a literal could pass for a value; write the text without '='", p.Literal)
		}
	}
	tokens := t.Tokens()
	required := []struct {
		name string
		need bool
		why  string
	}{
		{TokenSchema, needs.changes, "two tables of one name in different schemas (MySQL: databases) would share a subject"},
		{TokenTable, needs.changes, "every table of a schema would share one subject"},
		{TokenOp, needs.changes, "an insert and a delete of one table would share a subject"},
		{TokenBind, needs.bind, "there are several binds, and the same table of two binds would share a subject"},
	}
	for _, r := range required {
		if r.need && !slices.Contains(tokens, r.name) {
			return fmt.Errorf("no %%(%s)s: %s; add %%(%s)s, as in the default %s", r.name, r.why, r.name, DefaultSubjectTemplate)
		}
	}
	var (
		last      string // the variable token earlier in this subject token
		separated bool   // a separator byte since last
		between   strings.Builder
	)
	for _, p := range t.parts {
		switch {
		case p.Token == "":
			for i := 0; i < len(p.Literal); i++ {
				c := p.Literal[i]
				if c == '.' {
					last = ""
					continue
				}
				if separatorByte(c) {
					separated = true
				}
				between.WriteByte(c)
			}
		case variableToken(p):
			if last != "" && !separated {
				return sideBySide(last, p.Token, between.String())
			}
			last, separated = p.Token, false
			between.Reset()
		}
	}
	return nil
}

// sideBySide is the error for two tokens whose values can run together.
func sideBySide(a, b, between string) error {
	what := "side by side"
	if between != "" {
		what = fmt.Sprintf("with only %q between them", between)
	}
	example := ""
	if !strings.ContainsAny(between, KeyJoin+KeyNone) {
		example = fmt.Sprintf(" (%s %q with %s %q, and %s %q with %s %q, give one subject)",
			a, "a", b, "b"+between+"c", a, "a"+between+"b", b, "c")
	}
	return fmt.Errorf("%%(%s)s and %%(%s)s are in one subject token %s, so their values can run together%s; put a '.' between them, or another character no value holds (anything but letters, digits and \"_-=%s%s\")",
		a, b, what, example, KeyJoin, KeyNone)
}

// phaseTokens returns the subject tokens t renders in phase: for each, the
// texts it can take, or nil when it depends on the change (bind, schema,
// table, key). prefix is SUBJECT_PREFIX and user the user tokens.
func phaseTokens(t Template, phase, prefix string, user map[string]string) [][]string {
	const most = 256 // more alternatives than this count as any text
	var (
		out []([]string)
		cur = []string{""}
	)
	add := func(alts ...string) {
		if cur == nil {
			return
		}
		if len(cur)*len(alts) > most {
			cur = nil
			return
		}
		next := make([]string, 0, len(cur)*len(alts))
		for _, c := range cur {
			for _, a := range alts {
				next = append(next, c+a)
			}
		}
		cur = next
	}
	text := func(s string) {
		for {
			i := strings.IndexByte(s, '.')
			if i < 0 {
				add(s)
				return
			}
			add(s[:i])
			out = append(out, cur)
			cur = []string{""}
			s = s[i+1:]
		}
	}
	for _, p := range t.parts {
		switch {
		case p.Token == "":
			text(p.Literal)
		case p.Token == TokenPrefix:
			text(prefix)
		case p.Token == TokenSignal:
			add(phase)
		case p.Token == TokenOp && phase == "rollback":
			add("rollback")
		case p.Token == TokenOp:
			add("insert", "update", "delete", "truncate", "snapshot")
		case variableToken(p):
			cur = nil
		default:
			add(token.Escape(user[p.Token]))
		}
	}
	return append(out, cur)
}

// controlTokens are the subject tokens of snapshot lifecycle events,
// <prefix>.control.<bind>.snapshot (wire.Subjects.AppendControl), as
// phaseTokens gives them.
func controlTokens(prefix string) [][]string {
	var out [][]string
	for tok := range strings.SplitSeq(prefix, ".") {
		out = append(out, []string{tok})
	}
	return append(out, []string{"control"}, nil, []string{"snapshot"})
}

// tokensApart reports whether two subjects' tokens, as phaseTokens gives
// them, can never be equal.
func tokensApart(ta, tb [][]string) bool {
	if len(ta) != len(tb) {
		return true
	}
	for i := range ta {
		if ta[i] == nil || tb[i] == nil {
			continue
		}
		if !slices.ContainsFunc(ta[i], func(s string) bool { return slices.Contains(tb[i], s) }) {
			return true
		}
	}
	return false
}

// tokensMeet reports whether the subject tokens ta, as phaseTokens gives
// them, surely take the fixed texts of tb (nil in tb: any text) for some
// event, whatever its bind, schema, table and key: a template whose
// subjects fall on another's only for some names (a schema called
// "control") is not counted.
func tokensMeet(ta, tb [][]string) bool {
	if len(ta) != len(tb) {
		return false
	}
	for i := range ta {
		if tb[i] == nil {
			continue
		}
		if ta[i] == nil || !slices.ContainsFunc(ta[i], func(s string) bool { return slices.Contains(tb[i], s) }) {
			return false
		}
	}
	return true
}

// phasesApart reports whether template a in phase pa and template b in
// phase pb can never render the same subject: one template holding
// %(signal)s (or, with one phase the rollback, %(op)s, whose value is then
// "rollback"), which checkSubjectTemplate makes readable back; or
// different numbers of subject tokens; or a subject token whose possible
// texts differ in the two.
func phasesApart(a Template, pa string, b Template, pb, prefix string, user map[string]string) bool {
	if a.src == b.src {
		tokens := a.Tokens()
		return slices.Contains(tokens, TokenSignal) ||
			(pa == "rollback" || pb == "rollback") && slices.Contains(tokens, TokenOp)
	}
	return tokensApart(phaseTokens(a, pa, prefix, user), phaseTokens(b, pb, prefix, user))
}
