package config

import (
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
		SubjectPrefix:      "trackerd",
		Signals:            []string{"before_commit", "after_commit"},
		PublishMode:        "jetstream",
		MaxInflight:        8192,
		OversizePolicy:     "truncate",
		StreamName:         "TRACKERD",
		DuplicateWindow:    10 * time.Minute,
		StreamMaxBytes:     -1,
		StreamMaxMsgs:      -1,
		StreamReplicas:     1,
		CheckpointBucket:   "trackerd_checkpoints",
		CheckpointInterval: 200 * time.Millisecond,
		EmbeddedNATSAddr:   "127.0.0.1:4223",
		SpillThreshold:     16 << 20,
		HTTPAddr:           "127.0.0.1:9187",
		LogFormat:          "text",
		LogLevel:           "info",
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
// environment (TRACKER_<KEY>, then SQLALCHEMY_<KEY>; an empty variable is
// unset), o.File and the defaults, and validates it.
//
// Each key takes its whole value from the strongest source that sets it:
// tables such as BINDS are not merged across sources, and only that value
// is parsed. Then ENGINE_OPTIONS' settings win over POOL_SIZE,
// MAX_OVERFLOW, POOL_TIMEOUT and POOL_RECYCLE (as in Flask-SQLAlchemy),
// whatever their sources, and the merged result is Config.Engine.
//
// Unknown keys in the file are errors; unknown TRACKER_* variables are
// ignored, since the environment is shared. The error, if any, joins one
// *FieldError per problem, and the Config is nil. Database URIs are only
// checked for type here: binds.FromConfig parses them.
func Load(o Options) (*Config, error) {
	c := Default()
	c.sources = make(map[string]string)
	st := &state{c: &c}
	var p problems
	specs := specs()

	file := readFile(o, keyNames(specs), &p)
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
	finish(st, o.LookupEnv)
	p.list = append(p.list, c.validate()...)
	if err := p.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// lookup finds a key's strongest value and names its source.
func lookup(o Options, k KeyInfo, file map[string]fileValue) (any, string, bool) {
	if v, ok := o.Flags[k.Name]; ok {
		return v, "flag --" + k.Flag(), true
	}
	if o.LookupEnv != nil {
		for _, name := range k.EnvNames() {
			if v, ok := o.LookupEnv(name); ok && v != "" {
				return v, "env " + name, true
			}
		}
	}
	if fv, ok := file[k.Name]; ok {
		return fv.v, fv.source, true
	}
	return nil, "", false
}

type fileValue struct {
	v      any
	source string
}

// readFile reads and decodes o.File into canonical key -> value. Keys may
// carry the SQLALCHEMY_ prefix and any case; unknown keys are problems.
func readFile(o Options, known []string, p *problems) map[string]fileValue {
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
		if rest, ok := strings.CutPrefix(canon, "SQLALCHEMY_"); ok {
			canon = rest
		}
		f := field{key: k, source: source, p: p}
		if !slices.Contains(known, canon) {
			if rest, ok := strings.CutPrefix(canon, "TRACKER_"); ok && slices.Contains(known, rest) {
				p.add(&FieldError{Key: k, Source: source,
					Err: fmt.Errorf("%w; did you mean %q? (the file takes keys without TRACKER_)", ErrUnknownKey, rest)})
				continue
			}
			unknownKey(f, known, false)
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
			c.CheckpointFile = filepath.Join(c.DataDir, "checkpoints.json")
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
