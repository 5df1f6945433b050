package config

import (
	"encoding/json"
	"flag"
	"strings"
)

// BindFlags registers one string flag per key on fs, named after the key in
// kebab case (--database-uri, --binds, --track-modifications, --nats-url,
// --subject-prefix, --signals, --http-addr, --log-format, ...). A flag that
// is set stores its raw value under the KEY in into, ready for
// Options.Flags; an unset flag stores nothing, so the environment, file or
// default applies. Boolean keys may be given bare (--echo means
// --echo=true). Table keys (--binds, --engine-options,
// --naming-convention) take a JSON object, lists a JSON array or
// comma-separated items.
func BindFlags(fs *flag.FlagSet, into map[string]string) {
	for _, k := range Keys() {
		// The flag package takes the first `quoted` word of a usage as the
		// value's name: name it after the type, and keep the doc's own
		// back-quotes out of its way.
		usage := k.Name + " (`" + k.Type + "`): " + strings.ReplaceAll(k.Doc, "`", "'")
		if k.Default != "" {
			usage += " (default " + k.Default + ")"
		}
		fs.Var(&flagValue{key: k.Name, into: into, isBool: k.Type == "bool"}, k.Flag(), usage)
	}
}

// flagValue is a flag.Value writing into a KEY -> value map.
type flagValue struct {
	key    string
	into   map[string]string
	isBool bool
}

// String returns "": the flag package prints it as the default, and a
// value may be a secret.
func (f *flagValue) String() string { return "" }

func (f *flagValue) Set(s string) error {
	f.into[f.key] = s
	return nil
}

// IsBoolFlag lets boolean keys be given bare (flag.boolFlag).
func (f *flagValue) IsBoolFlag() bool { return f.isBool }

// SecretFlags returns the flags, as "--database-uri", whose value in flags
// (as filled by BindFlags) holds a password or token: --database-uri or
// --binds with a password in a URI, --nats-url with user information,
// --nats-password, --nats-token. A command line is visible to every local
// user (ps, /proc/PID/cmdline), so trackerd warns about them; the values are
// never returned.
func SecretFlags(flags map[string]string) []string {
	var out []string
	for _, s := range specs() {
		v, ok := flags[s.Name]
		if !ok || strings.TrimSpace(v) == "" || s.secret == public {
			continue
		}
		if holdsSecret(s, v) {
			out = append(out, "--"+s.Flag())
		}
	}
	return out
}

// holdsSecret reports whether a key's raw value holds a password or token.
func holdsSecret(s keySpec, v string) bool {
	switch {
	case s.secret == secretValue:
		return true
	case s.secret == secretNATS:
		// nats://user:password@host or nats://token@host, in any of the
		// comma-separated URLs.
		return strings.Contains(v, "@")
	case s.Name == "BINDS":
		var m map[string]any
		if json.Unmarshal([]byte(v), &m) != nil {
			return RedactURI(v) != v
		}
		for _, b := range m {
			uri, _ := b.(string)
			if t, ok := b.(map[string]any); ok {
				uri, _ = t["uri"].(string)
			}
			if RedactURI(uri) != uri {
				return true
			}
		}
		return false
	}
	return RedactURI(v) != v
}
