package config

import (
	"strings"
	"testing"
)

// TestSubjectTemplatesThatShareSubjects: a template that lets two tables,
// two ops, two binds or two phases share a subject is refused at start,
// naming the template key, the problem and the fix (fault review F12).
func TestSubjectTemplatesThatShareSubjects(t *testing.T) {
	t.Parallel()
	const two = `{"a": "postgresql://h/a", "b": "postgresql://h/b"}`
	tests := []struct {
		name string
		env  map[string]string
		key  string // "" when the configuration is fine
		says []string
	}{
		{name: "ok - the default", env: env()},
		{name: "ok - a separator other than a dot",
			env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s:%(table)s.%(op)s"}`)},
		{name: "ok - per-phase templates apart by a literal token",
			env: env("TRACKER_NAMING_CONVENTION", `{"before_commit": "%(prefix)s.b.%(bind)s.%(schema)s.%(table)s.%(op)s", "after_commit": "%(prefix)s.a.%(bind)s.%(schema)s.%(table)s.%(op)s"}`)},
		{name: "ok - no signal with one phase published", env: env("TRACKER_SIGNALS", "after_commit",
			"TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(schema)s.%(table)s.%(op)s"}`)},
		{name: "ok - no bind with one bind", env: env("TRACKER_DATABASE_URI", "postgresql://h/db",
			"TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(schema)s.%(table)s.%(op)s"}`)},
		{name: "ok - no bind beside an untracked bind", env: env("TRACKER_DATABASE_URI", "postgresql://h/db",
			"TRACKER_BINDS", `{"b": {"uri": "postgresql://h/b", "track": false}}`,
			"TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(schema)s.%(table)s.%(op)s"}`)},
		{name: "ok - a rollback template without table or op",
			env: env("TRACKER_NAMING_CONVENTION", `{"rollback": "%(prefix)s.rb.%(bind)s"}`)},
		{name: "ok - key tokens apart from the rest",
			env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s.%(key_0_N)s"}`)},

		// The fault review's three reproductions.
		{name: "tokens side by side", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(schema)s%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"env TRACKER_NAMING_CONVENTION", "%(schema)s and %(table)s are in one subject token side by side",
				`schema "a" with table "bc", and schema "ab" with table "c"`, "put a '.' between them"}},
		{name: "a literal escape", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(schema)s=2E%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{`"=2E" holds '='`, "write the text without '='"}},
		{name: "table alone", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(table)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"no %(schema)s", "add %(schema)s"}},

		{name: "a literal = next to a token", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s=.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"holds '='"}},
		{name: "a lone literal =", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.=.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"holds '='"}},
		{name: "joined with _", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s_%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{`with only "_" between them`, `schema "a_b" with table "c"`}},
		{name: "joined with a user token", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s%(env)s%(table)s.%(op)s", "env": "x"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"%(schema)s and %(table)s"}},
		{name: "op glued to a key", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s-%(key_0)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"%(op)s and %(key_0)s"}},
		{name: "no table", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(schema)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"no %(table)s"}},
		{name: "no op", env: env("TRACKER_NAMING_CONVENTION", `{"after_commit": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s"}`),
			key: "NAMING_CONVENTION.after_commit", says: []string{"no %(op)s", "an insert and a delete of one table would share a subject"}},
		{name: "no bind with two binds", env: env("TRACKER_BINDS", two,
			"TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(schema)s.%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"no %(bind)s", "several binds"}},
		{name: "no bind with DATABASE_URI and BINDS", env: env("TRACKER_DATABASE_URI", "postgresql://h/db", "TRACKER_BINDS", `{"b": "mysql://h/b"}`,
			"TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(schema)s.%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"no %(bind)s"}},
		{name: "no signal with both phases", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(bind)s.%(schema)s.%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.subject", says: []string{"renders the same subjects for after_commit events as for before_commit events", "put %(signal)s in the template"}},
		{name: "per-phase templates alike", env: env("TRACKER_NAMING_CONVENTION", `{"before_commit": "%(prefix)s.x.%(bind)s.%(schema)s.%(table)s.%(op)s", "after_commit": "%(prefix)s.x.%(bind)s.%(schema)s.%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.after_commit", says: []string{"NAMING_CONVENTION.before_commit for before_commit events"}},
		{name: "a literal token that equals an op", env: env("TRACKER_NAMING_CONVENTION", `{"before_commit": "%(prefix)s.%(bind)s.%(schema)s.%(table)s.%(op)s", "after_commit": "%(prefix)s.%(bind)s.%(schema)s.%(table)s.insert-%(op)s"}`)},
		{name: "the snapshot lifecycle subject", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s", "after_commit": "%(prefix)s.control.%(schema)s:%(table)s.%(op)s"}`),
			key: "NAMING_CONVENTION.after_commit", says: []string{"trackerd.control.<bind>.snapshot", "for after_commit events of op snapshot"}},
		{name: "ok - the lifecycle subject only for a schema called control", env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s", "after_commit": "%(prefix)s.%(schema)s.%(table)s.%(op)s"}`)},
		{name: "rollback template like a change's", env: env("TRACKER_NAMING_CONVENTION", `{"rollback": "%(prefix)s.before_commit.%(bind)s.%(schema)s.%(table)s.insert"}`),
			key: "NAMING_CONVENTION.rollback", says: []string{"for rollback events as NAMING_CONVENTION.subject for before_commit events"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := input{env: tc.env}
			if _, ok := tc.env["TRACKER_DATABASE_URI"]; !ok {
				if _, ok := tc.env["TRACKER_BINDS"]; !ok {
					in.env["TRACKER_DATABASE_URI"] = "postgresql://h/db"
				}
			}
			_, err := Load(in.options())
			if tc.key == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load accepted the template, want an error on %s", tc.key)
			}
			for _, fe := range fieldErrors(t, err) {
				if fe.Key != tc.key {
					t.Errorf("an error on %s: %v", fe.Key, fe)
					continue
				}
				for _, w := range tc.says {
					if !strings.Contains(fe.Error(), w) {
						t.Errorf("error %q does not say %q", fe.Error(), w)
					}
				}
			}
		})
	}
}
