package binds

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/trackerd/trackerd/config"
)

// ErrNoBinds is wrapped by FromConfig's error when no bind is configured.
var ErrNoBinds = config.ErrNoBinds

// DefaultHeartbeat is the idle heartbeat interval of PostgreSQL binds that
// do not set one.
const DefaultHeartbeat = 10 * time.Second

// The server_id range derived ids fall in: above the small numbers people
// give their servers by hand.
const (
	minDerivedServerID = 1_000_000
	maxDerivedServerID = 4_294_967_295
)

// DefaultPool returns a kind's pool settings when nothing is configured:
// SQLAlchemy's QueuePool defaults (size 5, overflow 10, timeout 30s,
// recycle unlimited), and for MySQL/MariaDB Flask-SQLAlchemy 2.x's driver
// defaults (size 10, recycle 7200s), applied to mariadb:// too.
func DefaultPool(k Kind) Pool {
	p := Pool{Size: 5, MaxOverflow: 10, Timeout: 30 * time.Second}
	if k == MySQL {
		p.Size = 10
		p.Recycle = 7200 * time.Second
	}
	return p
}

// FromConfig resolves every configured bind: DATABASE_URI as the bind
// "default", and each BINDS entry. Binds come back sorted by key, including
// those configured with track = false (their Track is false).
//
// For each bind it parses the URI, picks the Kind from the dialect, and
// resolves the options:
//
//   - Track: the bind's track, true when unset;
//   - PostgreSQL: the URI must name its database (in the path, or a dbname
//     option): without one, libpq would follow the database named after the
//     user, and trackerd would leave a permanent slot there. Slot, default
//     trackerd_<database>_<key>, and Publication, default trackerd_<key>,
//     both lower-cased with every character outside [a-z0-9_] turned into
//     '_' and cut to 63 bytes; a configured slot must match
//     ^[a-z0-9_]{1,63}$, a configured publication be 1 to 63 bytes without
//     NUL; Heartbeat 0 becomes DefaultHeartbeat, negative 0 (off);
//   - MySQL/MariaDB: ServerID, when not configured, is derived from the
//     key, the server and the database (DeriveServerID), so it is stable
//     across restarts, never random, and differs between two deployments
//     on one server; slot, publication and streaming are refused
//     (PostgreSQL options); Heartbeat as configured, negative meaning 0
//     (off);
//   - Pool: the bind's own pool settings, else the global ones
//     (cfg.Engine), else DefaultPool for its kind; POOL_RECYCLE 0 or
//     negative means unlimited (0).
//
// Two binds on the same server may not share a slot (PostgreSQL) or a
// server_id (MySQL). A BINDS entry "default" without a URI holds the
// options of DATABASE_URI's bind; with a URI it conflicts with
// DATABASE_URI and is refused. With no bind at all the error wraps
// ErrNoBinds and says where the configuration was looked for.
//
// Every problem is reported, joined: *URIError for URIs (Key names the
// setting: "DATABASE_URI", "BINDS.orders.uri") and *config.FieldError for
// options ("BINDS.orders.slot"). No error holds a password.
func FromConfig(cfg *config.Config) ([]Bind, error) {
	if cfg == nil {
		return nil, &config.FieldError{Key: "DATABASE_URI", Err: ErrNoBinds}
	}
	def, hasDef := cfg.Binds[config.DefaultBind]
	var errs []error
	type entry struct {
		key    string
		uriKey string
		bc     config.BindConfig
	}
	var entries []entry
	if cfg.DatabaseURI != "" {
		switch {
		case hasDef && def.URI != "":
			errs = append(errs, &config.FieldError{Key: "BINDS.default.uri", Source: cfg.SourceOf("BINDS"),
				Err:     errors.New("conflicts with DATABASE_URI, which is the bind \"default\""),
				Allowed: "one of DATABASE_URI and BINDS.default.uri (BINDS.default without uri gives DATABASE_URI's bind its options)"})
		case hasDef:
			def.URI = cfg.DatabaseURI
			entries = append(entries, entry{config.DefaultBind, "DATABASE_URI", def})
		default:
			entries = append(entries, entry{config.DefaultBind, "DATABASE_URI", config.BindConfig{URI: cfg.DatabaseURI}})
		}
	}
	for key, bc := range cfg.Binds {
		if key == config.DefaultBind && cfg.DatabaseURI != "" {
			continue
		}
		entries = append(entries, entry{key, "BINDS." + key + ".uri", bc})
	}
	if len(entries) == 0 && len(errs) == 0 {
		return nil, cfg.NoBindsError()
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })

	binds := make([]Bind, 0, len(entries))
	for _, e := range entries {
		r := resolver{cfg: cfg, key: e.key, prefix: "BINDS." + e.key + "."}
		b, ok := r.resolve(e.uriKey, e.bc)
		errs = append(errs, r.errs...)
		if ok {
			binds = append(binds, b)
		}
	}
	errs = append(errs, checkShared(cfg, binds)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return binds, nil
}

// resolver resolves one bind and collects its problems.
type resolver struct {
	cfg    *config.Config
	key    string
	prefix string // "BINDS.<key>."
	errs   []error
}

func (r *resolver) fail(option, value, allowed string, err error) {
	r.errs = append(r.errs, &config.FieldError{Key: r.prefix + option, Value: value,
		Source: r.cfg.SourceOf("BINDS"), Allowed: allowed, Err: err})
}

func (r *resolver) resolve(uriKey string, bc config.BindConfig) (Bind, bool) {
	u, err := Parse(bc.URI)
	if err != nil {
		var ue *URIError
		if errors.As(err, &ue) {
			ue.Key = uriKey
			ue.Source = r.cfg.SourceOf(uriKey)
		}
		r.errs = append(r.errs, err)
		return Bind{}, false
	}
	b := Bind{
		Key:           r.key,
		URI:           u,
		Kind:          u.Kind(),
		Tables:        slices.Clone(bc.Tables),
		ExcludeTables: slices.Clone(bc.ExcludeTables),
		Track:         bc.Track == nil || *bc.Track,
		Streaming:     bc.Streaming,
		Snapshot:      SnapshotNever,
	}
	if bc.Snapshot != "" {
		b.Snapshot = SnapshotMode(bc.Snapshot)
	}
	for _, l := range []struct {
		name   string
		tables []string
	}{{"tables", b.Tables}, {"exclude_tables", b.ExcludeTables}} {
		for _, t := range l.tables {
			if strings.TrimSpace(t) == "" {
				r.fail(l.name, t, `"schema.table" or "table"`, errors.New("empty entry"))
			}
		}
	}

	switch b.Kind {
	case Postgres:
		db := PostgresDatabase(u)
		if db == "" {
			r.errs = append(r.errs, &URIError{Key: uriKey, Source: r.cfg.SourceOf(uriKey), URI: u.String(),
				Problem: "names no database",
				Hint:    "add /dbname, as in postgresql://user@host/app: without one PostgreSQL follows the database named after the user, and trackerd would create a permanent replication slot there"})
			return Bind{}, false
		}
		b.Slot = bc.Slot
		if b.Slot == "" {
			b.Slot = SanitizeName("trackerd_" + db + "_" + r.key)
		} else if !isSlotName(b.Slot) {
			r.fail("slot", b.Slot, "1 to 63 of a-z, 0-9 and _ (a PostgreSQL replication slot name)", nil)
		}
		b.Publication = bc.Publication
		if b.Publication == "" {
			b.Publication = SanitizeName("trackerd_" + r.key)
		} else if len(b.Publication) > 63 || strings.IndexByte(b.Publication, 0) >= 0 {
			r.fail("publication", b.Publication, "a PostgreSQL identifier of 1 to 63 bytes", nil)
		}
		if bc.ServerID != 0 {
			r.fail("server_id", fmt.Sprint(bc.ServerID), "no server_id on a PostgreSQL bind", errors.New("server_id is a MySQL/MariaDB option"))
		}
		switch {
		case bc.Heartbeat == 0:
			b.Heartbeat = DefaultHeartbeat
		case bc.Heartbeat > 0:
			b.Heartbeat = bc.Heartbeat
		}
	case MySQL:
		for _, o := range []struct{ name, value string }{{"slot", bc.Slot}, {"publication", bc.Publication}} {
			if o.value != "" {
				r.fail(o.name, o.value, "no "+o.name+" on a MySQL/MariaDB bind", fmt.Errorf("%s is a PostgreSQL option", o.name))
			}
		}
		if bc.Streaming {
			r.fail("streaming", "true", "false on a MySQL/MariaDB bind",
				errors.New("only PostgreSQL streams in-progress transactions; the binlog holds committed ones only"))
		}
		b.ServerID = bc.ServerID
		if b.ServerID == 0 {
			b.ServerID = DeriveServerID(r.key, u)
		}
		b.Heartbeat = max(bc.Heartbeat, 0)
	}

	b.Pool = resolvePool(b.Kind, r.cfg.Engine, bc.Engine)
	if b.Pool.Size < 0 {
		r.fail("pool_size", fmt.Sprint(b.Pool.Size), "0 or more", nil)
	}
	if b.Pool.MaxOverflow < -1 {
		r.fail("max_overflow", fmt.Sprint(b.Pool.MaxOverflow), "0 or more, or -1 for no limit", nil)
	}
	if b.Pool.Timeout < 0 {
		r.fail("pool_timeout", b.Pool.Timeout.String(), "0 or more seconds", nil)
	}
	return b, len(r.errs) == 0
}

// resolvePool applies the bind's settings over the global ones over the
// kind's defaults.
func resolvePool(k Kind, global, own config.EngineOptions) Pool {
	p := DefaultPool(k)
	for _, o := range []config.EngineOptions{global, own} {
		if o.PoolSize != nil {
			p.Size = *o.PoolSize
		}
		if o.MaxOverflow != nil {
			p.MaxOverflow = *o.MaxOverflow
		}
		if o.PoolTimeout != nil {
			p.Timeout = *o.PoolTimeout
		}
		if o.PoolRecycle != nil {
			p.Recycle = max(*o.PoolRecycle, 0)
		}
	}
	return p
}

// checkShared refuses slots and server_ids shared by two binds on one
// server.
func checkShared(cfg *config.Config, binds []Bind) []error {
	var errs []error
	type seen struct{ server, id string }
	owner := make(map[seen]string)
	for _, b := range binds {
		var s seen
		var option, value string
		switch b.Kind {
		case Postgres:
			s = seen{serverOf(b.URI, 5432), "slot/" + b.Slot}
			option, value = "slot", b.Slot
		case MySQL:
			s = seen{serverOf(b.URI, 3306), fmt.Sprint("server_id/", b.ServerID)}
			option, value = "server_id", fmt.Sprint(b.ServerID)
		default:
			continue
		}
		if first, dup := owner[s]; dup {
			errs = append(errs, &config.FieldError{Key: "BINDS." + b.Key + "." + option, Value: value,
				Source: cfg.SourceOf("BINDS"), Allowed: "a " + option + " of its own",
				Err: fmt.Errorf("bind %q on the same server has it too", first)})
			continue
		}
		owner[s] = b.Key
	}
	return errs
}

// serverOf identifies the server a URI points at, as well as the URI can
// tell.
func serverOf(u URI, defaultPort int) string {
	return strings.ToLower(u.HostPort(defaultPort)) + "|" + strings.Join(u.Query["host"], ",")
}

// SanitizeName lower-cases s, turns every character outside [a-z0-9_]
// into '_' and cuts the result to 63 bytes: a valid PostgreSQL slot name,
// or an unquoted identifier that needs no quoting.
func SanitizeName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		if b.Len() == 63 {
			break
		}
	}
	return b.String()
}

func isSlotName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// DeriveServerID returns the MySQL/MariaDB replica server_id of a bind that
// does not configure one: FNV-1a (64-bit) of the bind key, the server the
// URI points at (host:port, lower-cased, and the socket of a host option)
// and its database, mapped into [1000000, 4294967295]. It depends on the
// configuration only, so it is the same after every restart and never 0,
// and two deployments whose default binds follow two databases of one
// server get different ids, instead of taking each other for a stale
// reader.
func DeriveServerID(key string, u URI) uint32 {
	h := fnv.New64a()
	for _, part := range []string{"trackerd", key, serverOf(u, 3306), u.Database} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	const span = uint64(maxDerivedServerID - minDerivedServerID + 1)
	return uint32(h.Sum64()%span + minDerivedServerID)
}

// PostgresDatabase returns the database a PostgreSQL URI names: its last
// dbname option, which the connection string lists after the path and so
// wins, else its path, else "" (libpq would then take PGDATABASE or the
// user name).
func PostgresDatabase(u URI) string {
	if vs := u.Query["dbname"]; len(vs) > 0 && vs[len(vs)-1] != "" {
		return vs[len(vs)-1]
	}
	return u.Database
}

// Tracks reports whether the bind's table filters let a table through:
// when Tables is not empty the table must match one of its entries, and it
// must match no ExcludeTables entry. An entry "schema.table" matches that
// table in that schema; an entry without the schema matches the table in
// any schema. Matching is exact and case-sensitive. Track is not
// consulted.
func (b Bind) Tracks(schema, table string) bool {
	if len(b.Tables) > 0 && !matchTable(b.Tables, schema, table) {
		return false
	}
	return !matchTable(b.ExcludeTables, schema, table)
}

func matchTable(entries []string, schema, table string) bool {
	for _, e := range entries {
		if e == table {
			return true
		}
		if len(e) == len(schema)+1+len(table) && e[len(schema)] == '.' &&
			strings.HasPrefix(e, schema) && strings.HasSuffix(e, table) {
			return true
		}
	}
	return false
}
