package config

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// validator collects the problems of a Config's values.
type validator struct {
	c    *Config
	list []error
}

func (v *validator) fail(key, value, allowed string, err error) {
	v.list = append(v.list, &FieldError{Key: key, Value: value, Source: v.c.SourceOf(key), Allowed: allowed, Err: err})
}

// validate checks ranges, names and the rules that tie keys together.
func (c *Config) validate() []error {
	v := &validator{c: c}

	// Flask-SQLAlchemy keys.
	for _, key := range sortedKeys(c.Binds) {
		v.bind(key, c.Binds[key])
	}
	v.engine("", c.Engine)
	v.namingConvention()
	v.natsURL()
	if !isSubjectPrefix(c.SubjectPrefix) {
		v.fail("SUBJECT_PREFIX", c.SubjectPrefix, "dot-separated tokens of letters, digits, _ and -, such as trackerd or acme.cdc", nil)
	}
	v.signals()

	// trackerd's own keys.
	v.enum("PUBLISH_MODE", c.PublishMode, "jetstream", "core")
	if c.MaxInflight < 1 || c.MaxInflight > 1_000_000 {
		v.fail("MAX_INFLIGHT", strconv.Itoa(c.MaxInflight), "a whole number from 1 to 1000000", nil)
	}
	if c.SnapshotChunk < 1 || c.SnapshotChunk > 1_000_000 {
		v.fail("SNAPSHOT_CHUNK", strconv.Itoa(c.SnapshotChunk), "a whole number from 1 to 1000000", nil)
	}
	if c.MaxInflightBytes < 1 {
		v.fail("MAX_INFLIGHT_BYTES", strconv.FormatInt(c.MaxInflightBytes, 10), "a positive size such as 64MiB", nil)
	}
	v.enum("OVERSIZE_POLICY", c.OversizePolicy, "truncate", "fail")
	if err := checkStreamName(c.StreamName); err != nil {
		v.fail("STREAM_NAME", c.StreamName, "a JetStream stream name: no white space, '.', '*', '>', '/' or '\\'", err)
	}
	switch {
	case c.DuplicateWindow < MinDuplicateWindow:
		v.fail("DUPLICATE_WINDOW", c.DuplicateWindow.String(),
			fmt.Sprintf("at least %s; minutes are advised, so that events re-sent after a restart are dropped too", MinDuplicateWindow),
			fmt.Errorf("a publish whose acknowledgement is lost is sent again up to %s later (%s), and JetStream stores every re-send that comes after the window a second time",
				maxResendDelay, resendDelayParts))
	case c.StreamMaxAge > 0 && c.DuplicateWindow > c.StreamMaxAge:
		v.fail("DUPLICATE_WINDOW", c.DuplicateWindow.String(), fmt.Sprintf("at most STREAM_MAX_AGE (%s), as JetStream requires", c.StreamMaxAge), nil)
	}
	if c.StreamMaxAge < 0 {
		v.fail("STREAM_MAX_AGE", c.StreamMaxAge.String(), "0 (unlimited) or a positive duration", nil)
	}
	if c.StreamMaxBytes < -1 || c.StreamMaxBytes == 0 {
		v.fail("STREAM_MAX_BYTES", strconv.FormatInt(c.StreamMaxBytes, 10), "-1 (unlimited) or a positive size", nil)
	}
	if c.StreamMaxMsgs < -1 || c.StreamMaxMsgs == 0 {
		v.fail("STREAM_MAX_MSGS", strconv.FormatInt(c.StreamMaxMsgs, 10), "-1 (unlimited) or a whole number above 0", nil)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		v.fail("STREAM_REPLICAS", strconv.Itoa(c.StreamReplicas), "a whole number from 1 to 5", nil)
	}
	if !isBucketName(c.CheckpointBucket) {
		v.fail("CHECKPOINT_BUCKET", c.CheckpointBucket, "letters, digits, _ and - only (a JetStream bucket name)", nil)
	}
	if c.CheckpointInterval <= 0 {
		v.fail("CHECKPOINT_INTERVAL", c.CheckpointInterval.String(), "a positive duration such as 200ms", nil)
	}
	if c.SpillThreshold < 0 {
		v.fail("SPILL_THRESHOLD", strconv.FormatInt(c.SpillThreshold, 10), "0 or more bytes", nil)
	}
	if !strings.EqualFold(c.HTTPAddr, "off") {
		if err := checkHostPort(c.HTTPAddr); err != nil {
			v.fail("HTTP_ADDR", c.HTTPAddr, `host:port (port 0 picks a free one), or "off"`, err)
		}
	}
	if c.DebugAddr != "" && !strings.EqualFold(c.DebugAddr, "off") {
		err := checkHostPort(c.DebugAddr)
		if host, _, _ := net.SplitHostPort(c.DebugAddr); err == nil && !IsLoopbackHost(host) {
			err = fmt.Errorf("%q is not a loopback host: the debug endpoints show internal state and profiles, so they are served on loopback only", host)
		}
		if err != nil {
			v.fail("DEBUG_ADDR", c.DebugAddr, `a loopback host:port such as 127.0.0.1:9188 (port 0 picks a free one), or "off"`, err)
		}
	}
	if c.NATSURL == "" {
		if err := checkHostPort(c.EmbeddedNATSAddr); err != nil {
			v.fail("EMBEDDED_NATS_ADDR", c.EmbeddedNATSAddr, "host:port (port 0 picks a free one)", err)
		}
	}
	v.enum("LOG_FORMAT", c.LogFormat, "text", "json")
	v.enum("LOG_LEVEL", c.LogLevel, "debug", "info", "warn", "error")
	if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
		key, val := "NATS_TLS_KEY", c.NATS.TLSKey
		if c.NATS.TLSCert == "" {
			key, val = "NATS_TLS_CERT", c.NATS.TLSCert
		}
		v.fail(key, val, "NATS_TLS_CERT and NATS_TLS_KEY together", fmt.Errorf("missing"))
	}
	if c.NATS.Password != "" && c.NATS.User == "" {
		v.fail("NATS_USER", "", "a user name with NATS_PASSWORD", fmt.Errorf("missing"))
	}
	return v.list
}

func (v *validator) enum(key, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		v.fail(key, value, strings.Join(allowed, " or "), nil)
	}
}

func (v *validator) signals() {
	const allowed = "a list of before_commit and after_commit, at least one"
	if len(v.c.Signals) == 0 {
		v.fail("SIGNALS", "", allowed, fmt.Errorf("empty"))
	}
	for i, s := range v.c.Signals {
		switch {
		case s != "before_commit" && s != "after_commit":
			v.fail("SIGNALS", s, allowed, nil)
		case slices.Contains(v.c.Signals[:i], s):
			v.fail("SIGNALS", s, allowed, fmt.Errorf("listed twice"))
		}
	}
}

// engine checks pool settings; prefix is "" for the global ones (reported
// under their Flask-SQLAlchemy 2.x key names) or "BINDS.<key>.". Load
// range-checks each spelling as it reads it and keeps no bad value, so
// these checks only fire for a Config built in code.
func (v *validator) engine(prefix string, o EngineOptions) {
	name := func(flask, option string) string {
		if prefix == "" {
			return flask
		}
		return prefix + option
	}
	if o.PoolSize != nil && *o.PoolSize < 0 {
		v.fail(name("POOL_SIZE", "pool_size"), strconv.Itoa(*o.PoolSize), allowedPoolSize, nil)
	}
	if o.MaxOverflow != nil && *o.MaxOverflow < -1 {
		v.fail(name("MAX_OVERFLOW", "max_overflow"), strconv.Itoa(*o.MaxOverflow), allowedMaxOverflow, nil)
	}
	if o.PoolTimeout != nil && *o.PoolTimeout < 0 {
		v.fail(name("POOL_TIMEOUT", "pool_timeout"), o.PoolTimeout.String(), "0 or more seconds", nil)
	}
	// PoolRecycle: any value; 0 or negative means unlimited.
}

func (v *validator) bind(key string, b BindConfig) {
	p := "BINDS." + key + "."
	switch {
	case strings.TrimSpace(b.URI) != "":
	case key == DefaultBind && v.c.DatabaseURI != "":
		// Options for DATABASE_URI's bind.
	case key == DefaultBind:
		v.fail(p+"uri", "", "the bind's URI, or DATABASE_URI (then BINDS.default holds only its options)", fmt.Errorf("missing"))
	default:
		v.fail(p+"uri", "", "the bind's URI", fmt.Errorf("empty"))
	}
	for _, l := range []struct {
		name   string
		tables []string
	}{{"tables", b.Tables}, {"exclude_tables", b.ExcludeTables}} {
		for _, t := range l.tables {
			if strings.TrimSpace(t) == "" {
				v.fail(p+l.name, t, `"schema.table" or "table"`, fmt.Errorf("empty entry"))
			}
		}
	}
	v.engine(p, b.Engine)
}

func (v *validator) namingConvention() {
	nc := v.c.NamingConvention
	user := slices.Sorted(maps.Keys(v.c.UserTokens()))
	for _, name := range user {
		switch {
		case !isTokenName(name):
			v.fail("NAMING_CONVENTION."+name, "", "token names of letters, digits and _", fmt.Errorf("bad token name"))
		case isBuiltinToken(name):
			v.fail("NAMING_CONVENTION."+name, "", "a name that is not a built-in token ("+allowedTokens(nil)+")", fmt.Errorf("shadows a built-in token"))
		case nc[name] == "":
			v.fail("NAMING_CONVENTION."+name, "", "a non-empty value for the user token", fmt.Errorf("empty"))
		}
	}
	for _, k := range templateKeys {
		src, ok := nc[k]
		if !ok {
			continue
		}
		t, err := ParseTemplate(src, user)
		if err != nil {
			v.fail("NAMING_CONVENTION."+k, src, "", err)
			continue
		}
		// The stream captures <SUBJECT_PREFIX>.>, and the NATS sink
		// requires every template to start with the prefix token.
		if p := t.parts; len(p) < 2 || p[0].Token != TokenPrefix || !strings.HasPrefix(p[1].Literal, ".") {
			v.fail("NAMING_CONVENTION."+k, src, `a template starting with "%(prefix)s."`,
				fmt.Errorf("subjects must lie under SUBJECT_PREFIX, which the stream captures as <prefix>.>"))
		}
	}
	v.distinctSubjects(user)
}

// distinctSubjects refuses templates that let two events share a subject
// (the README's "Subjects and events": no two tables, and no two ops,
// share one): each
// template a published phase uses must hold what checkSubjectTemplate
// asks, and two published phases must never render the same subject.
func (v *validator) distinctSubjects(userNames []string) {
	nc := v.c.NamingConvention
	var phases []string // published, in publishing order
	if slices.Contains(v.c.Signals, "before_commit") {
		phases = append(phases, "before_commit")
	}
	if slices.Contains(v.c.Signals, "after_commit") {
		phases = append(phases, "after_commit")
	}
	if slices.Contains(v.c.Signals, "before_commit") {
		phases = append(phases, "rollback") // retractions go with before_commit
	}
	type use struct {
		key, src string
		t        Template
	}
	uses := make(map[string]use, len(phases))
	serves := make(map[string][]string) // template key -> phases using it
	for _, ph := range phases {
		key := ph
		src, ok := nc[ph]
		if !ok {
			key = "subject"
			if src, ok = nc[key]; !ok {
				src = DefaultSubjectTemplate
			}
		}
		t, err := ParseTemplate(src, userNames)
		if err != nil {
			continue // reported by namingConvention
		}
		uses[ph] = use{key, src, t}
		serves[key] = append(serves[key], ph)
	}
	needBind := v.trackedBinds() > 1
	bad := make(map[string]bool)
	for _, ph := range phases {
		u, ok := uses[ph]
		if !ok || bad[u.key] || serves[u.key][0] != ph {
			continue // reported, or checked for an earlier phase
		}
		needs := subjectNeeds{bind: needBind, changes: slices.ContainsFunc(serves[u.key], func(p string) bool { return p != "rollback" })}
		if err := checkSubjectTemplate(u.t, needs); err != nil {
			bad[u.key] = true
			v.fail("NAMING_CONVENTION."+u.key, u.src, "", err)
		}
	}
	user := v.c.UserTokens()
	control := controlTokens(v.c.SubjectPrefix)
	for _, ph := range phases {
		u, ok := uses[ph]
		if !ok || bad[u.key] || !tokensMeet(phaseTokens(u.t, ph, v.c.SubjectPrefix, user), control) {
			continue
		}
		bad[u.key] = true
		v.fail("NAMING_CONVENTION."+u.key, u.src, "",
			fmt.Errorf("it renders the subject of snapshot lifecycle events, %s.control.<bind>.snapshot, for %s events of op snapshot; put %%(signal)s in the template (as the default does), or another literal than \"control\" at that place", v.c.SubjectPrefix, ph))
	}
	for i, pa := range phases {
		for _, pb := range phases[i+1:] {
			a, okA := uses[pa]
			b, okB := uses[pb]
			if !okA || !okB || bad[a.key] || bad[b.key] ||
				phasesApart(a.t, pa, b.t, pb, v.c.SubjectPrefix, user) {
				continue
			}
			bad[b.key] = true
			what := fmt.Sprintf("it renders the same subjects for %s events as", pb)
			if a.key == b.key {
				what += fmt.Sprintf(" for %s events", pa)
			} else {
				what += fmt.Sprintf(" NAMING_CONVENTION.%s for %s events", a.key, pa)
			}
			v.fail("NAMING_CONVENTION."+b.key, b.src, "",
				fmt.Errorf("%s, so a subscriber cannot tell the phases apart; put %%(signal)s in the template (as the default does), or give each phase a different literal token at the same place", what))
		}
	}
}

// trackedBinds counts the binds that will publish: DATABASE_URI's and every
// BINDS entry whose track is not false (a BINDS.default without a URI only
// gives DATABASE_URI's bind options).
func (v *validator) trackedBinds() int {
	tracked := make(map[string]bool)
	if v.c.DatabaseURI != "" {
		tracked[DefaultBind] = true
	}
	for k, b := range v.c.Binds {
		tracked[k] = b.Track == nil || *b.Track
	}
	n := 0
	for _, t := range tracked {
		if t {
			n++
		}
	}
	return n
}

func (v *validator) natsURL() {
	if v.c.NATSURL == "" {
		return
	}
	const allowed = "nats://host:port (or tls://, ws://, wss://, or host:port), comma-separated"
	for u := range strings.SplitSeq(v.c.NATSURL, ",") {
		u = strings.TrimSpace(u)
		rest := u
		if scheme, r, ok := strings.Cut(u, "://"); ok {
			switch strings.ToLower(scheme) {
			case "nats", "tls", "ws", "wss":
			default:
				v.fail("NATS_URL", redactUserinfo(v.c.NATSURL), allowed, fmt.Errorf("unknown scheme %q", scheme))
				return
			}
			rest = r
		}
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			rest = rest[at+1:]
		}
		if rest == "" || strings.IndexFunc(u, unicode.IsSpace) >= 0 {
			v.fail("NATS_URL", redactUserinfo(v.c.NATSURL), allowed, fmt.Errorf("no host"))
			return
		}
	}
}

// isSubjectPrefix: dot-separated tokens of [A-Za-z0-9_-].
func isSubjectPrefix(s string) bool {
	if s == "" {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if !isNameByte(tok[i]) {
				return false
			}
		}
	}
	return true
}

func isNameByte(c byte) bool {
	return c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// isBucketName: ^[a-zA-Z0-9_-]+$.
func isBucketName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

// checkStreamName applies the JetStream rules for stream names.
func checkStreamName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty")
	case len(s) > 255:
		return fmt.Errorf("longer than 255 bytes")
	case !utf8.ValidString(s):
		return fmt.Errorf("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(".*>/\\", r) {
			return fmt.Errorf("holds %q", r)
		}
	}
	return nil
}

// checkHostPort accepts host:port with a numeric port 0..65535 (an empty
// host means every interface).
// IsLoopbackHost reports whether host, from a host:port, names the
// loopback interface: "localhost" or a loopback IP address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("not host:port")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || !allDigits(port) {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}
