package config

import (
	"fmt"
	"strings"
	"time"
)

// KeyInfo describes one configuration key. Keys returns the whole table;
// it drives the environment look-up, the flags (BindFlags), the file's
// known keys and the README table (Markdown).
type KeyInfo struct {
	// Name is the canonical key, without a prefix: "DATABASE_URI".
	Name string
	// Type is the value's type as documented: bool, int, seconds,
	// duration, size, string, list, table, URI, path, address.
	Type string
	// Default is the default, as documented ("" for none).
	Default string
	// Doc says what the key does, in one or two sentences.
	Doc string
	// Flask is true for the Flask-SQLAlchemy keys, false for trackerd's own.
	Flask bool
	// Secret is true when values are redacted in errors (passwords, tokens,
	// URIs with a password).
	Secret bool
}

// EnvNames returns the environment variables that set the key above the
// config file, strongest first: TRACKER_<KEY>, SQLALCHEMY_<KEY> and
// FLASK_SQLALCHEMY_<KEY> (Flask's from_prefixed_env). NATS_URL,
// NATS_CREDS, NATS_USER, NATS_PASSWORD and NATS_TOKEN are also read from
// the bare variable of that name, below the file (see Load).
func (k KeyInfo) EnvNames() []string {
	return []string{"TRACKER_" + k.Name, "SQLALCHEMY_" + k.Name, "FLASK_SQLALCHEMY_" + k.Name}
}

// Flag returns the command-line flag's name: the key in kebab case,
// "database-uri" for DATABASE_URI.
func (k KeyInfo) Flag() string { return flagName(k.Name) }

func flagName(key string) string {
	return strings.ReplaceAll(strings.ToLower(key), "_", "-")
}

// Keys returns every configuration key, in documentation order. The slice
// is new on every call.
func Keys() []KeyInfo {
	specs := specs()
	out := make([]KeyInfo, len(specs))
	for i, s := range specs {
		out[i] = s.KeyInfo
	}
	return out
}

// Markdown renders the key table for the README: key, type, default and
// meaning, Flask-SQLAlchemy keys first.
func Markdown() string {
	var b strings.Builder
	b.WriteString("Every key is read, strongest first, from a command-line flag (`--kebab-case-key`), the environment (`TRACKER_<KEY>`, then `SQLALCHEMY_<KEY>`, then Flask's `FLASK_SQLALCHEMY_<KEY>`; an empty variable counts as unset), the TOML file given with `--config` (keys with or without `SQLALCHEMY_`), and the default. `NATS_URL`, `NATS_CREDS`, `NATS_USER`, `NATS_PASSWORD` and `NATS_TOKEN` are also read from the NATS tools' bare variables of those names, below every other source.\n\n")
	for _, flask := range []bool{true, false} {
		if flask {
			b.WriteString("Flask-SQLAlchemy keys:\n\n")
		} else {
			b.WriteString("\ntrackerd's own keys:\n\n")
		}
		b.WriteString("| key | type | default | meaning |\n|---|---|---|---|\n")
		for _, k := range Keys() {
			if k.Flask != flask {
				continue
			}
			def := "unset"
			if k.Default != "" {
				def = "`" + k.Default + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", k.Name, k.Type, def, strings.ReplaceAll(k.Doc, "|", `\|`))
		}
	}
	return b.String()
}

// state is Load's work in progress: the config, and the two spellings of
// the pool settings, merged once every key is read.
type state struct {
	c      *Config
	pool   EngineOptions // POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT, POOL_RECYCLE
	engine EngineOptions // ENGINE_OPTIONS
}

// keySpec is a KeyInfo with its parser.
type keySpec struct {
	KeyInfo
	secret secrecy
	set    func(st *state, f field, v any)
}

const (
	allowedDuration = "a duration such as 10m or 1.5s, or a number of seconds"
	allowedSeconds  = "a number of seconds, or a duration such as 30s"
	allowedSize     = "a number of bytes, or a size such as 16MiB or 1GB"
)

func stringKey(name, typ, def, doc string, flask bool, sec secrecy, dst func(*Config) *string) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: typ, Default: def, Doc: doc, Flask: flask, Secret: sec != public},
		secret:  sec,
		set: func(st *state, f field, v any) {
			if s, ok := toString(f, v); ok {
				*dst(st.c) = s
			}
		},
	}
}

// enumKey is a string key whose value is lower-cased before validation.
func enumKey(name, def, doc string, dst func(*Config) *string) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: "string", Default: def, Doc: doc},
		set: func(st *state, f field, v any) {
			if s, ok := toString(f, v); ok {
				*dst(st.c) = strings.ToLower(strings.TrimSpace(s))
			}
		},
	}
}

func boolKey(name, def, doc string, flask bool, dst func(*Config) *bool) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: "bool", Default: def, Doc: doc, Flask: flask},
		set: func(st *state, f field, v any) {
			if b, ok := toBool(f, v); ok {
				*dst(st.c) = b
			}
		},
	}
}

func triBoolKey(name, def, doc string, dst func(*Config) **bool) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: "bool", Default: def, Doc: doc, Flask: true},
		set: func(st *state, f field, v any) {
			if b, ok := toBool(f, v); ok {
				*dst(st.c) = &b
			}
		},
	}
}

func intKey(name, def, doc, allowed string, dst func(*Config) *int) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: "int", Default: def, Doc: doc},
		set: func(st *state, f field, v any) {
			if n, ok := toInt(f, v, allowed); ok {
				if int64(int(n)) != n {
					f.bad(v, allowed, nil)
					return
				}
				*dst(st.c) = int(n)
			}
		},
	}
}

func int64Key(name, def, doc, allowed string, dst func(*Config) *int64) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: "int", Default: def, Doc: doc},
		set: func(st *state, f field, v any) {
			if n, ok := toInt(f, v, allowed); ok {
				*dst(st.c) = n
			}
		},
	}
}

func sizeKey(name, def, doc string, dst func(*Config) *int64) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: "size", Default: def, Doc: doc},
		set: func(st *state, f field, v any) {
			if n, ok := toSize(f, v, allowedSize); ok {
				*dst(st.c) = n
			}
		},
	}
}

func durationKey(name, def, doc string, dst func(*Config) *time.Duration) keySpec {
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: "duration", Default: def, Doc: doc},
		set: func(st *state, f field, v any) {
			if d, ok := toDuration(f, v, allowedDuration); ok {
				*dst(st.c) = d
			}
		},
	}
}

// poolKey is one of Flask-SQLAlchemy 2.x's pool keys, kept apart until
// ENGINE_OPTIONS is known.
func poolKey(name, def, doc string, seconds bool, set func(o *EngineOptions, f field, v any)) keySpec {
	typ := "int"
	if seconds {
		typ = "seconds"
	}
	return keySpec{
		KeyInfo: KeyInfo{Name: name, Type: typ, Default: def, Doc: doc, Flask: true},
		set: func(st *state, f field, v any) {
			set(&st.pool, f, v)
		},
	}
}

// specs is the key table. It is built on every call, so nothing shares or
// mutates it.
func specs() []keySpec {
	return []keySpec{
		stringKey("DATABASE_URI", "URI", "",
			"The default bind (key `default`): `dialect[+driver]://user:password@host:port/database?options`, PostgreSQL or MySQL/MariaDB.",
			true, secretURI, func(c *Config) *string { return &c.DatabaseURI }),
		{
			KeyInfo: KeyInfo{Name: "BINDS", Type: "table", Flask: true, Secret: true,
				Doc: "More binds, bind key -> URI or table `{uri, tables, exclude_tables, track, slot, publication, server_id, streaming, heartbeat, snapshot, engine_options, pool_size, max_overflow, pool_timeout, pool_recycle}`. A JSON object in the environment or a flag. `default` without `uri` gives options to `DATABASE_URI`'s bind."},
			secret: secretURI,
			set:    setBinds,
		},
		triBoolKey("TRACK_MODIFICATIONS", "",
			"`true`: track. `false`: follow no bind and fire no signal. Unset: track, and warn once per start.",
			func(c *Config) **bool { return &c.TrackModifications }),
		{
			KeyInfo: KeyInfo{Name: "ECHO", Type: "bool", Default: "false", Flask: true,
				Doc: "Log every decoded change and every published event. `debug` (as Flask-SQLAlchemy 2.2+ allows) counts as true."},
			set: func(st *state, f field, v any) {
				if s, ok := v.(string); ok && strings.EqualFold(strings.TrimSpace(s), "debug") {
					st.c.Echo = true
					return
				}
				if b, ok := toBool(f, v); ok {
					st.c.Echo = b
				}
			},
		},
		triBoolKey("RECORD_QUERIES", "DEBUG or TESTING",
			"Keep the most recent events with their timings in a bounded ring, served at `/debug/events`. An explicit `false` wins over `DEBUG`.",
			func(c *Config) **bool { return &c.RecordQueries }),
		boolKey("NATIVE_UNICODE", "true",
			"`true`: trust the server's encoding. `false`: decode text from the column's declared charset and escape bytes that are not UTF-8.",
			true, func(c *Config) *bool { return &c.NativeUnicode }),
		poolKey("POOL_SIZE", "5, 10 for MySQL/MariaDB",
			"Idle query connections per bind (schema look-ups, snapshots, checks). `ENGINE_OPTIONS.pool_size` wins over it.",
			false, func(o *EngineOptions, f field, v any) { o.PoolSize = intOption(f, v, 0, allowedPoolSize) }),
		poolKey("MAX_OVERFLOW", "10",
			"Extra query connections beyond `POOL_SIZE` under load; -1 means no limit. `ENGINE_OPTIONS.max_overflow` wins over it.",
			false, func(o *EngineOptions, f field, v any) { o.MaxOverflow = intOption(f, v, -1, allowedMaxOverflow) }),
		poolKey("POOL_TIMEOUT", "30",
			"Seconds to wait for a query connection. `ENGINE_OPTIONS.pool_timeout` wins over it.",
			true, func(o *EngineOptions, f field, v any) { o.PoolTimeout = durationOption(f, v, false) }),
		poolKey("POOL_RECYCLE", "unset, 7200 for MySQL/MariaDB",
			"Longest life of a query connection in seconds; 0 or negative means unlimited. `ENGINE_OPTIONS.pool_recycle` wins over it.",
			true, func(o *EngineOptions, f field, v any) { o.PoolRecycle = durationOption(f, v, true) }),
		{
			KeyInfo: KeyInfo{Name: "ENGINE_OPTIONS", Type: "table", Flask: true,
				Doc: "Flask-SQLAlchemy 3.x spelling of the pool settings: `pool_size`, `max_overflow`, `pool_timeout`, `pool_recycle`; wins over the `POOL_*` keys. Other SQLAlchemy engine options are accepted and ignored."},
			set: func(st *state, f field, v any) {
				if m, ok := toTable(f, v, "a table of pool_size, max_overflow, pool_timeout, pool_recycle"); ok {
					st.engine = parseEngineOptions(f, m)
				}
			},
		},
		{
			KeyInfo: KeyInfo{Name: "NAMING_CONVENTION", Type: "table", Default: "subject = " + DefaultSubjectTemplate, Flask: true,
				Doc: "Subject templates in SQLAlchemy's `%(token)s` syntax: `subject` for every phase, optional `before_commit`, `after_commit`, `rollback` overrides, and any other key is a static token of your own."},
			set: setNamingConvention,
		},
		stringKey("NATS_URL", "URL", "",
			"NATS server URL(s), comma-separated. Unset: start an embedded NATS server with JetStream. The bare `NATS_URL` variable counts too, below every other source; `--nats-url=` (empty) starts the embedded server whatever it says.",
			true, secretNATS, func(c *Config) *string { return &c.NATSURL }),
		stringKey("SUBJECT_PREFIX", "string", "trackerd",
			"First subject token(s): dot-separated tokens of letters, digits, `_` and `-`.",
			true, public, func(c *Config) *string { return &c.SubjectPrefix }),
		{
			KeyInfo: KeyInfo{Name: "SIGNALS", Type: "list", Default: "before_commit, after_commit", Flask: true,
				Doc: "Which phases are published: `before_commit`, `after_commit` (at least one)."},
			set: func(st *state, f field, v any) {
				if l, ok := toList(f, v); ok {
					st.c.Signals = l
				}
			},
		},

		enumKey("PUBLISH_MODE", "jetstream",
			"`jetstream`: every publish is acknowledged and checkpoints follow the acks. `core`: plain NATS, at most once.",
			func(c *Config) *string { return &c.PublishMode }),
		intKey("MAX_INFLIGHT", "8192", "Unacknowledged messages per bind before reading pauses.",
			"a whole number from 1 to 1000000", func(c *Config) *int { return &c.MaxInflight }),
		sizeKey("MAX_INFLIGHT_BYTES", "64MiB", "Bytes of unacknowledged messages per bind before reading pauses (one message always goes out, however large).",
			func(c *Config) *int64 { return &c.MaxInflightBytes }),
		enumKey("OVERSIZE_POLICY", "truncate",
			"What to do with an event larger than the server's max_payload: `truncate` it (the sink documents how) or `fail` (the bind stops with an error).",
			func(c *Config) *string { return &c.OversizePolicy }),
		stringKey("STREAM_NAME", "string", "TRACKERD",
			"The JetStream stream, created when missing with subjects `<SUBJECT_PREFIX>.>`.",
			false, public, func(c *Config) *string { return &c.StreamName }),
		durationKey("DUPLICATE_WINDOW", "10m",
			"The stream's de-duplication window: at least 30s (twice the longest a publish waits before it is sent again), so that a publish re-sent after a lost acknowledgement is dropped, not stored twice; minutes are advised, so that a restart's re-sent events are dropped too.",
			func(c *Config) *time.Duration { return &c.DuplicateWindow }),
		durationKey("STREAM_MAX_AGE", "0", "Longest age of a stored event; 0 means unlimited.",
			func(c *Config) *time.Duration { return &c.StreamMaxAge }),
		sizeKey("STREAM_MAX_BYTES", "-1", "Largest size of the stream; -1 means unlimited.",
			func(c *Config) *int64 { return &c.StreamMaxBytes }),
		int64Key("STREAM_MAX_MSGS", "-1", "Most events kept in the stream; -1 means unlimited.",
			"-1 or a whole number above 0", func(c *Config) *int64 { return &c.StreamMaxMsgs }),
		intKey("STREAM_REPLICAS", "1", "Replicas of the stream (and of the checkpoint bucket) in a NATS cluster.",
			"a whole number from 1 to 5", func(c *Config) *int { return &c.StreamReplicas }),
		stringKey("CHECKPOINT_BUCKET", "string", "trackerd_checkpoints",
			"The JetStream key-value bucket of checkpoints: letters, digits, `_` and `-`.",
			false, public, func(c *Config) *string { return &c.CheckpointBucket }),
		durationKey("CHECKPOINT_INTERVAL", "200ms", "How often acknowledged progress is written.",
			func(c *Config) *time.Duration { return &c.CheckpointInterval }),
		stringKey("CHECKPOINT_FILE", "path", "DATA_DIR/"+CheckpointFileName,
			"The checkpoint file used without NATS (library use).",
			false, public, func(c *Config) *string { return &c.CheckpointFile }),
		stringKey("DATA_DIR", "path", "$XDG_DATA_HOME/trackerd, else ~/.local/share/trackerd",
			"trackerd's state directory: spill files, the embedded NATS server (`nats.url`, `nats.auth`), the checkpoint file.",
			false, public, func(c *Config) *string { return &c.DataDir }),
		stringKey("NATS_STORE_DIR", "path", "DATA_DIR/nats",
			"Where the embedded NATS server keeps JetStream data.",
			false, public, func(c *Config) *string { return &c.NATSStoreDir }),
		stringKey("EMBEDDED_NATS_ADDR", "address", "127.0.0.1:4223",
			"Loopback `host:port` the embedded NATS server listens on when `NATS_URL` is unset; port 0 picks a free one. It requires the user and password trackerd keeps in `DATA_DIR/nats.auth` (mode 0600).",
			false, public, func(c *Config) *string { return &c.EmbeddedNATSAddr }),
		intKey("SNAPSHOT_CHUNK", "10000",
			"Rows a snapshot or backfill reads at a time, in one consistent read, held in memory until the stream reaches the read's position; after a crash at most one chunk per snapshot is read again.",
			"a whole number from 1 to 1000000", func(c *Config) *int { return &c.SnapshotChunk }),
		sizeKey("SPILL_THRESHOLD", "16MiB",
			"Bytes of one transaction's changes held in memory before the rest spill to disk.",
			func(c *Config) *int64 { return &c.SpillThreshold }),
		stringKey("HTTP_ADDR", "address", "127.0.0.1:9187",
			"`host:port` of the status page (`/`), `/status.json`, `/healthz`, `/readyz`, `/metrics`, and of the debug endpoints when it is a loopback address (see `DEBUG_ADDR`); port 0 picks a free one, `off` disables it.",
			false, public, func(c *Config) *string { return &c.HTTPAddr }),
		stringKey("DEBUG_ADDR", "address", "HTTP_ADDR if loopback, else 127.0.0.1:0",
			"Loopback `host:port` of `/debug/events` and, with `DEBUG`, `/debug/pprof/` (never its `cmdline`); port 0 picks a free one (logged), `off` serves neither. Unset: on `HTTP_ADDR` when it is loopback, on `127.0.0.1:0` when it is not, nowhere when it is `off`.",
			false, public, func(c *Config) *string { return &c.DebugAddr }),
		enumKey("LOG_FORMAT", "text", "`text` or `json`, to stderr.",
			func(c *Config) *string { return &c.LogFormat }),
		enumKey("LOG_LEVEL", "info", "`debug`, `info`, `warn` (or `warning`) or `error`.",
			func(c *Config) *string { return &c.LogLevel }),
		{
			KeyInfo: KeyInfo{Name: "PROGRESS_INTERVAL", Type: "duration", Default: "60s",
				Doc: "How often `trackerd run` logs each bind's progress at info: events, position, lag; 0 turns it off."},
			set: func(st *state, f field, v any) {
				d, ok := toDuration(f, v, allowedDuration)
				switch {
				case !ok:
				case d < 0:
					f.bad(v, "0 (off) or a positive duration such as 60s", nil)
				default:
					st.c.ProgressInterval = d
				}
			},
		},
		boolKey("DEBUG", "false", "As in Flask; turns `RECORD_QUERIES` on.", false,
			func(c *Config) *bool { return &c.Debug }),
		boolKey("TESTING", "false", "As in Flask; turns `RECORD_QUERIES` on.", false,
			func(c *Config) *bool { return &c.Testing }),
		stringKey("NATS_USER", "string", "", "NATS user name (with `NATS_PASSWORD`). The bare `NATS_CREDS`, `NATS_USER`, `NATS_PASSWORD` and `NATS_TOKEN` variables are read as a group, only with a `NATS_URL` and when no other source sets a NATS credential.",
			false, public, func(c *Config) *string { return &c.NATS.User }),
		stringKey("NATS_PASSWORD", "string", "", "NATS password.",
			false, secretValue, func(c *Config) *string { return &c.NATS.Password }),
		stringKey("NATS_TOKEN", "string", "", "NATS authentication token.",
			false, secretValue, func(c *Config) *string { return &c.NATS.Token }),
		stringKey("NATS_CREDS", "path", "", "NATS credentials file (JWT and nkey seed).",
			false, public, func(c *Config) *string { return &c.NATS.Creds }),
		stringKey("NATS_NKEY", "path", "", "NATS nkey seed file.",
			false, public, func(c *Config) *string { return &c.NATS.NKey }),
		stringKey("NATS_TLS_CERT", "path", "", "Client certificate for NATS TLS (with `NATS_TLS_KEY`).",
			false, public, func(c *Config) *string { return &c.NATS.TLSCert }),
		stringKey("NATS_TLS_KEY", "path", "", "Client key for NATS TLS (with `NATS_TLS_CERT`).",
			false, public, func(c *Config) *string { return &c.NATS.TLSKey }),
		stringKey("NATS_TLS_CA", "path", "", "CA certificates that verify the NATS server.",
			false, public, func(c *Config) *string { return &c.NATS.TLSCA }),
	}
}

// pathKeys are the keys whose value is a file or directory; a leading ~/
// is expanded.
func pathKeys(c *Config) []*string {
	return []*string{&c.CheckpointFile, &c.DataDir, &c.NATSStoreDir, &c.NATS.Creds, &c.NATS.NKey,
		&c.NATS.TLSCert, &c.NATS.TLSKey, &c.NATS.TLSCA}
}

func specByName(specs []keySpec, name string) *keySpec {
	for i := range specs {
		if specs[i].Name == name {
			return &specs[i]
		}
	}
	return nil
}

func keyNames(specs []keySpec) []string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return names
}
