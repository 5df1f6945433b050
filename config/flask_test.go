package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestEnvironmentPrecedence: flag > TRACKER_ > SQLALCHEMY_ >
// FLASK_SQLALCHEMY_ > file > the NATS tools' bare variables > default
// (the README, "Operating trackerd").
func TestEnvironmentPrecedence(t *testing.T) {
	t.Parallel()
	const file = "NATS_URL = \"nats://file:4222\"\nSUBJECT_PREFIX = \"file\"\n"
	tests := []struct {
		name       string
		in         input
		key        string
		get        func(c *Config) string
		want, from string
	}{
		{"SQLALCHEMY_ beats FLASK_SQLALCHEMY_", input{env: env("SQLALCHEMY_SUBJECT_PREFIX", "sa", "FLASK_SQLALCHEMY_SUBJECT_PREFIX", "flask")},
			"SUBJECT_PREFIX", func(c *Config) string { return c.SubjectPrefix }, "sa", "env SQLALCHEMY_SUBJECT_PREFIX"},
		{"FLASK_SQLALCHEMY_ beats the file", input{env: env("FLASK_SQLALCHEMY_SUBJECT_PREFIX", "flask"), file: file},
			"SUBJECT_PREFIX", func(c *Config) string { return c.SubjectPrefix }, "flask", "env FLASK_SQLALCHEMY_SUBJECT_PREFIX"},
		{"FLASK_SQLALCHEMY_ JSON string", input{env: env("FLASK_SQLALCHEMY_DATABASE_URI", `"postgresql://h/db"`)},
			"DATABASE_URI", func(c *Config) string { return c.DatabaseURI }, "postgresql://h/db", "env FLASK_SQLALCHEMY_DATABASE_URI"},
		{"FLASK_SQLALCHEMY_ null is unset", input{env: env("FLASK_SQLALCHEMY_SUBJECT_PREFIX", "null"), file: file},
			"SUBJECT_PREFIX", func(c *Config) string { return c.SubjectPrefix }, "file", "file " + testFile},
		{"FLASK_SQLALCHEMY_ JSON false", input{env: env("FLASK_SQLALCHEMY_TRACK_MODIFICATIONS", "false")},
			"TRACK_MODIFICATIONS", func(c *Config) string { return eq(c.Tracking(), false) }, "", "env FLASK_SQLALCHEMY_TRACK_MODIFICATIONS"},
		{"bare NATS_URL", input{env: env("NATS_URL", "nats://bare:4222")},
			"NATS_URL", func(c *Config) string { return c.NATSURL }, "nats://bare:4222", "env NATS_URL"},
		{"the file beats bare NATS_URL", input{env: env("NATS_URL", "nats://bare:4222"), file: file},
			"NATS_URL", func(c *Config) string { return c.NATSURL }, "nats://file:4222", "file " + testFile},
		{"TRACKER_ beats bare NATS_URL", input{env: env("NATS_URL", "nats://bare:4222", "TRACKER_NATS_URL", "nats://t:4222")},
			"NATS_URL", func(c *Config) string { return c.NATSURL }, "nats://t:4222", "env TRACKER_NATS_URL"},
		{"an empty flag beats bare NATS_URL", input{env: env("NATS_URL", "nats://bare:4222"), flags: env("NATS_URL", "")},
			"NATS_URL", func(c *Config) string { return c.NATSURL }, "", "flag --nats-url"},
		{"bare credentials with a NATS_URL", input{env: env("TRACKER_NATS_URL", "nats://t:4222", "NATS_USER", "u", "NATS_PASSWORD", "p")},
			"NATS_USER", func(c *Config) string { return c.NATS.User + ":" + c.NATS.Password }, "u:p", "env NATS_USER"},
		{"bare credentials file", input{env: env("NATS_URL", "nats://bare:4222", "NATS_CREDS", "/x.creds")},
			"NATS_CREDS", func(c *Config) string { return c.NATS.Creds }, "/x.creds", "env NATS_CREDS"},
		{"bare token", input{env: env("NATS_URL", "nats://bare:4222", "NATS_TOKEN", "tok")},
			"NATS_TOKEN", func(c *Config) string { return c.NATS.Token }, "tok", "env NATS_TOKEN"},
		{"no bare credentials for the embedded server", input{env: env("NATS_USER", "u", "NATS_PASSWORD", "p")},
			"NATS_USER", func(c *Config) string { return c.NATS.User + c.NATS.Password }, "", "default"},
		{"no bare credentials beside a configured one", input{env: env("NATS_URL", "nats://bare:4222", "NATS_USER", "u", "NATS_PASSWORD", "p", "TRACKER_NATS_TOKEN", "t")},
			"NATS_USER", func(c *Config) string { return c.NATS.User + c.NATS.Password + "/" + c.NATS.Token }, "/t", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(tc.in.options())
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.get(c); got != tc.want {
				t.Errorf("%s = %q, want %q", tc.key, got, tc.want)
			}
			if got := c.SourceOf(tc.key); got != tc.from {
				t.Errorf("%s from %q, want %q", tc.key, got, tc.from)
			}
		})
	}
}

// TestFlaskConfigFile: a Flask application's config file, with keys of its
// own and of Flask's extensions, loads; trackerd's keys are read and the
// others skipped (operator review row 10).
func TestFlaskConfigFile(t *testing.T) {
	t.Parallel()
	file := `
SECRET_KEY = "s3cret-key"
MAIL_SERVER = "smtp.example.com"
SESSION_COOKIE_SECURE = true
SQLALCHEMY_DATABASE_URI = "postgresql://app@db/shop"
SQLALCHEMY_COMMIT_ON_TEARDOWN = false
DEBUG = false
`
	// Flask's own keys (flask.Flask.default_config) and some of common
	// extensions': none is close enough to a trackerd key to be taken for
	// a typo.
	foreign := []string{"ENV", "PROPAGATE_EXCEPTIONS", "SECRET_KEY_FALLBACKS", "PERMANENT_SESSION_LIFETIME",
		"USE_X_SENDFILE", "TRUSTED_HOSTS", "SERVER_NAME", "APPLICATION_ROOT", "SESSION_COOKIE_NAME",
		"SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_PATH", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE",
		"SESSION_COOKIE_PARTITIONED", "SESSION_REFRESH_EACH_REQUEST", "MAX_CONTENT_LENGTH", "MAX_FORM_MEMORY_SIZE",
		"MAX_FORM_PARTS", "SEND_FILE_MAX_AGE_DEFAULT", "TRAP_BAD_REQUEST_ERRORS", "TRAP_HTTP_EXCEPTIONS",
		"EXPLAIN_TEMPLATE_LOADING", "PREFERRED_URL_SCHEME", "TEMPLATES_AUTO_RELOAD", "MAX_COOKIE_SIZE",
		"PROVIDE_AUTOMATIC_OPTIONS", "JSON_AS_ASCII", "JSON_SORT_KEYS", "JSONIFY_PRETTYPRINT_REGULAR", "JSONIFY_MIMETYPE",
		"MAIL_PORT", "MAIL_USE_TLS", "MAIL_USERNAME", "MAIL_PASSWORD", "MAIL_DEFAULT_SENDER",
		"WTF_CSRF_ENABLED", "WTF_CSRF_SECRET_KEY", "CACHE_TYPE", "CACHE_DEFAULT_TIMEOUT", "CACHE_REDIS_URL",
		"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "BROKER_URL", "REDIS_URL", "SENTRY_DSN",
		"BABEL_DEFAULT_LOCALE", "JWT_SECRET_KEY", "CORS_ORIGINS", "REMEMBER_COOKIE_DURATION", "UPLOAD_FOLDER", "BASE_DIR", "PAGE_SIZE",
		"RATELIMIT_STORAGE_URI", "SECURITY_PASSWORD_SALT", "SWAGGER", "ADMINS", "TIMEZONE"}
	for _, k := range foreign {
		file += k + " = 1\n"
	}
	c, err := Load(input{file: file}.options())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.DatabaseURI != "postgresql://app@db/shop" {
		t.Errorf("DATABASE_URI = %q", c.DatabaseURI)
	}
	want := append([]string{"MAIL_SERVER", "SECRET_KEY", "SESSION_COOKIE_SECURE", "SQLALCHEMY_COMMIT_ON_TEARDOWN"}, foreign...)
	slices.Sort(want)
	if got := c.SkippedKeys(); !slices.Equal(got, want) {
		t.Errorf("SkippedKeys() = %v, want %v", got, want)
	}
}

// TestFileKeyNearMisses: a file key that is not trackerd's but looks meant
// for it is still an error with a suggestion.
func TestFileKeyNearMisses(t *testing.T) {
	t.Parallel()
	tests := []struct{ file, key, says string }{
		{`DATABASE_URL = "postgresql://u:hunter22@h/db"`, "DATABASE_URL", `did you mean "DATABASE_URI"?`},
		{`SQLALCHEMY_TRACK_MODIFICATION = false`, "SQLALCHEMY_TRACK_MODIFICATION", `did you mean "TRACK_MODIFICATIONS"?`},
		{`SQLALCHEMY_POOLSIZE = 3`, "SQLALCHEMY_POOLSIZE", `did you mean "POOL_SIZE"?`},
		{`SQLALCHEMY_NATS_SERVERS = "x"`, "SQLALCHEMY_NATS_SERVERS", "SQLALCHEMY_NATS_SERVERS is not a trackerd key"},
		{`TRACKER_ECHO = true`, "TRACKER_ECHO", `did you mean "ECHO"? (the file takes keys without TRACKER_)`},
		{`TRACKER_STREEM = "x"`, "TRACKER_STREEM", "not a trackerd key"},
		{`STREAM_NAMES = "x"`, "STREAM_NAMES", `did you mean "STREAM_NAME"?`},
		{`signals = ["after_commit"]` + "\nsubject_prefx = \"x\"", "subject_prefx", `did you mean "SUBJECT_PREFIX"?`},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			_, err := Load(input{file: tc.file}.options())
			fes := fieldErrors(t, err)
			if len(fes) != 1 || fes[0].Key != tc.key || !errors.Is(fes[0], ErrUnknownKey) || !strings.Contains(fes[0].Error(), tc.says) {
				t.Fatalf("got %v, want one error on %s saying %q", err, tc.key, tc.says)
			}
			if strings.Contains(err.Error(), "hunter22") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// TestTrackingDisabled: TRACK_MODIFICATIONS=false says where it came from
// and how to override it (operator review row 12).
func TestTrackingDisabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   input
		says []string
	}{
		{input{env: env("SQLALCHEMY_TRACK_MODIFICATIONS", "False")},
			[]string{"TRACK_MODIFICATIONS is false (env SQLALCHEMY_TRACK_MODIFICATIONS)", "set TRACKER_TRACK_MODIFICATIONS=true", "--track-modifications"}},
		{input{env: env("FLASK_SQLALCHEMY_TRACK_MODIFICATIONS", "false")},
			[]string{"(env FLASK_SQLALCHEMY_TRACK_MODIFICATIONS)", "set TRACKER_TRACK_MODIFICATIONS=true"}},
		{input{file: "SQLALCHEMY_TRACK_MODIFICATIONS = false"},
			[]string{"(file " + testFile + ")", "set TRACKER_TRACK_MODIFICATIONS=true"}},
		{input{env: env("TRACKER_TRACK_MODIFICATIONS", "no")},
			[]string{"(env TRACKER_TRACK_MODIFICATIONS)", "set TRACKER_TRACK_MODIFICATIONS=true or pass --track-modifications"}},
		{input{flags: env("TRACK_MODIFICATIONS", "false")},
			[]string{"(flag --track-modifications)", "drop --track-modifications=false"}},
	}
	for _, tc := range tests {
		c, err := Load(tc.in.options())
		if err != nil {
			t.Fatal(err)
		}
		msg := c.TrackingDisabled()
		for _, w := range tc.says {
			if !strings.Contains(msg, w) {
				t.Errorf("%q does not say %q", msg, w)
			}
		}
	}
}

// TestNoBindsSaysWhereItLooked: "set DATABASE_URI or BINDS" names the flags,
// variables and file it read (operator review row 11).
func TestNoBindsSaysWhereItLooked(t *testing.T) {
	t.Parallel()
	c, err := Load(input{env: env("DATABASE_URL", "postgresql://u:hunter22@h/db"), file: "ECHO = true"}.options())
	if err != nil {
		t.Fatal(err)
	}
	e := c.NoBindsError()
	msg := e.Error()
	for _, w := range []string{"set DATABASE_URI or BINDS", "--database-uri", "--binds", "TRACKER_DATABASE_URI",
		"SQLALCHEMY_DATABASE_URI", "FLASK_SQLALCHEMY_DATABASE_URI", "FLASK_SQLALCHEMY_BINDS", "file " + testFile,
		`DATABASE_URL is set, but trackerd reads DATABASE_URI: set TRACKER_DATABASE_URI="$DATABASE_URL"`} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q does not say %q", msg, w)
		}
	}
	if !errors.Is(e, ErrNoBinds) || strings.Contains(msg, "hunter22") {
		t.Errorf("%v: not ErrNoBinds, or shows the password", e)
	}
	c, _ = Load(Options{})
	if msg := c.NoBindsError().Error(); !strings.Contains(msg, "no --config file") || strings.Contains(msg, "DATABASE_URL") {
		t.Errorf("without a file: %q", msg)
	}
	if got := c.LookedFor("NATS_URL"); got != "flag --nats-url; env TRACKER_NATS_URL, SQLALCHEMY_NATS_URL, FLASK_SQLALCHEMY_NATS_URL; no --config file; env NATS_URL" {
		t.Errorf("LookedFor(NATS_URL) = %q", got)
	}
	built := Default()
	if msg := built.NoBindsError().Error(); msg != "config: DATABASE_URI: set DATABASE_URI or BINDS" {
		t.Errorf("for a Config built in code: %q", msg)
	}
}

// TestDefaultBindOptions: BINDS.default without a URI gives DATABASE_URI's
// bind its options (operator review row 13).
func TestDefaultBindOptions(t *testing.T) {
	t.Parallel()
	c, err := Load(input{env: env("TRACKER_DATABASE_URI", "mysql://root@h/app",
		"TRACKER_BINDS", `{"default": {"server_id": 4242002, "tables": ["orders"]}}`)}.options())
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Binds["default"]; b.URI != "" || b.ServerID != 4242002 || !slices.Equal(b.Tables, []string{"orders"}) {
		t.Errorf("BINDS.default = %+v", b)
	}
	_, err = Load(input{env: env("TRACKER_BINDS", `{"default": {"server_id": 4242002}}`)}.options())
	fes := fieldErrors(t, err)
	if len(fes) != 1 || fes[0].Key != "BINDS.default.uri" || !strings.Contains(fes[0].Error(), "missing; want the bind's URI, or DATABASE_URI") {
		t.Fatalf("without DATABASE_URI: %v", err)
	}
}
