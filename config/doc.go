// Package config loads trackerd's configuration: the Flask-SQLAlchemy keys
// (DATABASE_URI, BINDS, TRACK_MODIFICATIONS, ECHO, RECORD_QUERIES,
// NATIVE_UNICODE, POOL_*, MAX_OVERFLOW, ENGINE_OPTIONS, NAMING_CONVENTION)
// and trackerd's own, from command-line flags, the environment
// (TRACKER_<KEY>, SQLALCHEMY_<KEY>, then Flask's FLASK_SQLALCHEMY_<KEY>), a
// TOML file, the NATS tools' bare NATS_URL, NATS_CREDS, NATS_USER,
// NATS_PASSWORD and NATS_TOKEN, and defaults, strongest first. Every bad
// value is refused with the key, the value (secrets hidden) and what is
// allowed.
//
// # Loading
//
// Load takes its sources as Options (flags already split by the CLI with
// BindFlags, an injected environment look-up and file reader), so nothing
// here reads the process environment. Each key takes its whole value from
// its strongest source; only that value is parsed, so a Flask
// application's SQLALCHEMY_ value that trackerd cannot read is harmless once
// a TRACKER_ variable overrides it. An empty environment variable is unset.
// The file's keys may carry SQLALCHEMY_ and any case; keys that are not
// trackerd's are skipped (a Flask application's config file loads as it
// is, see Config.SkippedKeys), except near-misses of trackerd's keys, which
// are errors with a "did you mean" suggestion; unknown TRACKER_ variables
// are ignored. Load reports every problem at once, as *FieldError values
// joined with errors.Join, and returns no Config then. Validate runs the
// same checks on a Config built in code.
//
// Values: booleans are true/false, 1/0, yes/no, on/off (any case) or TOML
// booleans; durations are Go durations ("10m", "1.5s") or a number of
// seconds; sizes are bytes or a number with a unit ("16MiB"); lists are
// TOML arrays, or in the environment and flags a JSON array or
// comma-separated items; tables (BINDS, ENGINE_OPTIONS, NAMING_CONVENTION)
// are TOML tables, or a JSON object. Keys lists every key with its type,
// default and meaning, and Markdown renders that as the README table.
//
// # Passwords
//
// config does not parse database URIs: package binds does, and binds
// imports config. Values that fail here are shown through RedactURI, which
// hides anything that may be a password in a URI-like text, and NATS
// passwords and tokens are never shown. A URI that is well typed but does
// not parse is reported by binds.FromConfig, with the same redaction.
//
// # Subject templates
//
// NAMING_CONVENTION's templates use SQLAlchemy's %(name)s syntax.
// ParseTemplate checks them and exposes their parts, so that package wire
// can render subjects without parsing again; the renderer escapes token
// values, never the template's literal text. Load and Validate also refuse
// templates that let two tables, ops, binds or phases share a subject (the
// README's "Subjects and events"): the tokens each template needs, a
// separator between tokens, no '=' in literal text, and phases apart.
package config
