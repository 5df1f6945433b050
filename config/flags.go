package config

import (
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
