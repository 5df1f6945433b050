package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

func TestParseTemplate(t *testing.T) {
	t.Parallel()
	lit := func(s string) Part { return Part{Literal: s, Key: -1} }
	tok := func(s string) Part { return Part{Token: s, Key: -1} }
	tests := []struct {
		name    string
		src     string
		extra   []string
		want    []Part
		wantErr string
		offset  int
	}{
		{name: "ok - default", src: DefaultSubjectTemplate, want: []Part{
			tok("prefix"), lit("."), tok("signal"), lit("."), tok("bind"), lit("."), tok("schema"), lit("."), tok("table"), lit("."), tok("op")}},
		{name: "ok - keys", src: "%(prefix)s.%(table)s.%(key_0)s.%(key_12)s.%(key_0_N)s", want: []Part{
			tok("prefix"), lit("."), tok("table"), lit("."), {Token: "key_0", Key: 0}, lit("."), {Token: "key_12", Key: 12}, lit("."), tok("key_0_N")}},
		{name: "ok - user token and literal text", src: "cdc.%(region)s.%(table)s-changes", extra: []string{"region"},
			want: []Part{lit("cdc."), tok("region"), lit("."), tok("table"), lit("-changes")}},
		{name: "ok - percent literal", src: "%(prefix)s.100%%.%(op)s", want: []Part{tok("prefix"), lit(".100%."), tok("op")}},
		{name: "ok - tokens side by side", src: "%(prefix)s.%(schema)s_%(table)s", want: []Part{tok("prefix"), lit("."), tok("schema"), lit("_"), tok("table")}},
		{name: "ok - static subject", src: "all.changes", want: []Part{lit("all.changes")}},
		{name: "ok - non-ASCII literal", src: "änderungen.%(table)s", want: []Part{lit("änderungen."), tok("table")}},

		{name: "error - unknown token", src: "%(prefix)s.%(tabel)s", wantErr: "unknown token %(tabel)s; want one of prefix, signal, bind, schema, table, op, key_0, key_1, ..., key_0_N", offset: 11},
		{name: "error - unknown token lists user tokens", src: "%(regio)s", extra: []string{"zone", "region"}, wantErr: "key_0_N, region, zone"},
		{name: "error - d conversion", src: "%(prefix)s.%(key_0)d", wantErr: "must be followed by s", offset: 11},
		{name: "error - width", src: "%(prefix)10s", wantErr: "must be followed by s"},
		{name: "error - bare %s", src: "%s.x", wantErr: `"s" after %`},
		{name: "error - lone %", src: "a.%", wantErr: "lone"},
		{name: "error - unclosed", src: "%(prefix", wantErr: "unclosed"},
		{name: "error - bad name", src: "%(pre-fix)s", wantErr: "bad token name"},
		{name: "error - empty name", src: "%()s", wantErr: "bad token name"},
		{name: "error - leading zero key", src: "%(key_01)s", wantErr: "unknown token"},
		{name: "error - star", src: "%(prefix)s.*", wantErr: "wildcard", offset: 11},
		{name: "error - gt", src: "%(prefix)s.>", wantErr: "wildcard"},
		{name: "error - space", src: "%(prefix)s. x", wantErr: "white space"},
		{name: "error - tab", src: "%(prefix)s.\tx", wantErr: "white space"},
		{name: "error - leading dot", src: ".%(prefix)s", wantErr: "empty subject token", offset: 0},
		{name: "error - trailing dot", src: "%(prefix)s.", wantErr: "empty subject token", offset: 11},
		{name: "error - double dot", src: "%(prefix)s..%(table)s", wantErr: "empty subject token", offset: 11},
		{name: "error - empty", src: "", wantErr: "empty template"},
		{name: "error - invalid UTF-8", src: "%(prefix)s.\xff", wantErr: "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmpl, err := ParseTemplate(tc.src, tc.extra)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := tmpl.Parts(); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("Parts() = %+v, want %+v", got, tc.want)
				}
				if tmpl.String() != tc.src {
					t.Errorf("String() = %q", tmpl.String())
				}
				return
			}
			var te *TemplateError
			if !errors.As(err, &te) {
				t.Fatalf("ParseTemplate(%q) = %v, want a *TemplateError", tc.src, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not say %q", err, tc.wantErr)
			}
			if tc.offset != 0 && te.Offset != tc.offset {
				t.Errorf("offset %d, want %d", te.Offset, tc.offset)
			}
		})
	}
}

func TestTemplateTokens(t *testing.T) {
	t.Parallel()
	tmpl, err := ParseTemplate("%(prefix)s.%(table)s.%(prefix)s.%(r)s", []string{"r"})
	if err != nil {
		t.Fatal(err)
	}
	if got := tmpl.Tokens(); !reflect.DeepEqual(got, []string{"prefix", "table", "r"}) {
		t.Errorf("Tokens() = %v", got)
	}
	// Parts is a copy.
	p := tmpl.Parts()
	p[0].Token = "x"
	if tmpl.Parts()[0].Token != "prefix" {
		t.Error("Parts shares the template's slice")
	}
}

// render substitutes every token with a token value as the sink's escaping
// would make it: non-empty, without '.', white space or wildcards.
func render(t Template) string {
	var b strings.Builder
	for _, p := range t.Parts() {
		if p.Token != "" {
			b.WriteString("v")
		} else {
			b.WriteString(p.Literal)
		}
	}
	return b.String()
}

// validLiteralSubject is the NATS rule for publish subjects.
func validLiteralSubject(s string) bool {
	if s == "" {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, "*>") ||
			strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return false
		}
	}
	return true
}

// FuzzParseTemplate: any template either fails with a *TemplateError or
// renders valid literal NATS subjects, and its parts rebuild its source.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{DefaultSubjectTemplate, "%(prefix)s.%(key_0_N)s", "a.%%.%(op)s", "%(region)s.x", "%(", "%", ".", "a..b", "%(key_3)s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tmpl, err := ParseTemplate(src, []string{"region"})
		if err != nil {
			var te *TemplateError
			if !errors.As(err, &te) || te.Offset < 0 || te.Offset > len(src) {
				t.Fatalf("error %v (%T)", err, err)
			}
			return
		}
		if s := render(tmpl); !validLiteralSubject(s) {
			t.Fatalf("template %q renders the invalid subject %q", src, s)
		}
		var b strings.Builder
		for _, p := range tmpl.Parts() {
			switch {
			case p.Token != "" && p.Literal != "":
				t.Fatalf("part %+v is both", p)
			case p.Token != "":
				b.WriteString("%(" + p.Token + ")s")
				if (keyIndex(p.Token) >= 0) != (p.Key >= 0) {
					t.Fatalf("part %+v: Key does not match the token", p)
				}
			default:
				b.WriteString(strings.ReplaceAll(p.Literal, "%", "%%"))
			}
		}
		if b.String() != src {
			t.Fatalf("parts of %q rebuild %q", src, b.String())
		}
	})
}

func BenchmarkParseTemplate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = ParseTemplate(DefaultSubjectTemplate, nil)
	}
}
