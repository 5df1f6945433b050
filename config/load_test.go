package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// input is one set of configuration sources for Load.
type input struct {
	env   map[string]string
	flags map[string]string
	file  string // TOML text; "" means no file
}

func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

const testFile = "cfg.toml"

func (in input) options() Options {
	o := Options{Flags: in.flags, LookupEnv: mapEnv(in.env)}
	if in.file != "" {
		o.File = testFile
		o.ReadFile = func(name string) ([]byte, error) {
			if name != testFile {
				return nil, fmt.Errorf("unexpected file %q", name)
			}
			return []byte(in.file), nil
		}
	}
	return o
}

// fieldErrors flattens Load's joined error.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v (%T) is not a *FieldError", e, e)
		}
		out = append(out, fe)
	}
	walk(err)
	return out
}

func env(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// wantErr describes the FieldError a case must produce.
type wantErr struct {
	key, source, value string
	noValue            bool   // Value must be empty
	says               string // substring of the whole message
	hidden             string // must appear in no message
	is                 error
}

type keyCase struct {
	name  string
	in    input
	check func(c *Config) string // "" when fine, else what is wrong
	err   *wantErr
}

func keyCases() []keyCase {
	d := func(s string) time.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			panic(err)
		}
		return v
	}
	fileSrc := "file " + testFile
	return []keyCase{
		// DATABASE_URI
		{name: "DATABASE_URI from env", in: input{env: env("TRACKER_DATABASE_URI", "postgresql://u:pw@h/db")},
			check: func(c *Config) string { return eq(c.DatabaseURI, "postgresql://u:pw@h/db") }},
		{name: "DATABASE_URI with SQLALCHEMY_ prefix in file", in: input{file: `SQLALCHEMY_DATABASE_URI = "mysql://root@h/db"`},
			check: func(c *Config) string { return eq(c.DatabaseURI, "mysql://root@h/db") }},
		{name: "DATABASE_URI not a string", in: input{file: "DATABASE_URI = 5"},
			err: &wantErr{key: "DATABASE_URI", source: fileSrc, value: "5", says: "want a string"}},
		{name: "DATABASE_URI table hides nothing it should not show", in: input{file: "[DATABASE_URI]\nx = \"postgresql://u:hunter22@h\""},
			err: &wantErr{key: "DATABASE_URI", source: fileSrc, noValue: true, says: "got a table", hidden: "hunter22"}},

		// BINDS
		{name: "BINDS as JSON from env", in: input{env: env("SQLALCHEMY_BINDS",
			`{"a": "postgresql://h/a", "b": {"url": "mysql://h/b", "tables": ["x", "s.y"], "exclude_tables": "z", "track": "no",
			  "slot": "s", "publication": "p", "server_id": 7, "streaming": true, "heartbeat": "5s", "snapshot": "initial",
			  "engine_options": {"pool_size": 3, "pool_pre_ping": true}, "max_overflow": 4, "pool_recycle": 60}}`)},
			check: func(c *Config) string {
				want := map[string]BindConfig{
					"a": {URI: "postgresql://h/a"},
					"b": {URI: "mysql://h/b", Tables: []string{"x", "s.y"}, ExcludeTables: []string{"z"}, Track: ptr(false),
						Slot: "s", Publication: "p", ServerID: 7, Streaming: true, Heartbeat: 5 * time.Second, Snapshot: "initial",
						Engine: EngineOptions{PoolSize: ptr(3), MaxOverflow: ptr(4), PoolRecycle: ptr(time.Minute)}},
				}
				return deepEq(c.Binds, want)
			}},
		{name: "BINDS as TOML tables", in: input{file: `
[BINDS]
users = "postgresql://h/users"
[BINDS.orders]
uri = "postgresql://h/orders"
tables = ["public.orders"]
pool_size = 2
heartbeat = -1
`},
			check: func(c *Config) string {
				return deepEq(c.Binds, map[string]BindConfig{
					"users":  {URI: "postgresql://h/users"},
					"orders": {URI: "postgresql://h/orders", Tables: []string{"public.orders"}, Heartbeat: -time.Second, Engine: EngineOptions{PoolSize: ptr(2)}},
				})
			}},
		{name: "BINDS bad JSON hides the text", in: input{env: env("TRACKER_BINDS", `{"a": "postgresql://u:hunter22@h/db",}`)},
			err: &wantErr{key: "BINDS", source: "env TRACKER_BINDS", noValue: true, says: "syntax error at byte", hidden: "hunter22"}},
		{name: "BINDS unknown key in a bind", in: input{file: "[BINDS.orders]\nuri = \"postgresql://h/o\"\ntabels = [\"x\"]"},
			err: &wantErr{key: "BINDS.orders.tabels", source: fileSrc, says: `did you mean "tables"?`, is: ErrUnknownKey}},
		{name: "BINDS bad track", in: input{file: "[BINDS.orders]\nuri = \"postgresql://h/o\"\ntrack = \"maybe\""},
			err: &wantErr{key: "BINDS.orders.track", source: fileSrc, value: "maybe", says: "want true or false"}},
		{name: "BINDS bad snapshot", in: input{file: "[BINDS.orders]\nuri = \"postgresql://h/o\"\nsnapshot = \"always\""},
			err: &wantErr{key: "BINDS.orders.snapshot", source: fileSrc, value: "always", says: `want one of "never", "initial", "when_needed"`}},
		{name: "BINDS missing uri", in: input{file: "[BINDS.orders]\ntables = [\"x\"]"},
			err: &wantErr{key: "BINDS.orders.uri", source: fileSrc, says: "missing"}},
		{name: "BINDS uri and url", in: input{file: "[BINDS.o]\nuri = \"postgresql://h/o\"\nurl = \"postgresql://h/o\""},
			err: &wantErr{key: "BINDS.o.url", source: fileSrc, says: "set twice"}},
		{name: "BINDS pool setting twice", in: input{file: "[BINDS.o]\nuri = \"postgresql://h/o\"\npool_size = 1\nengine_options = {pool_size = 2}"},
			err: &wantErr{key: "BINDS.o.pool_size", source: fileSrc, says: "set twice, directly and in engine_options"}},
		{name: "BINDS entry of the wrong type", in: input{file: "[BINDS]\no = 5"},
			err: &wantErr{key: "BINDS.o", source: fileSrc, value: "5", says: "a URI string or a table"}},
		{name: "BINDS uri hides its password", in: input{file: "[BINDS.o]\nuri = 5\nslot = 7"},
			err: &wantErr{key: "BINDS.o.slot", source: fileSrc, value: "7", says: "want a string"}},
		{name: "BINDS empty table entry", in: input{file: "[BINDS.o]\nuri = \"postgresql://h/o\"\ntables = [\"\"]"},
			err: &wantErr{key: "BINDS.o.tables", source: fileSrc, says: "empty entry"}},
		{name: "BINDS server_id out of range", in: input{file: "[BINDS.o]\nuri = \"mysql://h/o\"\nserver_id = 4294967296"},
			err: &wantErr{key: "BINDS.o.server_id", source: fileSrc, value: "4294967296"}},
		{name: "BINDS negative pool_size", in: input{env: env("TRACKER_BINDS", `{"o": {"uri": "mysql://h/o", "pool_size": -1}}`)},
			err: &wantErr{key: "BINDS.o.pool_size", source: "env TRACKER_BINDS", value: "-1", says: "0 or more"}},

		// TRACK_MODIFICATIONS
		{name: "TRACK_MODIFICATIONS unset", in: input{},
			check: func(c *Config) string {
				if c.TrackModifications != nil || !c.Tracking() {
					return "want unset and tracking"
				}
				return ""
			}},
		{name: "TRACK_MODIFICATIONS empty env is unset", in: input{env: env("TRACKER_TRACK_MODIFICATIONS", "")},
			check: func(c *Config) string { return eq(c.TrackModifications == nil, true) }},
		{name: "TRACK_MODIFICATIONS false", in: input{env: env("SQLALCHEMY_TRACK_MODIFICATIONS", "False")},
			check: func(c *Config) string { return eq(c.Tracking(), false) }},
		{name: "TRACK_MODIFICATIONS TOML bool", in: input{file: "TRACK_MODIFICATIONS = true"},
			check: func(c *Config) string { return eq(c.TrackModifications != nil && *c.TrackModifications, true) }},
		{name: "TRACK_MODIFICATIONS maybe", in: input{env: env("TRACKER_TRACK_MODIFICATIONS", "maybe")},
			err: &wantErr{key: "TRACK_MODIFICATIONS", source: "env TRACKER_TRACK_MODIFICATIONS", value: "maybe",
				says: `config: TRACK_MODIFICATIONS (env TRACKER_TRACK_MODIFICATIONS) = "maybe": want true or false`}},

		// ECHO, RECORD_QUERIES, NATIVE_UNICODE, DEBUG, TESTING
		{name: "ECHO debug", in: input{env: env("SQLALCHEMY_ECHO", "debug")}, check: func(c *Config) string { return eq(c.Echo, true) }},
		{name: "ECHO yes", in: input{flags: env("ECHO", "YES")}, check: func(c *Config) string { return eq(c.Echo, true) }},
		{name: "ECHO bad", in: input{flags: env("ECHO", "loud")},
			err: &wantErr{key: "ECHO", source: "flag --echo", value: "loud", says: "want true or false"}},
		{name: "RECORD_QUERIES follows DEBUG", in: input{env: env("TRACKER_DEBUG", "1")},
			check: func(c *Config) string { return eq(c.RecordQueriesEnabled(), true) }},
		{name: "RECORD_QUERIES follows TESTING", in: input{file: "TESTING = true"},
			check: func(c *Config) string { return eq(c.RecordQueriesEnabled(), true) }},
		{name: "RECORD_QUERIES false beats DEBUG", in: input{env: env("TRACKER_DEBUG", "on", "TRACKER_RECORD_QUERIES", "off")},
			check: func(c *Config) string { return eq(c.RecordQueriesEnabled(), false) }},
		{name: "RECORD_QUERIES off by default", in: input{}, check: func(c *Config) string { return eq(c.RecordQueriesEnabled(), false) }},
		{name: "NATIVE_UNICODE off", in: input{file: "NATIVE_UNICODE = 0"}, check: func(c *Config) string { return eq(c.NativeUnicode, false) }},
		{name: "NATIVE_UNICODE number", in: input{file: "NATIVE_UNICODE = 2"},
			err: &wantErr{key: "NATIVE_UNICODE", source: fileSrc, value: "2", says: "want true or false"}},
		{name: "DEBUG bad", in: input{env: env("TRACKER_DEBUG", "verbose")},
			err: &wantErr{key: "DEBUG", source: "env TRACKER_DEBUG", value: "verbose"}},

		// Pool keys and ENGINE_OPTIONS
		{name: "POOL_SIZE", in: input{env: env("SQLALCHEMY_POOL_SIZE", "7")},
			check: func(c *Config) string { return deepEq(c.Engine, EngineOptions{PoolSize: ptr(7)}) }},
		{name: "POOL_SIZE negative", in: input{env: env("SQLALCHEMY_POOL_SIZE", "-1")},
			err: &wantErr{key: "POOL_SIZE", source: "env SQLALCHEMY_POOL_SIZE", value: "-1", says: "0 or more"}},
		{name: "POOL_SIZE not a number", in: input{file: `POOL_SIZE = "five"`},
			err: &wantErr{key: "POOL_SIZE", source: fileSrc, value: "five"}},
		{name: "POOL_SIZE float", in: input{file: `POOL_SIZE = 2.5`},
			err: &wantErr{key: "POOL_SIZE", source: fileSrc, value: "2.5"}},
		{name: "MAX_OVERFLOW -1 is unlimited", in: input{env: env("TRACKER_MAX_OVERFLOW", "-1")},
			check: func(c *Config) string { return deepEq(c.Engine, EngineOptions{MaxOverflow: ptr(-1)}) }},
		{name: "MAX_OVERFLOW -2", in: input{env: env("TRACKER_MAX_OVERFLOW", "-2")},
			err: &wantErr{key: "MAX_OVERFLOW", source: "env TRACKER_MAX_OVERFLOW", value: "-2"}},
		{name: "POOL_TIMEOUT seconds", in: input{file: "POOL_TIMEOUT = 1.5"},
			check: func(c *Config) string {
				return deepEq(c.Engine, EngineOptions{PoolTimeout: ptr(1500 * time.Millisecond)})
			}},
		{name: "POOL_TIMEOUT duration", in: input{env: env("TRACKER_POOL_TIMEOUT", "2m")},
			check: func(c *Config) string { return deepEq(c.Engine, EngineOptions{PoolTimeout: ptr(2 * time.Minute)}) }},
		{name: "POOL_TIMEOUT negative", in: input{env: env("TRACKER_POOL_TIMEOUT", "-3")},
			err: &wantErr{key: "POOL_TIMEOUT", source: "env TRACKER_POOL_TIMEOUT", value: "-3"}},
		{name: "POOL_RECYCLE -1 accepted", in: input{env: env("SQLALCHEMY_POOL_RECYCLE", "-1")},
			check: func(c *Config) string { return deepEq(c.Engine, EngineOptions{PoolRecycle: ptr(-time.Second)}) }},
		{name: "POOL_RECYCLE bad", in: input{env: env("SQLALCHEMY_POOL_RECYCLE", "soon")},
			err: &wantErr{key: "POOL_RECYCLE", source: "env SQLALCHEMY_POOL_RECYCLE", value: "soon", says: "a number of seconds"}},
		{name: "ENGINE_OPTIONS wins over POOL_*", in: input{
			flags: env("POOL_SIZE", "9", "MAX_OVERFLOW", "1"),
			file:  "[ENGINE_OPTIONS]\npool_size = 2\npool_recycle = 3600\npool_pre_ping = true"},
			check: func(c *Config) string {
				return deepEq(c.Engine, EngineOptions{PoolSize: ptr(2), MaxOverflow: ptr(1), PoolRecycle: ptr(time.Hour)})
			}},
		{name: "ENGINE_OPTIONS from env JSON", in: input{env: env("TRACKER_ENGINE_OPTIONS", `{"pool_timeout": 10}`)},
			check: func(c *Config) string { return deepEq(c.Engine, EngineOptions{PoolTimeout: ptr(10 * time.Second)}) }},
		{name: "ENGINE_OPTIONS unknown option", in: input{file: "[ENGINE_OPTIONS]\npool_sise = 2"},
			err: &wantErr{key: "ENGINE_OPTIONS.pool_sise", source: fileSrc, says: `did you mean "pool_size"?`, is: ErrUnknownKey}},

		// NAMING_CONVENTION
		{name: "NAMING_CONVENTION with a user token", in: input{file: `
[NAMING_CONVENTION]
subject = "%(prefix)s.%(region)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s.%(key_0)s"
after_commit = "%(prefix)s.done.%(schema)s.%(table)s.%(op)s"
region = "eu-west"`},
			check: func(c *Config) string {
				t, err := c.SubjectTemplate("before_commit")
				if err != nil {
					return err.Error()
				}
				if s := eq(t.String(), "%(prefix)s.%(region)s.%(signal)s.%(bind)s.%(schema)s.%(table)s.%(op)s.%(key_0)s"); s != "" {
					return s
				}
				t, _ = c.SubjectTemplate("after_commit")
				if s := eq(t.String(), "%(prefix)s.done.%(schema)s.%(table)s.%(op)s"); s != "" {
					return s
				}
				return deepEq(c.UserTokens(), map[string]string{"region": "eu-west"})
			}},
		{name: "NAMING_CONVENTION without subject keeps the default", in: input{file: "[NAMING_CONVENTION]\nrollback = \"%(prefix)s.rb.%(table)s\""},
			check: func(c *Config) string { return eq(c.NamingConvention["subject"], DefaultSubjectTemplate) }},
		{name: "NAMING_CONVENTION unknown token", in: input{file: "[NAMING_CONVENTION]\nsubject = \"%(prefix)s.%(tabel)s\""},
			err: &wantErr{key: "NAMING_CONVENTION.subject", source: fileSrc, value: "%(prefix)s.%(tabel)s",
				says: "unknown token %(tabel)s; want one of prefix, signal, bind, schema, table, op"}},
		{name: "NAMING_CONVENTION bad conversion", in: input{env: env("TRACKER_NAMING_CONVENTION", `{"subject": "%(prefix)s.%(table)d"}`)},
			err: &wantErr{key: "NAMING_CONVENTION.subject", source: "env TRACKER_NAMING_CONVENTION", says: "must be followed by s"}},
		{name: "NAMING_CONVENTION user token shadows a built-in", in: input{file: "[NAMING_CONVENTION]\ntable = \"x\""},
			err: &wantErr{key: "NAMING_CONVENTION.table", source: fileSrc, says: "shadows a built-in token"}},
		{name: "NAMING_CONVENTION outside the prefix", in: input{file: "[NAMING_CONVENTION]\nsubject = \"other.%(table)s\""},
			err: &wantErr{key: "NAMING_CONVENTION.subject", source: fileSrc, says: `want a template starting with "%(prefix)s."`}},
		{name: "NAMING_CONVENTION literal prefix is not enough", in: input{
			file: "PUBLISH_MODE = \"core\"\n[NAMING_CONVENTION]\nsubject = \"trackerd.%(table)s\""},
			err: &wantErr{key: "NAMING_CONVENTION.subject", source: fileSrc, says: "must lie under SUBJECT_PREFIX"}},
		{name: "NAMING_CONVENTION prefix token alone", in: input{file: "[NAMING_CONVENTION]\nrollback = \"%(prefix)s\""},
			err: &wantErr{key: "NAMING_CONVENTION.rollback", source: fileSrc, says: "must lie under SUBJECT_PREFIX"}},
		{name: "NAMING_CONVENTION empty user token", in: input{file: "[NAMING_CONVENTION]\nregion = \"\""},
			err: &wantErr{key: "NAMING_CONVENTION.region", source: fileSrc, says: "empty"}},
		{name: "NAMING_CONVENTION value not a string", in: input{file: "[NAMING_CONVENTION]\nregion = 5"},
			err: &wantErr{key: "NAMING_CONVENTION.region", source: fileSrc, value: "5"}},

		// NATS
		{name: "NATS_URL", in: input{env: env("TRACKER_NATS_URL", "nats://a:pw@h1:4222, tls://h2:4222")},
			check: func(c *Config) string { return eq(c.NATSURL, "nats://a:pw@h1:4222, tls://h2:4222") }},
		{name: "NATS_URL bad scheme hides credentials", in: input{env: env("TRACKER_NATS_URL", "http://tok3n-s3cret@h:4222")},
			err: &wantErr{key: "NATS_URL", source: "env TRACKER_NATS_URL", value: "http://***@h:4222", says: `unknown scheme "http"`, hidden: "tok3n"}},
		{name: "NATS_PASSWORD never shown", in: input{file: "NATS_PASSWORD = 12345678"},
			err: &wantErr{key: "NATS_PASSWORD", source: fileSrc, value: "***", hidden: "12345678"}},
		{name: "NATS_PASSWORD without user", in: input{env: env("TRACKER_NATS_PASSWORD", "pw")},
			err: &wantErr{key: "NATS_USER", says: "missing"}},
		{name: "NATS_TLS_CERT without key", in: input{env: env("TRACKER_NATS_TLS_CERT", "/c.pem")},
			err: &wantErr{key: "NATS_TLS_KEY", says: "NATS_TLS_CERT and NATS_TLS_KEY together"}},
		{name: "NATS auth and TLS", in: input{env: env("TRACKER_NATS_USER", "u", "TRACKER_NATS_PASSWORD", "p", "TRACKER_NATS_TOKEN", "t",
			"TRACKER_NATS_CREDS", "~/x.creds", "TRACKER_NATS_NKEY", "/n.nk", "TRACKER_NATS_TLS_CERT", "/c", "TRACKER_NATS_TLS_KEY", "/k",
			"TRACKER_NATS_TLS_CA", "/ca", "HOME", "/home/me")},
			check: func(c *Config) string {
				return deepEq(c.NATS, NATSAuth{User: "u", Password: "p", Token: "t", Creds: "/home/me/x.creds", NKey: "/n.nk",
					TLSCert: "/c", TLSKey: "/k", TLSCA: "/ca"})
			}},

		// SUBJECT_PREFIX, SIGNALS
		{name: "SUBJECT_PREFIX dotted", in: input{flags: env("SUBJECT_PREFIX", "acme.cdc")},
			check: func(c *Config) string { return eq(c.SubjectPrefix, "acme.cdc") }},
		{name: "SUBJECT_PREFIX wildcard", in: input{flags: env("SUBJECT_PREFIX", "acme.*")},
			err: &wantErr{key: "SUBJECT_PREFIX", source: "flag --subject-prefix", value: "acme.*"}},
		{name: "SUBJECT_PREFIX empty token", in: input{env: env("TRACKER_SUBJECT_PREFIX", "a..b")},
			err: &wantErr{key: "SUBJECT_PREFIX", value: "a..b"}},
		{name: "SUBJECT_PREFIX space", in: input{file: `SUBJECT_PREFIX = "a b"`},
			err: &wantErr{key: "SUBJECT_PREFIX", value: "a b", source: fileSrc}},
		{name: "SIGNALS comma-separated", in: input{env: env("TRACKER_SIGNALS", " after_commit ")},
			check: func(c *Config) string { return deepEq(c.Signals, []string{"after_commit"}) }},
		{name: "SIGNALS JSON", in: input{flags: env("SIGNALS", `["before_commit"]`)},
			check: func(c *Config) string { return deepEq(c.Signals, []string{"before_commit"}) }},
		{name: "SIGNALS TOML array", in: input{file: `SIGNALS = ["after_commit", "before_commit"]`},
			check: func(c *Config) string { return deepEq(c.Signals, []string{"after_commit", "before_commit"}) }},
		{name: "SIGNALS unknown", in: input{file: `SIGNALS = ["after_commit", "on_commit"]`},
			err: &wantErr{key: "SIGNALS", source: fileSrc, value: "on_commit", says: "before_commit and after_commit"}},
		{name: "SIGNALS empty", in: input{file: `SIGNALS = []`},
			err: &wantErr{key: "SIGNALS", source: fileSrc, says: "empty"}},
		{name: "SIGNALS twice", in: input{env: env("TRACKER_SIGNALS", "after_commit,after_commit")},
			err: &wantErr{key: "SIGNALS", value: "after_commit", says: "listed twice"}},
		{name: "SIGNALS not strings", in: input{file: `SIGNALS = [1]`},
			err: &wantErr{key: "SIGNALS.0", source: fileSrc, value: "1"}},

		// trackerd's own keys
		{name: "PUBLISH_MODE core", in: input{env: env("TRACKER_PUBLISH_MODE", "CORE")}, check: func(c *Config) string { return eq(c.PublishMode, "core") }},
		{name: "PUBLISH_MODE bad", in: input{env: env("TRACKER_PUBLISH_MODE", "kafka")},
			err: &wantErr{key: "PUBLISH_MODE", value: "kafka", says: "want jetstream or core", source: "env TRACKER_PUBLISH_MODE"}},
		{name: "MAX_INFLIGHT", in: input{file: "MAX_INFLIGHT = 100"}, check: func(c *Config) string { return eq(c.MaxInflight, 100) }},
		{name: "MAX_INFLIGHT_BYTES", in: input{env: env("TRACKER_MAX_INFLIGHT_BYTES", "8MiB")}, check: func(c *Config) string { return eq(c.MaxInflightBytes, int64(8<<20)) }},
		{name: "MAX_INFLIGHT_BYTES zero", in: input{file: "MAX_INFLIGHT_BYTES = 0"}, err: &wantErr{key: "MAX_INFLIGHT_BYTES", value: "0"}},
		{name: "MAX_INFLIGHT zero", in: input{file: "MAX_INFLIGHT = 0"},
			err: &wantErr{key: "MAX_INFLIGHT", value: "0", source: fileSrc, says: "from 1 to 1000000"}},
		{name: "MAX_INFLIGHT too big", in: input{env: env("TRACKER_MAX_INFLIGHT", "1000001")},
			err: &wantErr{key: "MAX_INFLIGHT", value: "1000001"}},
		{name: "OVERSIZE_POLICY fail", in: input{file: `OVERSIZE_POLICY = "fail"`}, check: func(c *Config) string { return eq(c.OversizePolicy, "fail") }},
		{name: "OVERSIZE_POLICY bad", in: input{file: `OVERSIZE_POLICY = "drop"`},
			err: &wantErr{key: "OVERSIZE_POLICY", value: "drop", says: "truncate or fail"}},
		{name: "STREAM_NAME", in: input{file: `STREAM_NAME = "ORDERS_CDC"`}, check: func(c *Config) string { return eq(c.StreamName, "ORDERS_CDC") }},
		{name: "STREAM_NAME with a dot", in: input{file: `STREAM_NAME = "my.stream"`},
			err: &wantErr{key: "STREAM_NAME", value: "my.stream", says: `holds '.'`}},
		{name: "DUPLICATE_WINDOW seconds", in: input{env: env("TRACKER_DUPLICATE_WINDOW", "600")},
			check: func(c *Config) string { return eq(c.DuplicateWindow, 10*time.Minute) }},
		{name: "DUPLICATE_WINDOW too short", in: input{env: env("TRACKER_DUPLICATE_WINDOW", "500ms")},
			err: &wantErr{key: "DUPLICATE_WINDOW", value: "500ms", says: "minutes are advised"}},
		{name: "DUPLICATE_WINDOW at the ack timeout", in: input{env: env("TRACKER_DUPLICATE_WINDOW", "5")},
			err: &wantErr{key: "DUPLICATE_WINDOW", value: "5s", says: "stores every re-send that comes after the window a second time; want at least 30s"}},
		{name: "DUPLICATE_WINDOW below twice the re-send delay", in: input{file: `DUPLICATE_WINDOW = "29s"`},
			err: &wantErr{key: "DUPLICATE_WINDOW", value: "29s", says: "sent again up to 15s later"}},
		{name: "DUPLICATE_WINDOW 30s", in: input{file: `DUPLICATE_WINDOW = "30s"`},
			check: func(c *Config) string { return eq(c.DuplicateWindow, 30*time.Second) }},
		{name: "DUPLICATE_WINDOW longer than STREAM_MAX_AGE", in: input{file: "DUPLICATE_WINDOW = \"2h\"\nSTREAM_MAX_AGE = \"1h\""},
			err: &wantErr{key: "DUPLICATE_WINDOW", value: "2h0m0s", says: "at most STREAM_MAX_AGE"}},
		{name: "STREAM_MAX_AGE", in: input{env: env("TRACKER_STREAM_MAX_AGE", "24h")}, check: func(c *Config) string { return eq(c.StreamMaxAge, d("24h")) }},
		{name: "STREAM_MAX_AGE negative", in: input{env: env("TRACKER_STREAM_MAX_AGE", "-1s")},
			err: &wantErr{key: "STREAM_MAX_AGE", value: "-1s"}},
		{name: "STREAM_MAX_BYTES with unit", in: input{env: env("TRACKER_STREAM_MAX_BYTES", "1GiB")},
			check: func(c *Config) string { return eq(c.StreamMaxBytes, int64(1<<30)) }},
		{name: "STREAM_MAX_BYTES decimal unit", in: input{file: `STREAM_MAX_BYTES = "2 MB"`},
			check: func(c *Config) string { return eq(c.StreamMaxBytes, int64(2e6)) }},
		{name: "STREAM_MAX_BYTES zero", in: input{file: "STREAM_MAX_BYTES = 0"},
			err: &wantErr{key: "STREAM_MAX_BYTES", value: "0", says: "-1 (unlimited)"}},
		{name: "STREAM_MAX_BYTES bad unit", in: input{file: `STREAM_MAX_BYTES = "3 parsecs"`},
			err: &wantErr{key: "STREAM_MAX_BYTES", value: "3 parsecs", source: fileSrc}},
		{name: "STREAM_MAX_MSGS", in: input{file: "STREAM_MAX_MSGS = 1000"}, check: func(c *Config) string { return eq(c.StreamMaxMsgs, int64(1000)) }},
		{name: "STREAM_MAX_MSGS zero", in: input{file: "STREAM_MAX_MSGS = 0"}, err: &wantErr{key: "STREAM_MAX_MSGS", value: "0"}},
		{name: "STREAM_REPLICAS", in: input{file: "STREAM_REPLICAS = 3"}, check: func(c *Config) string { return eq(c.StreamReplicas, 3) }},
		{name: "STREAM_REPLICAS six", in: input{file: "STREAM_REPLICAS = 6"}, err: &wantErr{key: "STREAM_REPLICAS", value: "6", says: "from 1 to 5"}},
		{name: "CHECKPOINT_BUCKET", in: input{file: `CHECKPOINT_BUCKET = "cp-1"`}, check: func(c *Config) string { return eq(c.CheckpointBucket, "cp-1") }},
		{name: "CHECKPOINT_BUCKET dot", in: input{file: `CHECKPOINT_BUCKET = "cp.1"`}, err: &wantErr{key: "CHECKPOINT_BUCKET", value: "cp.1"}},
		{name: "CHECKPOINT_INTERVAL", in: input{env: env("TRACKER_CHECKPOINT_INTERVAL", "1s")},
			check: func(c *Config) string { return eq(c.CheckpointInterval, time.Second) }},
		{name: "CHECKPOINT_INTERVAL zero", in: input{env: env("TRACKER_CHECKPOINT_INTERVAL", "0")},
			err: &wantErr{key: "CHECKPOINT_INTERVAL", value: "0s"}},
		{name: "CHECKPOINT_INTERVAL garbage", in: input{env: env("TRACKER_CHECKPOINT_INTERVAL", "often")},
			err: &wantErr{key: "CHECKPOINT_INTERVAL", value: "often", says: "a duration such as 10m"}},
		{name: "PROGRESS_INTERVAL default", in: input{}, check: func(c *Config) string { return eq(c.ProgressInterval, time.Minute) }},
		{name: "PROGRESS_INTERVAL", in: input{env: env("TRACKER_PROGRESS_INTERVAL", "5m")},
			check: func(c *Config) string { return eq(c.ProgressInterval, 5*time.Minute) }},
		{name: "PROGRESS_INTERVAL off", in: input{file: "PROGRESS_INTERVAL = 0"}, check: func(c *Config) string { return eq(c.ProgressInterval, time.Duration(0)) }},
		{name: "PROGRESS_INTERVAL negative", in: input{flags: env("PROGRESS_INTERVAL", "-1s")},
			err: &wantErr{key: "PROGRESS_INTERVAL", value: "-1s", says: "0 (off) or a positive duration"}},
		{name: "paths derived from XDG_DATA_HOME", in: input{env: env("XDG_DATA_HOME", "/xdg", "HOME", "/home/me")},
			check: func(c *Config) string {
				return deepEq([]string{c.DataDir, c.NATSStoreDir, c.CheckpointFile},
					[]string{"/xdg/trackerd", "/xdg/trackerd/nats", "/xdg/trackerd/checkpoints.json"})
			}},
		{name: "paths derived from HOME", in: input{env: env("XDG_DATA_HOME", "relative", "HOME", "/home/me")},
			check: func(c *Config) string { return eq(c.DataDir, "/home/me/.local/share/trackerd") }},
		{name: "paths unknown without HOME", in: input{},
			check: func(c *Config) string {
				return deepEq([]string{c.DataDir, c.NATSStoreDir, c.CheckpointFile}, []string{"", "", ""})
			}},
		{name: "DATA_DIR set, ~ expanded", in: input{env: env("TRACKER_DATA_DIR", "~/state", "HOME", "/home/me", "TRACKER_CHECKPOINT_FILE", "/cp.json")},
			check: func(c *Config) string {
				return deepEq([]string{c.DataDir, c.NATSStoreDir, c.CheckpointFile}, []string{"/home/me/state", "/home/me/state/nats", "/cp.json"})
			}},
		{name: "NATS_STORE_DIR set", in: input{file: `NATS_STORE_DIR = "/js"`}, check: func(c *Config) string { return eq(c.NATSStoreDir, "/js") }},
		{name: "EMBEDDED_NATS_ADDR free port", in: input{env: env("TRACKER_EMBEDDED_NATS_ADDR", "127.0.0.1:0")},
			check: func(c *Config) string { return eq(c.EmbeddedNATSAddr, "127.0.0.1:0") }},
		{name: "EMBEDDED_NATS_ADDR bad", in: input{env: env("TRACKER_EMBEDDED_NATS_ADDR", "localhost")},
			err: &wantErr{key: "EMBEDDED_NATS_ADDR", value: "localhost", says: "not host:port"}},
		{name: "EMBEDDED_NATS_ADDR ignored with NATS_URL", in: input{env: env("TRACKER_EMBEDDED_NATS_ADDR", "x", "TRACKER_NATS_URL", "nats://h:4222")},
			check: func(c *Config) string { return eq(c.EmbeddedNATSAddr, "x") }},
		{name: "SPILL_THRESHOLD", in: input{env: env("TRACKER_SPILL_THRESHOLD", "64MiB")},
			check: func(c *Config) string { return eq(c.SpillThreshold, int64(64<<20)) }},
		{name: "SNAPSHOT_CHUNK", in: input{env: env("TRACKER_SNAPSHOT_CHUNK", "500")},
			check: func(c *Config) string { return eq(c.SnapshotChunk, 500) }},
		{name: "SNAPSHOT_CHUNK zero", in: input{file: "SNAPSHOT_CHUNK = 0"}, err: &wantErr{key: "SNAPSHOT_CHUNK", value: "0"}},
		{name: "SPILL_THRESHOLD negative", in: input{file: "SPILL_THRESHOLD = -5"}, err: &wantErr{key: "SPILL_THRESHOLD", value: "-5"}},
		{name: "HTTP_ADDR off", in: input{flags: env("HTTP_ADDR", "OFF")}, check: func(c *Config) string { return eq(c.HTTPAddr, "off") }},
		{name: "HTTP_ADDR any interface, free port", in: input{flags: env("HTTP_ADDR", ":0")}, check: func(c *Config) string { return eq(c.HTTPAddr, ":0") }},
		{name: "HTTP_ADDR bad port", in: input{flags: env("HTTP_ADDR", "localhost:http")},
			err: &wantErr{key: "HTTP_ADDR", value: "localhost:http", source: "flag --http-addr", says: "not a number"}},
		{name: "DEBUG_ADDR unset", in: input{}, check: func(c *Config) string { return eq(c.DebugAddr, "") }},
		{name: "DEBUG_ADDR off", in: input{env: env("TRACKER_DEBUG_ADDR", "Off")}, check: func(c *Config) string { return eq(c.DebugAddr, "off") }},
		{name: "DEBUG_ADDR loopback", in: input{flags: env("DEBUG_ADDR", "[::1]:0")}, check: func(c *Config) string { return eq(c.DebugAddr, "[::1]:0") }},
		{name: "DEBUG_ADDR localhost", in: input{flags: env("DEBUG_ADDR", "localhost:9188")}, check: func(c *Config) string { return eq(c.DebugAddr, "localhost:9188") }},
		{name: "DEBUG_ADDR any interface", in: input{flags: env("DEBUG_ADDR", "0.0.0.0:9188")},
			err: &wantErr{key: "DEBUG_ADDR", value: "0.0.0.0:9188", source: "flag --debug-addr", says: "loopback only"}},
		{name: "DEBUG_ADDR no host", in: input{env: env("TRACKER_DEBUG_ADDR", ":9188")},
			err: &wantErr{key: "DEBUG_ADDR", value: ":9188", says: "not a loopback host"}},
		{name: "DEBUG_ADDR bad port", in: input{env: env("TRACKER_DEBUG_ADDR", "127.0.0.1:x")},
			err: &wantErr{key: "DEBUG_ADDR", value: "127.0.0.1:x", says: "not a number"}},
		{name: "LOG_FORMAT json", in: input{env: env("TRACKER_LOG_FORMAT", "JSON")}, check: func(c *Config) string { return eq(c.LogFormat, "json") }},
		{name: "LOG_FORMAT xml", in: input{env: env("TRACKER_LOG_FORMAT", "xml")}, err: &wantErr{key: "LOG_FORMAT", value: "xml", says: "text or json"}},
		{name: "LOG_LEVEL warning", in: input{env: env("TRACKER_LOG_LEVEL", "WARNING")}, check: func(c *Config) string { return eq(c.LogLevel, "warn") }},
		{name: "LOG_LEVEL trace", in: input{env: env("TRACKER_LOG_LEVEL", "trace")}, err: &wantErr{key: "LOG_LEVEL", value: "trace"}},

		// Unknown keys
		{name: "unknown file key with a suggestion", in: input{file: `DATABSE_URI = "postgresql://u:hunter22@h"`},
			err: &wantErr{key: "DATABSE_URI", source: fileSrc, says: `did you mean "DATABASE_URI"?`, hidden: "hunter22", is: ErrUnknownKey}},
		{name: "unknown file key with TRACKER_ prefix", in: input{file: `TRACKER_ECHO = true`},
			err: &wantErr{key: "TRACKER_ECHO", source: fileSrc, says: `did you mean "ECHO"? (the file takes keys without TRACKER_)`, is: ErrUnknownKey}},
		{name: "unknown file key far from any is skipped", in: input{file: `COLOUR = "blue"`},
			check: func(c *Config) string { return deepEq(c.SkippedKeys(), []string{"COLOUR"}) }},
		{name: "unknown env key ignored", in: input{env: env("TRACKER_COLOUR", "blue")},
			check: func(c *Config) string { return "" }},
		{name: "unknown flag key", in: input{flags: env("COLOUR", "blue")},
			err: &wantErr{key: "COLOUR", source: "flag --colour", is: ErrUnknownKey}},
		{name: "key twice in the file", in: input{file: "ECHO = true\nSQLALCHEMY_ECHO = false"},
			err: &wantErr{key: "ECHO", source: fileSrc, says: "set twice in the file, as ECHO and SQLALCHEMY_ECHO"}},
		{name: "lower-case file keys", in: input{file: "echo = true\nsqlalchemy_pool_size = 3"},
			check: func(c *Config) string {
				return deepEq([]any{c.Echo, c.Engine}, []any{true, EngineOptions{PoolSize: ptr(3)}})
			}},
		{name: "TOML syntax error hides the text", in: input{file: "NATS_PASSWORD = hunter22\n"},
			err: &wantErr{key: "", source: fileSrc, says: "not valid TOML: line 1", hidden: "hunter22"}},
	}
}

func ptr[T any](v T) *T { return &v }

func eq[T comparable](got, want T) string {
	if got != want {
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	return ""
}

func deepEq(got, want any) string {
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("got %s, want %s", show(got), show(want))
	}
	return ""
}

// show prints pointers' targets, for readable failures.
func show(v any) string {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		var parts []string
		for _, k := range rv.MapKeys() {
			parts = append(parts, fmt.Sprintf("%v:%s", k, show(rv.MapIndex(k).Interface())))
		}
		slices.Sort(parts)
		return "map[" + strings.Join(parts, " ") + "]"
	case reflect.Struct:
		var parts []string
		for i := range rv.NumField() {
			if rv.Type().Field(i).IsExported() {
				parts = append(parts, rv.Type().Field(i).Name+":"+show(rv.Field(i).Interface()))
			}
		}
		return "{" + strings.Join(parts, " ") + "}"
	case reflect.Pointer:
		if rv.IsNil() {
			return "nil"
		}
		return "&" + show(rv.Elem().Interface())
	}
	return fmt.Sprintf("%v", v)
}

func TestLoadKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range keyCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(tc.in.options())
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if msg := tc.check(c); msg != "" {
					t.Fatal(msg)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded, want an error on %s", tc.err.key)
			}
			if c != nil {
				t.Errorf("Load returned a Config with its error")
			}
			if tc.err.hidden != "" && strings.Contains(err.Error(), tc.err.hidden) {
				t.Errorf("error shows %q:\n%v", tc.err.hidden, err)
			}
			for _, fe := range fieldErrors(t, err) {
				if fe.Key != tc.err.key {
					continue
				}
				if tc.err.source != "" && fe.Source != tc.err.source {
					t.Errorf("Source = %q, want %q", fe.Source, tc.err.source)
				}
				if (tc.err.value != "" || tc.err.noValue) && fe.Value != tc.err.value {
					t.Errorf("Value = %q, want %q", fe.Value, tc.err.value)
				}
				if tc.err.says != "" && !strings.Contains(fe.Error(), tc.err.says) {
					t.Errorf("error %q does not say %q", fe.Error(), tc.err.says)
				}
				if tc.err.is != nil && !errors.Is(fe, tc.err.is) {
					t.Errorf("error %q is not %v", fe.Error(), tc.err.is)
				}
				return
			}
			t.Fatalf("no error on key %q in:\n%v", tc.err.key, err)
		})
	}
}

// TestEveryKeyHasCases keeps the table above complete.
func TestEveryKeyHasCases(t *testing.T) {
	t.Parallel()
	var text strings.Builder
	for _, tc := range keyCases() {
		fmt.Fprintf(&text, "%s %v %v %s\n", tc.name, tc.in.env, tc.in.flags, tc.in.file)
	}
	for _, k := range Keys() {
		if !strings.Contains(text.String(), k.Name) {
			t.Errorf("no test case sets %s", k.Name)
		}
	}
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	all := input{
		flags: env("SUBJECT_PREFIX", "flag"),
		env:   env("TRACKER_SUBJECT_PREFIX", "tracker", "SQLALCHEMY_SUBJECT_PREFIX", "sqlalchemy"),
		file:  `SQLALCHEMY_SUBJECT_PREFIX = "file"`,
	}
	tests := []struct {
		name       string
		in         input
		want, from string
	}{
		{"flag beats all", all, "flag", "flag --subject-prefix"},
		{"TRACKER_ beats SQLALCHEMY_", input{env: all.env, file: all.file}, "tracker", "env TRACKER_SUBJECT_PREFIX"},
		{"SQLALCHEMY_ beats file", input{env: env("SQLALCHEMY_SUBJECT_PREFIX", "sqlalchemy"), file: all.file}, "sqlalchemy", "env SQLALCHEMY_SUBJECT_PREFIX"},
		{"empty TRACKER_ is unset", input{env: env("TRACKER_SUBJECT_PREFIX", "", "SQLALCHEMY_SUBJECT_PREFIX", "sqlalchemy")}, "sqlalchemy", "env SQLALCHEMY_SUBJECT_PREFIX"},
		{"file beats default", input{file: all.file}, "file", "file " + testFile},
		{"default", input{}, "trackerd", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(tc.in.options())
			if err != nil {
				t.Fatal(err)
			}
			if c.SubjectPrefix != tc.want || c.SourceOf("SUBJECT_PREFIX") != tc.from {
				t.Errorf("SUBJECT_PREFIX = %q from %q, want %q from %q", c.SubjectPrefix, c.SourceOf("SUBJECT_PREFIX"), tc.want, tc.from)
			}
		})
	}
}

// TestOnlyTheWinningValueIsParsed: a Flask app's SQLALCHEMY_ value that
// trackerd cannot read does not matter once TRACKER_ overrides it.
func TestOnlyTheWinningValueIsParsed(t *testing.T) {
	t.Parallel()
	c, err := Load(input{env: env("SQLALCHEMY_POOL_SIZE", "lots", "TRACKER_POOL_SIZE", "4")}.options())
	if err != nil {
		t.Fatal(err)
	}
	if *c.Engine.PoolSize != 4 {
		t.Errorf("PoolSize %d", *c.Engine.PoolSize)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	_, err := Load(input{
		env:  env("TRACKER_ECHO", "loud", "TRACKER_MAX_INFLIGHT", "0"),
		file: "POOL_SIZE = -3\nPOOLSIZE = 1\nCOLOUR = 1\nSTREAM_REPLICAS = 9\n",
	}.options())
	var keys []string
	for _, fe := range fieldErrors(t, err) {
		keys = append(keys, fe.Key)
	}
	slices.Sort(keys)
	if want := []string{"ECHO", "MAX_INFLIGHT", "POOLSIZE", "POOL_SIZE", "STREAM_REPLICAS"}; !slices.Equal(keys, want) {
		t.Errorf("errors on %v, want %v", keys, want)
	}
}

func TestFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file      string
		check     func(c *Config) string
		errorKeys []string
		hidden    string
	}{
		{file: "flask.toml", check: func(c *Config) string {
			if s := eq(c.DatabaseURI, "postgresql+psycopg2://app:app-secret@db.internal:5432/shop"); s != "" {
				return s
			}
			if s := deepEq(c.Engine, EngineOptions{PoolSize: ptr(10), MaxOverflow: ptr(5), PoolRecycle: ptr(1800 * time.Second)}); s != "" {
				return s
			}
			return deepEq(sortedKeys(c.Binds), []string{"analytics", "orders"})
		}},
		{file: "full.toml", check: func(c *Config) string {
			if err := c.Validate(); err != nil {
				return err.Error()
			}
			for _, k := range Keys() {
				if c.SourceOf(k.Name) != "file testdata/full.toml" {
					return k.Name + " not read from the file"
				}
			}
			return ""
		}},
		{file: "bad_values.toml", hidden: "hunter22",
			errorKeys: []string{"BINDS.orders.streming", "CHECKPOINT_BUCKET", "DUPLICATE_WINDOW", "NAMING_CONVENTION.subject", "NATS_PASSWORD", "SIGNALS", "TRACK_MODIFICATIONS"}},
		{file: "bad_unknown.toml", errorKeys: []string{"DATABASE_URL", "SQLALCHEMY_TRACK_MODIFICATION"}},
		{file: "bad_syntax.toml", errorKeys: []string{""}, hidden: "hunter22"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			c, err := Load(Options{File: filepath.Join("testdata", tc.file)})
			if tc.errorKeys == nil {
				if err != nil {
					t.Fatal(err)
				}
				if msg := tc.check(c); msg != "" {
					t.Fatal(msg)
				}
				return
			}
			var keys []string
			for _, fe := range fieldErrors(t, err) {
				keys = append(keys, fe.Key)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tc.errorKeys) {
				t.Errorf("errors on %q, want %q:\n%v", keys, tc.errorKeys, err)
			}
			if tc.hidden != "" && strings.Contains(err.Error(), tc.hidden) {
				t.Errorf("error shows %q:\n%v", tc.hidden, err)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(Options{File: filepath.Join(t.TempDir(), "nope.toml")})
	fes := fieldErrors(t, err)
	if len(fes) != 1 || !errors.Is(fes[0], os.ErrNotExist) || !strings.HasPrefix(fes[0].Error(), "config: file ") {
		t.Fatalf("got %v", err)
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// Default returns fresh maps and slices.
	c.Signals[0] = "x"
	c.NamingConvention["subject"] = "x"
	if d := Default(); d.Signals[0] != "before_commit" || d.NamingConvention["subject"] != DefaultSubjectTemplate {
		t.Fatal("Default shares its maps or slices")
	}
	if c.SourceOf("ECHO") != "" {
		t.Errorf("SourceOf on a Config built in code = %q, want empty", c.SourceOf("ECHO"))
	}
}

func TestValidateConfigBuiltInCode(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Engine.PoolSize = ptr(-1)
	c.Engine.MaxOverflow = ptr(-5)
	c.Binds = map[string]BindConfig{"b": {URI: " ", Engine: EngineOptions{PoolTimeout: ptr(-time.Second)}}}
	c.LogLevel = "loud"
	var keys []string
	for _, fe := range fieldErrors(t, c.Validate()) {
		keys = append(keys, fe.Key)
		if fe.Source != "" {
			t.Errorf("%s: Source %q for a Config built in code", fe.Key, fe.Source)
		}
	}
	slices.Sort(keys)
	if want := []string{"BINDS.b.pool_timeout", "BINDS.b.uri", "LOG_LEVEL", "MAX_OVERFLOW", "POOL_SIZE"}; !slices.Equal(keys, want) {
		t.Errorf("errors on %v, want %v", keys, want)
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	c := Default()
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("defaults warn: %v", w)
	}
	c.DuplicateWindow = 30 * time.Second
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "DUPLICATE_WINDOW") {
		t.Errorf("Warnings() = %v", w)
	}
}

func TestTrackModificationsWarning(t *testing.T) {
	t.Parallel()
	const want = "TRACK_MODIFICATIONS is not set: trackerd is tracking every bind. Set it to true or false to suppress this warning."
	if TrackModificationsWarning != want {
		t.Fatalf("TrackModificationsWarning = %q", TrackModificationsWarning)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		e    FieldError
		want string
	}{
		{FieldError{Key: "TRACK_MODIFICATIONS", Source: "env TRACKER_TRACK_MODIFICATIONS", Value: "maybe", Allowed: "true or false"},
			`config: TRACK_MODIFICATIONS (env TRACKER_TRACK_MODIFICATIONS) = "maybe": want true or false`},
		{FieldError{Key: "X", Err: errors.New("bad")}, `config: X: bad`},
		{FieldError{Key: "X", Err: errors.New("bad"), Allowed: "good"}, `config: X: bad; want good`},
		{FieldError{Source: "file a.toml", Err: errors.New("not valid TOML")}, `config: file a.toml: not valid TOML`},
		{FieldError{Key: "X"}, `config: X: invalid value`},
	}
	for _, tc := range tests {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	inner := errors.New("inner")
	if !errors.Is(&FieldError{Err: inner}, inner) {
		t.Error("Unwrap does not reach Err")
	}
}

func TestBindFlags(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	into := map[string]string{}
	BindFlags(fs, into)
	err := fs.Parse([]string{"--database-uri", "postgresql://h/db", "--echo", "--binds", `{"a":"mysql://h/a"}`,
		"--track-modifications=false", "--nats-url=", "--http-addr", "off", "--signals", "after_commit"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"DATABASE_URI": "postgresql://h/db", "ECHO": "true", "BINDS": `{"a":"mysql://h/a"}`,
		"TRACK_MODIFICATIONS": "false", "NATS_URL": "", "HTTP_ADDR": "off", "SIGNALS": "after_commit"}
	if !reflect.DeepEqual(into, want) {
		t.Fatalf("flags stored %v, want %v", into, want)
	}
	for _, k := range Keys() {
		if fs.Lookup(k.Flag()) == nil {
			t.Errorf("no flag --%s", k.Flag())
		}
	}
	c, err := Load(Options{Flags: into, LookupEnv: mapEnv(env("TRACKER_NATS_URL", "nats://h:4222"))})
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "" || c.Tracking() || !c.Echo || c.HTTPAddr != "off" {
		t.Errorf("flags did not win: %+v", c)
	}
}

func TestMarkdown(t *testing.T) {
	t.Parallel()
	md := Markdown()
	for _, k := range Keys() {
		if !strings.Contains(md, "| `"+k.Name+"` |") {
			t.Errorf("Markdown has no row for %s", k.Name)
		}
	}
	if strings.Count(md, "\n| `") != len(Keys()) {
		t.Errorf("Markdown has %d rows for %d keys", strings.Count(md, "\n| `"), len(Keys()))
	}
}

func TestKeysDocumented(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, k := range Keys() {
		if k.Doc == "" || k.Type == "" || seen[k.Name] {
			t.Errorf("key %s: empty doc or type, or listed twice", k.Name)
		}
		seen[k.Name] = true
		if got := k.EnvNames(); !slices.Equal(got, []string{"TRACKER_" + k.Name, "SQLALCHEMY_" + k.Name, "FLASK_SQLALCHEMY_" + k.Name}) {
			t.Errorf("EnvNames() = %v", got)
		}
	}
	if Keys()[0].Flag() != "database-uri" {
		t.Errorf("Flag() = %q", Keys()[0].Flag())
	}
}

func TestRedactURI(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgresql://u:secret@h/db", "postgresql://u:***@h/db"},
		{"postgresql://u:se@cret@h/db", "postgresql://u:***@h/db"},
		{"postgresql://u:p/w?x@h:5432/db", "postgresql://u:***@h:5432/db"},
		{"postgresql://u@h/db", "postgresql://u@h/db"},
		{"postgresql://h:5432/db", "postgresql://h:5432/db"},
		{"postgresql://u:secret/db", "postgresql://u:***/db"},
		{"postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db"},
		{"postgresql://h/db?sslmode=require&password=secret", "postgresql://h/db?sslmode=require&password=***"},
		{"postgresql://u:a@h/db?PASSWORD=x", "postgresql://u:***@h/db?PASSWORD=***"},
		{"u:secret@h", "u:***@h"},
		{"no uri here", "no uri here"},
	}
	for _, tc := range tests {
		if got := RedactURI(tc.in); got != tc.want {
			t.Errorf("RedactURI(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := redactUserinfo("nats://s3cr3t-token@h:4222"); got != "nats://***@h:4222" {
		t.Errorf("redactUserinfo = %q", got)
	}
}

// FuzzLoad: arbitrary TOML never panics, and every problem is a
// *FieldError.
func FuzzLoad(f *testing.F) {
	for _, tc := range keyCases() {
		if tc.in.file != "" {
			f.Add(tc.in.file)
		}
	}
	for _, name := range []string{"flask.toml", "full.toml", "bad_values.toml", "bad_unknown.toml", "bad_syntax.toml"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Load(input{file: text}.options())
		if err != nil {
			if c != nil {
				t.Fatal("a Config with an error")
			}
			fieldErrors(t, err)
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted what Validate refuses: %v", err)
		}
	})
}
