package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// TrackModificationsWarning is logged once per start (once per tracker.New
// in the library) when TRACK_MODIFICATIONS is unset: trackerd then tracks,
// as Flask-SQLAlchemy 2.x did, and says so. See Config.Tracking.
const TrackModificationsWarning = "TRACK_MODIFICATIONS is not set: trackerd is tracking every bind. Set it to true or false to suppress this warning."

// Options says where Load reads configuration from. The zero value loads
// the defaults only.
type Options struct {
	// File is the TOML config file (--config); "" means none.
	File string
	// Flags maps a KEY to its raw value from the command line, as filled by
	// BindFlags. A key present in the map is set, even to "".
	Flags map[string]string
	// LookupEnv reads the environment (os.LookupEnv in a program); nil
	// means an empty environment. It is also asked for XDG_DATA_HOME and
	// HOME, to place DATA_DIR.
	LookupEnv func(string) (string, bool)
	// ReadFile reads File; nil means os.ReadFile.
	ReadFile func(string) ([]byte, error)
}

// Default returns the defaults of every key. DataDir, NATSStoreDir and
// CheckpointFile are left empty: they depend on the environment, and Load
// fills them in (see DefaultDataDir).
func Default() Config {
	return Config{
		NativeUnicode:      true,
		NamingConvention:   map[string]string{"subject": DefaultSubjectTemplate},
		SubjectPrefix:      DefaultSubjectPrefix,
		Signals:            []string{"before_commit", "after_commit"},
		PublishMode:        "jetstream",
		MaxInflight:        DefaultMaxInflight,
		MaxInflightBytes:   DefaultMaxInflightBytes,
		OversizePolicy:     "truncate",
		StreamName:         DefaultStreamName,
		DuplicateWindow:    DefaultDuplicateWindow,
		StreamMaxBytes:     -1,
		StreamMaxMsgs:      -1,
		StreamReplicas:     1,
		CheckpointBucket:   "trackerd_checkpoints",
		CheckpointInterval: DefaultCheckpointInterval,
		EmbeddedNATSAddr:   "127.0.0.1:4223",
		SpillThreshold:     DefaultSpillThreshold,
		SnapshotChunk:      DefaultSnapshotChunk,
		HTTPAddr:           "127.0.0.1:9187",
		LogFormat:          "text",
		LogLevel:           "info",
		ProgressInterval:   time.Minute,
	}
}

// DefaultDataDir returns DATA_DIR's default: $XDG_DATA_HOME/trackerd when
// XDG_DATA_HOME is an absolute path, else $HOME/.local/share/trackerd, else
// "" (neither is known).
func DefaultDataDir(lookupEnv func(string) (string, bool)) string {
	if xdg := getenv(lookupEnv, "XDG_DATA_HOME"); filepath.IsAbs(xdg) {
		return filepath.Join(xdg, "trackerd")
	}
	if home := getenv(lookupEnv, "HOME"); home != "" {
		return filepath.Join(home, ".local", "share", "trackerd")
	}
	return ""
}

func getenv(lookupEnv func(string) (string, bool), name string) string {
	if lookupEnv == nil {
		return ""
	}
	v, _ := lookupEnv(name)
	return v
}

// Load builds the configuration from, strongest first, o.Flags, the
// environment (TRACKER_<KEY>, SQLALCHEMY_<KEY>, then Flask's
// FLASK_SQLALCHEMY_<KEY>; an empty variable is unset), o.File, the bare
// variables of the NATS tools (NATS_URL, NATS_CREDS, NATS_USER,
// NATS_PASSWORD, NATS_TOKEN; see bareNATS) and the defaults, and validates
// it.
//
// Each key takes its whole value from the strongest source that sets it:
// tables such as BINDS are not merged across sources, and only that value
// is parsed. Then ENGINE_OPTIONS' settings win over POOL_SIZE,
// MAX_OVERFLOW, POOL_TIMEOUT and POOL_RECYCLE (as in Flask-SQLAlchemy),
// whatever their sources, and the merged result is Config.Engine.
//
// A FLASK_SQLALCHEMY_ value is read as Flask's from_prefixed_env reads it:
// a JSON string literal ("\"...\"") is unquoted and null means unset; other
// JSON (numbers, booleans, objects, arrays) is what trackerd reads anyway.
// Flask's nested FLASK_SQLALCHEMY_<KEY>__<name> variables are not read.
//
// File keys that are not trackerd's are skipped (Config.SkippedKeys), unless
// they look like a mistake for one of trackerd's keys (see readFile);
// unknown TRACKER_* variables are ignored, since the environment is
// shared. The error, if any, joins one *FieldError per problem, and the
// Config is nil. Database URIs are only checked for type here:
// binds.FromConfig parses them.
func Load(o Options) (*Config, error) {
	c := Default()
	c.sources = make(map[string]string)
	c.file = o.File
	st := &state{c: &c}
	var p problems
	specs := specs()

	file := readFile(o, keyNames(specs), &p, &c.skipped)
	for _, k := range sortedKeys(o.Flags) {
		if specByName(specs, k) == nil {
			unknownKey(field{key: k, source: "flag --" + flagName(k), p: &p}, keyNames(specs), false)
		}
	}
	for i := range specs {
		s := &specs[i]
		v, source, ok := lookup(o, s.KeyInfo, file)
		if !ok {
			continue
		}
		c.sources[s.Name] = source
		s.set(st, field{key: s.Name, source: source, secret: s.secret, p: &p}, v)
	}
	bareNATS(o, st, specs, &p)
	if c.DatabaseURI == "" && c.Binds == nil {
		if v := getenv(o.LookupEnv, "DATABASE_URL"); v != "" {
			c.databaseURLSet = true
		}
	}
	finish(st, o.LookupEnv)
	p.list = append(p.list, c.validate()...)
	if err := p.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// lookup finds a key's strongest value and names its source; the bare
// NATS variables are bareNATS's.
func lookup(o Options, k KeyInfo, file map[string]fileValue) (any, string, bool) {
	if v, ok := o.Flags[k.Name]; ok {
		return v, "flag --" + k.Flag(), true
	}
	if o.LookupEnv != nil {
		for _, name := range k.EnvNames() {
			v, ok := o.LookupEnv(name)
			if !ok || v == "" {
				continue
			}
			if strings.HasPrefix(name, "FLASK_") {
				var ok bool
				if v, ok = flaskEnvValue(v); !ok {
					continue
				}
			}
			return v, "env " + name, true
		}
	}
	if fv, ok := file[k.Name]; ok {
		return fv.v, fv.source, true
	}
	return nil, "", false
}

// flaskEnvValue reads a FLASK_ variable as Flask's from_prefixed_env does
// (json.loads, else the text): a JSON string literal is unquoted, and null
// is None, which Flask-SQLAlchemy takes as unset (ok false).
func flaskEnvValue(v string) (string, bool) {
	t := strings.TrimSpace(v)
	switch {
	case t == "null":
		return "", false
	case strings.HasPrefix(t, `"`):
		var s string
		if err := json.Unmarshal([]byte(t), &s); err == nil {
			return s, s != ""
		}
	}
	return v, true
}

// bareNATSKeys are the keys also read from the NATS tools' own variables
// (natscli, nats.go examples, nats-server docs), named as the keys are.
var bareNATSKeys = []string{"NATS_URL", "NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN"}

// natsCredentialKeys are the keys that say how to authenticate to NATS.
var natsCredentialKeys = []string{"NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY"}

// bareNATS reads the bare NATS_URL, NATS_CREDS, NATS_USER, NATS_PASSWORD
// and NATS_TOKEN variables at the lowest precedence: a key set by a flag,
// TRACKER_, SQLALCHEMY_, FLASK_SQLALCHEMY_ or the file keeps that value.
// The credentials come as a group and only for a NATS_URL: they are read
// when NATS_URL is set (anywhere) and no stronger source sets any NATS
// credential, so that a shell's NATS_USER never joins a token from the
// config file, and the embedded server (no NATS_URL) is never sent them.
func bareNATS(o Options, st *state, specs []keySpec, p *problems) {
	c := st.c
	read := func(name string) {
		v := getenv(o.LookupEnv, name)
		if v == "" {
			return
		}
		s := specByName(specs, name)
		c.sources[name] = "env " + name
		s.set(st, field{key: name, source: "env " + name, secret: s.secret, p: p}, v)
	}
	if _, set := c.sources["NATS_URL"]; !set {
		read("NATS_URL")
	}
	if c.NATSURL == "" {
		return
	}
	for _, k := range natsCredentialKeys {
		if _, set := c.sources[k]; set {
			return
		}
	}
	for _, k := range bareNATSKeys[1:] {
		read(k)
	}
}

type fileValue struct {
	v      any
	source string
}

// readFile reads and decodes o.File into canonical key -> value. Keys may
// carry the SQLALCHEMY_ prefix and any case. A key that is not trackerd's is
// skipped (see Config.SkippedKeys), so that a Flask application's config
// file loads as it is, unless it looks like a mistake for one of trackerd's:
// a SQLALCHEMY_ or TRACKER_ prefix on a key trackerd does not know, or a
// small edit distance to a key it knows. Those are problems, with a
// suggestion where there is one.
func readFile(o Options, known []string, p *problems, skipped *[]string) map[string]fileValue {
	if o.File == "" {
		return nil
	}
	source := "file " + o.File
	read := o.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	data, err := read(o.File)
	if err != nil {
		p.add(&FieldError{Source: source, Err: err})
		return nil
	}
	var raw map[string]any
	if err := toml.Unmarshal(data, &raw); err != nil {
		p.add(&FieldError{Source: source, Err: tomlProblem(err)})
		return nil
	}
	out := make(map[string]fileValue, len(raw))
	spelled := make(map[string]string, len(raw))
	for _, k := range sortedKeys(raw) {
		canon := strings.ToUpper(k)
		rest, flask := strings.CutPrefix(canon, "SQLALCHEMY_")
		if flask {
			canon = rest
		}
		if !slices.Contains(known, canon) {
			if err := foreignKey(k, canon, flask, known); err != nil {
				p.add(&FieldError{Key: k, Source: source, Err: err})
			} else {
				*skipped = append(*skipped, k)
			}
			continue
		}
		if first, dup := spelled[canon]; dup {
			p.add(&FieldError{Key: canon, Source: source,
				Err: fmt.Errorf("set twice in the file, as %s and %s", first, k)})
			continue
		}
		spelled[canon] = k
		out[canon] = fileValue{v: raw[k], source: source}
	}
	return out
}

// ignoredFlaskKeys are Flask-SQLAlchemy keys that mean nothing to trackerd
// (without their SQLALCHEMY_ prefix); a Flask config file may hold them.
var ignoredFlaskKeys = []string{"COMMIT_ON_TEARDOWN"}

// foreignKey decides about a file key that is not trackerd's: nil to skip
// it, or an error wrapping ErrUnknownKey when it looks meant for trackerd.
// key is the key as written, canon its upper-case form without
// SQLALCHEMY_, flask whether it had that prefix.
func foreignKey(key, canon string, flask bool, known []string) error {
	if flask && slices.Contains(ignoredFlaskKeys, canon) {
		return nil
	}
	if rest, ok := strings.CutPrefix(canon, "TRACKER_"); ok {
		if slices.Contains(known, rest) {
			return fmt.Errorf("%w; did you mean %q? (the file takes keys without TRACKER_)", ErrUnknownKey, rest)
		}
		canon, flask = rest, true // meant for trackerd all the same
	}
	// Two edits at most: three would take Flask-Mail's MAIL_PASSWORD for
	// NATS_PASSWORD.
	if s := suggestWithin(canon, known, 2); s != "" {
		return fmt.Errorf("%w; did you mean %q?", ErrUnknownKey, s)
	}
	if flask {
		return fmt.Errorf("%w: %s is not a trackerd key, and its prefix says it is meant for one (the keys are listed in the README and by `trackerd run -h`); if it is your application's own, give trackerd a file without it", ErrUnknownKey, key)
	}
	return nil
}

// tomlProblem reports a TOML syntax error by line and column. The parser's
// message may quote the text it choked on (an unquoted password, say), so
// quoted fragments longer than a character are cut out.
func tomlProblem(err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return errors.New("not valid TOML")
	}
	quoted := regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'[^']*'`)
	msg := quoted.ReplaceAllStringFunc(pe.Message, func(q string) string {
		if len(q) <= 4 { // "x" or '\n'
			return q
		}
		return "(text)"
	})
	return fmt.Errorf("not valid TOML: line %d, column %d: %s", pe.Position.Line, pe.Position.Col, msg)
}

// finish applies the rules that need every key: the pool merge, the
// derived paths and the default subject template.
func finish(st *state, lookupEnv func(string) (string, bool)) {
	c := st.c
	c.Engine = mergeEngineOptions(st.pool, st.engine)
	if c.LogLevel == "warning" {
		c.LogLevel = "warn"
	}
	if strings.EqualFold(c.HTTPAddr, "off") {
		c.HTTPAddr = "off"
	}
	if strings.EqualFold(c.DebugAddr, "off") {
		c.DebugAddr = "off"
	}

	home := getenv(lookupEnv, "HOME")
	for _, p := range pathKeys(c) {
		*p = expandHome(*p, home)
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir(lookupEnv)
	}
	if c.DataDir != "" {
		if c.NATSStoreDir == "" {
			c.NATSStoreDir = filepath.Join(c.DataDir, "nats")
		}
		if c.CheckpointFile == "" {
			c.CheckpointFile = c.CheckpointPath()
		}
	}
	if c.NamingConvention == nil {
		c.NamingConvention = make(map[string]string, 1)
	}
	if _, ok := c.NamingConvention["subject"]; !ok {
		c.NamingConvention["subject"] = DefaultSubjectTemplate
	}
}

// expandHome replaces a leading ~ or ~/ with home, when home is known.
func expandHome(p, home string) string {
	if home == "" {
		return p
	}
	if p == "~" {
		return home
	}
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return filepath.Join(home, rest)
	}
	return p
}
