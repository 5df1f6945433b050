package config

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config is trackerd's whole configuration, after defaults, file, environment
// and flags have been applied. Field comments name the key (without its
// TRACKER_ or SQLALCHEMY_ prefix) and the default.
//
// Tri-state keys are pointers: nil means the key was not set, which for
// TRACK_MODIFICATIONS differs from false (the README, "Configuration").
type Config struct {
	// DatabaseURI is DATABASE_URI: the default bind (key "default").
	DatabaseURI string
	// Binds is BINDS: more binds by key.
	Binds map[string]BindConfig

	// TrackModifications is TRACK_MODIFICATIONS; nil when unset.
	TrackModifications *bool
	// Echo is ECHO: log every decoded change and published event.
	Echo bool
	// RecordQueries is RECORD_QUERIES; nil when unset (then Debug || Testing).
	RecordQueries *bool
	// NativeUnicode is NATIVE_UNICODE, default true.
	NativeUnicode bool

	// Engine holds POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT, POOL_RECYCLE and
	// their ENGINE_OPTIONS spelling, for every bind that does not set its own.
	Engine EngineOptions

	// NamingConvention is NAMING_CONVENTION: "subject" (all phases),
	// optional per-phase overrides "before_commit", "after_commit",
	// "rollback", and any other key is a user-defined static token.
	NamingConvention map[string]string

	// NATSURL is NATS_URL; empty starts an embedded server.
	NATSURL string
	// EmbeddedNATSAddr is EMBEDDED_NATS_ADDR, default "127.0.0.1:4223": the
	// host:port the embedded NATS server listens on when NATS_URL is unset;
	// port 0 picks a free one.
	EmbeddedNATSAddr string
	// NATS holds NATS credentials and TLS (NATS_USER, NATS_PASSWORD,
	// NATS_TOKEN, NATS_CREDS, NATS_NKEY, NATS_TLS_CERT, NATS_TLS_KEY, NATS_TLS_CA).
	NATS NATSAuth
	// SubjectPrefix is SUBJECT_PREFIX, default "trackerd".
	SubjectPrefix string
	// Signals is SIGNALS, default ["before_commit", "after_commit"].
	Signals []string
	// PublishMode is PUBLISH_MODE: "jetstream" (default) or "core"
	// (at-most-once, no acks).
	PublishMode string
	// MaxInflight is MAX_INFLIGHT, default 8192: unacknowledged messages per bind.
	MaxInflight int
	// MaxInflightBytes is MAX_INFLIGHT_BYTES, default 64 MiB: bytes of
	// unacknowledged messages per bind (one message is always let in).
	MaxInflightBytes int64
	// OversizePolicy is OVERSIZE_POLICY: what to do with an event larger than
	// the server's max_payload. "truncate" (default) or "fail".
	OversizePolicy string

	// StreamName is STREAM_NAME, default "TRACKERD".
	StreamName string
	// DuplicateWindow is DUPLICATE_WINDOW, default 10m.
	DuplicateWindow time.Duration
	// StreamMaxAge, StreamMaxBytes, StreamMaxMsgs, StreamReplicas are
	// STREAM_MAX_AGE (0 = unlimited), STREAM_MAX_BYTES (-1 = unlimited),
	// STREAM_MAX_MSGS (-1 = unlimited), STREAM_REPLICAS (default 1).
	StreamMaxAge   time.Duration
	StreamMaxBytes int64
	StreamMaxMsgs  int64
	StreamReplicas int
	// CheckpointBucket is CHECKPOINT_BUCKET, default "trackerd_checkpoints".
	CheckpointBucket string
	// CheckpointInterval is CHECKPOINT_INTERVAL, default 200ms: how often
	// acknowledged progress is written.
	CheckpointInterval time.Duration
	// CheckpointFile is CHECKPOINT_FILE: the checkpoint file used when there
	// is no NATS (library use). Default: checkpoints.json in DataDir.
	CheckpointFile string
	// DataDir is DATA_DIR: trackerd's state directory (spill files, embedded
	// NATS, checkpoint file). Default: $XDG_DATA_HOME/trackerd or
	// ~/.local/share/trackerd.
	DataDir string
	// NATSStoreDir is NATS_STORE_DIR: the embedded server's JetStream data.
	// Default: DataDir/nats.
	NATSStoreDir string
	// SnapshotChunk is SNAPSHOT_CHUNK, default 10000: rows a snapshot
	// reads at a time.
	SnapshotChunk int
	// SpillThreshold is SPILL_THRESHOLD, default 16 MiB: bytes of one
	// transaction's changes held in memory before the rest spill to disk.
	SpillThreshold int64

	// HTTPAddr is HTTP_ADDR, default "127.0.0.1:9187"; "off" disables it.
	HTTPAddr string
	// DebugAddr is DEBUG_ADDR: the loopback host:port of /debug/events and
	// /debug/pprof/; "off" serves neither. Empty: on HTTPAddr when it is
	// loopback, else on 127.0.0.1:0 (none when HTTPAddr is "off").
	DebugAddr string
	// LogFormat is LOG_FORMAT: "text" (default) or "json".
	LogFormat string
	// LogLevel is LOG_LEVEL: "debug", "info" (default), "warn", "error".
	LogLevel string
	// ProgressInterval is PROGRESS_INTERVAL, default 60s: how often
	// `trackerd run` logs each bind's progress at info; 0 turns it off.
	ProgressInterval time.Duration
	// Debug and Testing are DEBUG and TESTING, as in Flask.
	Debug   bool
	Testing bool

	// sources maps a key to where Load found it ("env TRACKER_ECHO"); nil
	// for a Config built in code. See SourceOf.
	sources map[string]string
	// file is the config file Load read ("" for none).
	file string
	// skipped are the file's keys that are not trackerd's, as written.
	skipped []string
	// databaseURLSet is true when neither DATABASE_URI nor BINDS is set
	// and the environment has DATABASE_URL (Heroku's spelling).
	databaseURLSet bool
}

// BindConfig is one entry of BINDS.
type BindConfig struct {
	// URI is the bind's SQLAlchemy URL.
	URI string
	// Tables limits tracking to these tables ("schema.table" or "table").
	Tables []string
	// ExcludeTables are never tracked.
	ExcludeTables []string
	// Track is false to configure a bind without following it; nil = true.
	Track *bool
	// Slot and Publication name the PostgreSQL replication slot and
	// publication; empty derives them from the database and bind key.
	Slot        string
	Publication string
	// Streaming asks PostgreSQL (14+) to stream large in-progress
	// transactions, so before_commit events go out before the commit.
	Streaming bool
	// ServerID is the MySQL/MariaDB replica server_id of the reader; 0
	// derives a stable one from the bind key.
	ServerID uint32
	// Heartbeat is how often an idle PostgreSQL bind writes a logical
	// heartbeat message (0 = default 10s, negative = off).
	Heartbeat time.Duration
	// Snapshot is the bind's snapshot mode: "never" (or empty), "initial"
	// or "when_needed" (see the README's "Snapshots and backfills").
	Snapshot string
	// Engine holds per-bind pool settings (ENGINE_OPTIONS spelling).
	Engine EngineOptions
}

// EngineOptions are the query-pool settings of a bind. Nil fields are unset
// and fall back to the dialect's default (see DefaultEngineOptions).
type EngineOptions struct {
	PoolSize    *int
	MaxOverflow *int
	PoolTimeout *time.Duration
	// PoolRecycle is the longest life of a query connection; nil = the
	// dialect default (7200 s for MySQL/MariaDB, unlimited otherwise).
	PoolRecycle *time.Duration
}

// NATSAuth holds the NATS connection's credentials and TLS files. Secret
// fields are never logged.
type NATSAuth struct {
	User     string
	Password string
	Token    string
	Creds    string
	NKey     string
	TLSCert  string
	TLSKey   string
	TLSCA    string
}

// Tracking reports whether binds are followed: TRACK_MODIFICATIONS true or
// unset. When it is unset the caller logs TrackModificationsWarning once.
func (c *Config) Tracking() bool {
	return c.TrackModifications == nil || *c.TrackModifications
}

// RecordQueriesEnabled reports whether recent events are recorded:
// RECORD_QUERIES when set (an explicit false wins over DEBUG, unlike
// Flask-SQLAlchemy 2.x's code but as its documentation promises), else
// DEBUG or TESTING.
func (c *Config) RecordQueriesEnabled() bool {
	if c.RecordQueries != nil {
		return *c.RecordQueries
	}
	return c.Debug || c.Testing
}

// SourceOf says where Load found a key's value: "file trackerd.toml",
// "env TRACKER_ECHO", "flag --echo", or "default". A path into a table
// ("BINDS.orders.slot") has its top-level key's source. It returns "" for a
// Config not made by Load. Packages that check values later (binds) use it
// to build a FieldError's Source.
func (c *Config) SourceOf(key string) string {
	if c.sources == nil {
		return ""
	}
	top, _, _ := strings.Cut(key, ".")
	if s, ok := c.sources[top]; ok {
		return s
	}
	return "default"
}

// SkippedKeys returns the config file's keys that Load skipped because
// they are not trackerd's (a Flask application's SECRET_KEY, say), as
// written in the file, sorted; the caller logs them at debug level.
func (c *Config) SkippedKeys() []string { return slices.Clone(c.skipped) }

// LookedFor says where Load looked for the given keys, strongest first, for
// messages about a key that is not set: "flag --nats-url, env
// TRACKER_NATS_URL, SQLALCHEMY_NATS_URL, FLASK_SQLALCHEMY_NATS_URL, file
// trackerd.toml, env NATS_URL". It returns "" for a Config not made by
// Load.
func (c *Config) LookedFor(keys ...string) string {
	if c.sources == nil {
		return ""
	}
	var flags, env, bare []string
	for _, key := range keys {
		k := KeyInfo{Name: key}
		flags = append(flags, "--"+k.Flag())
		env = append(env, k.EnvNames()...)
		if slices.Contains(bareNATSKeys, key) {
			bare = append(bare, key)
		}
	}
	out := "flag " + strings.Join(flags, ", ") + "; env " + strings.Join(env, ", ") + "; "
	if c.file == "" {
		out += "no --config file"
	} else {
		out += "file " + c.file
	}
	if len(bare) > 0 {
		out += "; env " + strings.Join(bare, ", ")
	}
	return out
}

// ErrNoBinds is wrapped by the error of a configuration with no bind: see
// NoBindsError.
var ErrNoBinds = errors.New("set DATABASE_URI or BINDS")

// NoBindsError is the error for a configuration without DATABASE_URI and
// BINDS: it wraps ErrNoBinds and says where Load looked, and that
// DATABASE_URL is not read when the environment has it.
func (c *Config) NoBindsError() *FieldError {
	e := &FieldError{Key: "DATABASE_URI", Err: ErrNoBinds}
	var more []string
	if where := c.LookedFor("DATABASE_URI", "BINDS"); where != "" {
		more = append(more, "neither is set (looked at "+where+")")
	}
	if c.databaseURLSet {
		more = append(more, `DATABASE_URL is set, but trackerd reads DATABASE_URI: set TRACKER_DATABASE_URI="$DATABASE_URL"`)
	}
	if len(more) > 0 {
		e.Err = fmt.Errorf("%w: %s", ErrNoBinds, strings.Join(more, "; "))
	}
	return e
}

// TrackingDisabled returns the line to log (at WARN) when
// TRACK_MODIFICATIONS is false: where the value came from and how to
// override it. A Flask application often sets it false to silence
// Flask-SQLAlchemy, so its environment can stop trackerd unawares.
func (c *Config) TrackingDisabled() string {
	src := c.SourceOf("TRACK_MODIFICATIONS")
	msg := "TRACK_MODIFICATIONS is false"
	if src != "" {
		msg += " (" + src + ")"
	}
	msg += ": tracking is disabled and no bind is followed"
	switch {
	case strings.HasPrefix(src, "flag "):
		msg += "; to track, drop --track-modifications=false"
	case src == "env TRACKER_TRACK_MODIFICATIONS":
		msg += "; to track, set TRACKER_TRACK_MODIFICATIONS=true or pass --track-modifications"
	default:
		msg += "; to track whatever the application's own setting, set TRACKER_TRACK_MODIFICATIONS=true (it wins over SQLALCHEMY_ and FLASK_SQLALCHEMY_ variables and the config file) or pass --track-modifications"
	}
	return msg
}

// UserTokens returns NAMING_CONVENTION's user-defined static tokens: every
// key but "subject", "before_commit", "after_commit" and "rollback", with
// its value (which a renderer escapes like any token value).
func (c *Config) UserTokens() map[string]string {
	out := make(map[string]string)
	for k, v := range c.NamingConvention {
		if !slices.Contains(templateKeys, k) {
			out[k] = v
		}
	}
	return out
}

// SubjectTemplate returns the parsed subject template of a phase
// ("before_commit", "after_commit" or "rollback"): NAMING_CONVENTION's
// entry for the phase if there is one, else its "subject", else
// DefaultSubjectTemplate.
func (c *Config) SubjectTemplate(phase string) (Template, error) {
	src, ok := c.NamingConvention[phase]
	if !ok || !slices.Contains(templateKeys[1:], phase) {
		src, ok = c.NamingConvention["subject"]
	}
	if !ok {
		src = DefaultSubjectTemplate
	}
	t, err := ParseTemplate(src, slices.Sorted(maps.Keys(c.UserTokens())))
	if err != nil {
		return Template{}, &FieldError{Key: "NAMING_CONVENTION." + phase, Value: src,
			Source: c.SourceOf("NAMING_CONVENTION"), Err: err}
	}
	return t, nil
}

// DefaultBind is the key of DATABASE_URI's bind. A BINDS entry of this key
// without a URI holds that bind's options.
const DefaultBind = "default"

// The defaults of the NATS sink's keys, defined here once: Default uses
// them, and sinks/nats and changefeed apply them to options left zero.
const (
	// DefaultSubjectPrefix is SUBJECT_PREFIX's default.
	DefaultSubjectPrefix = "trackerd"
	// DefaultStreamName is STREAM_NAME's default.
	DefaultStreamName = "TRACKERD"
	// DefaultDuplicateWindow is DUPLICATE_WINDOW's default.
	DefaultDuplicateWindow = 10 * time.Minute
	// DefaultMaxInflight is MAX_INFLIGHT's default.
	DefaultMaxInflight = 8192
	// DefaultMaxInflightBytes is MAX_INFLIGHT_BYTES' default, 64 MiB.
	DefaultMaxInflightBytes = 64 << 20
	// DefaultAckTimeout is how long a JetStream publish waits for its
	// acknowledgement before it counts as failed and is sent again (not a
	// key: sinks/nats's Options.AckTimeout).
	DefaultAckTimeout = 5 * time.Second
)

// The defaults of the tracker's keys, defined here once: Default uses
// them, and the tracker applies them to a Config built in code that
// leaves the keys zero.
const (
	// DefaultCheckpointInterval is CHECKPOINT_INTERVAL's default.
	DefaultCheckpointInterval = 200 * time.Millisecond
	// DefaultSnapshotChunk is SNAPSHOT_CHUNK's default.
	DefaultSnapshotChunk = 10000
	// DefaultSpillThreshold is SPILL_THRESHOLD's default, 16 MiB.
	DefaultSpillThreshold int64 = 16 << 20
	// CheckpointFileName is the checkpoint file's name in DATA_DIR, where
	// CHECKPOINT_FILE is by default (see Config.CheckpointPath).
	CheckpointFileName = "checkpoints.json"
)

// The re-send horizon of a JetStream publish: the sink waits
// DefaultAckTimeout for an acknowledgement, as long again for the messages
// in flight to settle, and up to its longest back-off before it sends the
// message again. A test in sinks/nats keeps these in step.
const (
	publishMaxBackoff = 5 * time.Second
	maxResendDelay    = 2*DefaultAckTimeout + publishMaxBackoff
	resendDelayParts  = "5s acknowledgement timeout, 5s for the messages in flight to settle, up to 5s of back-off"
)

// MinDuplicateWindow is the shortest DUPLICATE_WINDOW accepted: twice the
// longest delay before a publish whose acknowledgement was lost is sent
// again, so that the re-send is dropped as a duplicate instead of stored
// twice.
const MinDuplicateWindow = 2 * maxResendDelay

// Warnings returns advice about values that are allowed but unwise, for
// the caller to log at start-up (config has no logger): a DUPLICATE_WINDOW
// under two minutes. TrackModificationsWarning is separate (see Tracking).
func (c *Config) Warnings() []string {
	var w []string
	if c.DuplicateWindow < 2*time.Minute {
		w = append(w, "DUPLICATE_WINDOW is "+c.DuplicateWindow.String()+
			": events re-sent after a restart that takes longer are stored twice; minutes are advised")
	}
	return w
}

// Validate checks every value of a Config, as Load does after reading
// them: use it on a Config built in code. It returns all problems at once,
// joined, each a *FieldError.
func (c *Config) Validate() error {
	return errors.Join(c.validate()...)
}

// CheckpointPath returns the checkpoint file: CHECKPOINT_FILE, or
// CheckpointFileName in DATA_DIR when it is unset (as Load fills it in; a
// Config built in code may leave it empty).
func (c *Config) CheckpointPath() string {
	if c.CheckpointFile != "" {
		return c.CheckpointFile
	}
	return filepath.Join(c.DataDir, CheckpointFileName)
}
