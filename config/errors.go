package config

import (
	"errors"
	"strconv"
	"strings"
)

// ErrUnknownKey is wrapped by the FieldError of a key trackerd does not
// know: in the config file, in a flag map, inside a bind or an
// ENGINE_OPTIONS table.
var ErrUnknownKey = errors.New("unknown key")

// FieldError is one bad configuration value. Load returns all of them at
// once, joined with errors.Join; use errors.As to find them.
//
// Its message reads
//
//	config: TRACK_MODIFICATIONS (env TRACKER_TRACK_MODIFICATIONS) = "maybe": want true or false
//
// and never holds a password: Value is redacted before the error is built.
type FieldError struct {
	// Key names the setting: a key ("POOL_SIZE") or a path into a table
	// ("BINDS.orders.track", "NAMING_CONVENTION.subject"). It is empty for
	// a problem with the whole file (unreadable, not TOML).
	Key string
	// Value is the value as given, with passwords replaced by ***. It is
	// empty when the value is not shown (tables, arrays, unknown keys).
	Value string
	// Source says where the value came from: "file trackerd.toml",
	// "env TRACKER_ECHO", "env SQLALCHEMY_ECHO", "flag --echo", "default",
	// or "" for a Config built in code.
	Source string
	// Allowed says what would be accepted, after "want".
	Allowed string
	// Err is the underlying problem, if there is more to say than Allowed.
	Err error
}

// Error formats the key, source, value and what is allowed.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	switch {
	case e.Key != "" && e.Source != "":
		b.WriteString(e.Key)
		b.WriteString(" (")
		b.WriteString(e.Source)
		b.WriteString(")")
	case e.Key != "":
		b.WriteString(e.Key)
	default:
		b.WriteString(e.Source)
	}
	if e.Value != "" {
		b.WriteString(" = ")
		b.WriteString(strconv.Quote(e.Value))
	}
	b.WriteString(": ")
	switch {
	case e.Err != nil && e.Allowed != "":
		b.WriteString(e.Err.Error())
		b.WriteString("; want ")
		b.WriteString(e.Allowed)
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	case e.Allowed != "":
		b.WriteString("want ")
		b.WriteString(e.Allowed)
	default:
		b.WriteString("invalid value")
	}
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *FieldError) Unwrap() error { return e.Err }

// problems collects FieldErrors; the zero value is ready to use.
type problems struct{ list []error }

func (p *problems) add(e *FieldError) { p.list = append(p.list, e) }

func (p *problems) err() error { return errors.Join(p.list...) }
