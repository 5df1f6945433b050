package binds

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/config"
)

func ptr[T any](v T) *T { return &v }

func TestFromConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DatabaseURI = "postgresql://app:pw@db:5432/shop"
	cfg.Binds = map[string]config.BindConfig{
		"orders":  {URI: "mysql+pymysql://root:pw@mysql/orders"},
		"archive": {URI: "mariadb://root@maria:3307/archive"},
		"legacy":  {URI: "postgres://u@/legacy?host=/var/run/postgresql", Track: ptr(false)},
	}
	got, err := FromConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(got))
	for i, b := range got {
		keys[i] = b.Key
	}
	if strings.Join(keys, ",") != "archive,default,legacy,orders" {
		t.Fatalf("binds in order %v, want sorted by key", keys)
	}
	byKey := map[string]Bind{}
	for _, b := range got {
		byKey[b.Key] = b
	}

	pg := byKey["default"]
	if pg.Kind != Postgres || !pg.Track || pg.Slot != "trackerd_shop_default" || pg.Publication != "trackerd_default" ||
		pg.Heartbeat != 10*time.Second || pg.ServerID != 0 {
		t.Errorf("default bind: %+v", pg)
	}
	if want := (Pool{Size: 5, MaxOverflow: 10, Timeout: 30 * time.Second}); pg.Pool != want {
		t.Errorf("PostgreSQL pool %+v, want %+v", pg.Pool, want)
	}

	my := byKey["orders"]
	wantMy := Pool{Size: 10, MaxOverflow: 10, Timeout: 30 * time.Second, Recycle: 7200 * time.Second}
	if my.Kind != MySQL || my.Pool != wantMy || my.Slot != "" || my.Publication != "" || my.Heartbeat != 0 {
		t.Errorf("mysql bind: %+v", my)
	}
	if my.ServerID != DeriveServerID("orders", my.URI) || my.ServerID < 1_000_000 {
		t.Errorf("mysql server_id %d, want the derived %d", my.ServerID, DeriveServerID("orders", my.URI))
	}
	if ma := byKey["archive"]; ma.Kind != MySQL || ma.Pool != wantMy || ma.ServerID == my.ServerID {
		t.Errorf("mariadb bind: %+v", ma)
	}

	legacy := byKey["legacy"]
	if legacy.Track || legacy.Kind != Postgres || legacy.Slot != "trackerd_legacy_legacy" {
		t.Errorf("legacy bind: %+v", legacy)
	}
}

func TestDeriveServerIDStable(t *testing.T) {
	t.Parallel()
	uri := func(raw string) URI {
		u, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	a := uri("mysql://root:pw@db.example:3306/app_a")
	got := DeriveServerID("default", a)
	for range 3 {
		if again := DeriveServerID("default", uri("mysql://other:pw2@DB.example/app_a")); again != got {
			t.Fatalf("DeriveServerID changed: %d, then %d (same key, server and database)", got, again)
		}
	}
	// FNV-1a 64, written out: offset basis 14695981039346656037, prime
	// 1099511628211, over "trackerd", key, server, database, each ended by
	// a NUL. Pinned: a change here moves every MySQL reader to a new
	// server_id.
	h := uint64(14695981039346656037)
	for _, c := range []byte("trackerd\x00default\x00db.example:3306|\x00app_a\x00") {
		h ^= uint64(c)
		h *= 1099511628211
	}
	want := uint32(h%(4_294_967_295-1_000_000+1) + 1_000_000)
	if got != want || got < 1_000_000 {
		t.Errorf("DeriveServerID = %d, want %d", got, want)
	}
	// Operator review row 13b: two deployments with the default bind key on
	// one server must not collide by default.
	for _, other := range []struct {
		key string
		u   URI
	}{
		{"default", uri("mysql://root@db.example:3306/app_b")},
		{"default", uri("mysql://root@db2.example:3306/app_a")},
		{"default", uri("mysql://root@db.example:3307/app_a")},
		{"default", uri("mysql://root@/app_a?unix_socket=/run/mysqld.sock")},
		{"orders", a},
	} {
		if id := DeriveServerID(other.key, other.u); id == got || id < 1_000_000 {
			t.Errorf("DeriveServerID(%q, %s) = %d, beside %d", other.key, other.u, id, got)
		}
	}
}

func TestFromConfigPool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		global config.EngineOptions
		own    config.EngineOptions
		uri    string
		want   Pool
	}{
		{"dialect defaults", config.EngineOptions{}, config.EngineOptions{}, "mysql://h/db",
			Pool{10, 10, 30 * time.Second, 7200 * time.Second}},
		{"global beats dialect default", config.EngineOptions{PoolSize: ptr(7), PoolRecycle: ptr(-time.Second)}, config.EngineOptions{},
			"mysql://h/db", Pool{7, 10, 30 * time.Second, 0}},
		{"bind beats global", config.EngineOptions{PoolSize: ptr(7), MaxOverflow: ptr(-1)},
			config.EngineOptions{PoolSize: ptr(3), PoolTimeout: ptr(5 * time.Second)},
			"postgresql://h/db", Pool{3, -1, 5 * time.Second, 0}},
		{"recycle on postgres", config.EngineOptions{PoolRecycle: ptr(time.Hour)}, config.EngineOptions{},
			"postgresql://h/db", Pool{5, 10, 30 * time.Second, time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.Engine = tc.global
			cfg.Binds = map[string]config.BindConfig{"b": {URI: tc.uri, Engine: tc.own}}
			got, err := FromConfig(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Pool != tc.want {
				t.Errorf("pool %+v, want %+v", got[0].Pool, tc.want)
			}
		})
	}
}

func TestFromConfigNames(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", 80)
	tests := []struct {
		name, key, uri, slot, publication string
		heartbeat                         time.Duration
		wantSlot, wantPublication         string
		wantHeartbeat                     time.Duration
	}{
		{name: "sanitised", key: "Orders-EU", uri: "postgresql://u@h/Shop.Main",
			wantSlot: "trackerd_shop_main_orders_eu", wantPublication: "trackerd_orders_eu", wantHeartbeat: 10 * time.Second},
		{name: "cut to 63 bytes", key: long, uri: "postgresql://u@h/db",
			wantSlot: ("trackerd_db_" + long)[:63], wantPublication: ("trackerd_" + long)[:63], wantHeartbeat: 10 * time.Second},
		{name: "non-ASCII", key: "bestellungen_ü", uri: "postgresql://u@h/db",
			wantSlot: "trackerd_db_bestellungen__", wantPublication: "trackerd_bestellungen__", wantHeartbeat: 10 * time.Second},
		{name: "dbname option", key: "k", uri: "postgresql://alice@h?dbname=Shop",
			wantSlot: "trackerd_shop_k", wantPublication: "trackerd_k", wantHeartbeat: 10 * time.Second},
		{name: "configured", key: "k", uri: "postgresql://u@h/db", slot: "my_slot", publication: "My Publication", heartbeat: -1,
			wantSlot: "my_slot", wantPublication: "My Publication", wantHeartbeat: 0},
		{name: "heartbeat set", key: "k", uri: "postgresql://u@h/db", heartbeat: 3 * time.Second,
			wantSlot: "trackerd_db_k", wantPublication: "trackerd_k", wantHeartbeat: 3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.Binds = map[string]config.BindConfig{tc.key: {URI: tc.uri, Slot: tc.slot, Publication: tc.publication, Heartbeat: tc.heartbeat}}
			got, err := FromConfig(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			b := got[0]
			if b.Slot != tc.wantSlot || b.Publication != tc.wantPublication || b.Heartbeat != tc.wantHeartbeat {
				t.Errorf("slot %q publication %q heartbeat %v, want %q %q %v", b.Slot, b.Publication, b.Heartbeat,
					tc.wantSlot, tc.wantPublication, tc.wantHeartbeat)
			}
			if len(b.Slot) > 63 || len(b.Publication) > 63 {
				t.Errorf("names longer than 63 bytes")
			}
		})
	}
}

func TestFromConfigErrors(t *testing.T) {
	t.Parallel()
	const pw = "s3cr3t-passw0rd"
	tests := []struct {
		name     string
		uri      string
		binds    map[string]config.BindConfig
		wantKeys []string // every key the joined error must name
		wantText []string
		uriErr   bool
		noBinds  bool
	}{
		{name: "none configured", noBinds: true, wantText: []string{"set DATABASE_URI or BINDS"}},
		{name: "bad port names DATABASE_URI", uri: "postgresql://u:" + pw + "@h:70000/db",
			wantKeys: []string{"DATABASE_URI"}, wantText: []string{"port 70000 is out of range"}, uriErr: true},
		{name: "sqlite bind", binds: map[string]config.BindConfig{"cache": {URI: "sqlite:///cache.db"}},
			wantKeys: []string{"BINDS.cache.uri"}, wantText: []string{"SQLite has no replication stream"}, uriErr: true},
		{name: "every problem at once", binds: map[string]config.BindConfig{
			"a": {URI: "oracle://u:" + pw + "@h/db"},
			"b": {URI: "postgresql://u:" + pw + "@h/db", Slot: "Bad-Slot", ServerID: 7},
			"c": {URI: "mysql://u:" + pw + "@h/db", Streaming: true, Slot: "s", Publication: "p"},
			"d": {URI: "postgresql://u:" + pw + "@h/db", Tables: []string{"ok", " "}, Publication: strings.Repeat("p", 64)},
		}, wantKeys: []string{"BINDS.a.uri", "BINDS.b.slot", "BINDS.b.server_id", "BINDS.c.streaming", "BINDS.c.slot",
			"BINDS.c.publication", "BINDS.d.tables", "BINDS.d.publication"},
			wantText: []string{"only PostgreSQL streams in-progress transactions", `dialect "oracle" is not supported`}, uriErr: true},
		{name: "default twice", uri: "postgresql://h/db", binds: map[string]config.BindConfig{"default": {URI: "postgresql://h/db2"}},
			wantKeys: []string{"BINDS.default.uri"}, wantText: []string{"conflicts with DATABASE_URI", "BINDS.default without uri gives DATABASE_URI's bind its options"}},
		// Operator review row 2: no database means the user's, with a
		// permanent slot; refused.
		{name: "PostgreSQL without a database", uri: "postgresql://postgres:" + pw + "@127.0.0.1:5432",
			wantKeys: []string{"DATABASE_URI"}, wantText: []string{`invalid URI "postgresql://postgres:***@127.0.0.1:5432": names no database; add /dbname`}, uriErr: true},
		{name: "PostgreSQL with an empty path", binds: map[string]config.BindConfig{"b": {URI: "postgres://u@h/?sslmode=disable"}},
			wantKeys: []string{"BINDS.b.uri"}, wantText: []string{"names no database"}, uriErr: true},
		{name: "shared slot on one server", binds: map[string]config.BindConfig{
			"a": {URI: "postgresql://u:" + pw + "@h/db1", Slot: "same"},
			"b": {URI: "postgresql://u:" + pw + "@H:5432/db2", Slot: "same"},
			"c": {URI: "postgresql://u:" + pw + "@other/db2", Slot: "same"},
		}, wantKeys: []string{"BINDS.b.slot"}, wantText: []string{`bind "a" on the same server`}},
		{name: "shared server_id on one server", binds: map[string]config.BindConfig{
			"a": {URI: "mysql://h/db1", ServerID: 42},
			"b": {URI: "mysql://h:3306/db2", ServerID: 42},
		}, wantKeys: []string{"BINDS.b.server_id"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.DatabaseURI = tc.uri
			cfg.Binds = tc.binds
			got, err := FromConfig(&cfg)
			if err == nil {
				t.Fatalf("FromConfig = %+v, want an error", got)
			}
			msg := err.Error()
			for _, k := range tc.wantKeys {
				if !strings.Contains(msg, k) {
					t.Errorf("error does not name %s:\n%s", k, msg)
				}
			}
			for _, s := range tc.wantText {
				if !strings.Contains(msg, s) {
					t.Errorf("error does not say %q:\n%s", s, msg)
				}
			}
			if strings.Contains(msg, pw) {
				t.Errorf("error shows the password:\n%s", msg)
			}
			var ue *URIError
			if errors.As(err, &ue) != tc.uriErr {
				t.Errorf("errors.As(*URIError) = %v, want %v", !tc.uriErr, tc.uriErr)
			}
			if errors.Is(err, ErrNoBinds) != tc.noBinds {
				t.Errorf("errors.Is(ErrNoBinds) = %v, want %v", !tc.noBinds, tc.noBinds)
			}
			var fe *config.FieldError
			if !tc.uriErr && !errors.As(err, &fe) {
				t.Errorf("error is not a *config.FieldError: %v", err)
			}
		})
	}
}

// TestDefaultBindOptions: BINDS.default without a URI gives DATABASE_URI's
// bind its options (operator review row 13), instead of a conflict.
func TestDefaultBindOptions(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DatabaseURI = "mysql://root@h/app"
	cfg.Binds = map[string]config.BindConfig{
		"default": {ServerID: 4242002, Tables: []string{"orders"}, Engine: config.EngineOptions{PoolSize: ptr(2)}},
		"other":   {URI: "postgresql://h/other"},
	}
	got, err := FromConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d binds, want 2: %+v", len(got), got)
	}
	d := got[0]
	if d.Key != "default" || d.URI.String() != "mysql://root@h/app" || d.ServerID != 4242002 ||
		len(d.Tables) != 1 || d.Tables[0] != "orders" || d.Pool.Size != 2 {
		t.Errorf("default bind %+v", d)
	}
}

// TestNoBindsNamesWhereItLooked: the error says where trackerd looked
// (operator review row 11).
func TestNoBindsNamesWhereItLooked(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(config.Options{LookupEnv: func(k string) (string, bool) {
		v, ok := map[string]string{"FLASK_SQLALCHEMY_ECHO": "true"}[k]
		return v, ok
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = FromConfig(cfg)
	if !errors.Is(err, ErrNoBinds) || !strings.Contains(err.Error(), "looked at flag --database-uri, --binds; env TRACKER_DATABASE_URI") {
		t.Fatalf("got %v", err)
	}
}

// TestFromConfigSources checks that errors name where the value came from,
// through config.Load.
func TestFromConfigSources(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"TRACKER_DATABASE_URI": "postgresql://u:hunter2hunter2@h:0/db",
		"TRACKER_BINDS":        `{"orders": {"uri": "mysql://h/o", "slot": "x"}}`,
	}
	cfg, err := config.Load(config.Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = FromConfig(cfg)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`binds: DATABASE_URI (env TRACKER_DATABASE_URI): invalid URI "postgresql://u:***@h:0/db": port 0 is out of range`,
		`config: BINDS.orders.slot (env TRACKER_BINDS) = "x"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestTracks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		tables, exclude []string
		schema, table   string
		want            bool
	}{
		{"no filters", nil, nil, "public", "orders", true},
		{"bare table, any schema", []string{"orders"}, nil, "sales", "orders", true},
		{"schema.table match", []string{"public.orders"}, nil, "public", "orders", true},
		{"schema.table other schema", []string{"public.orders"}, nil, "sales", "orders", false},
		{"not listed", []string{"orders"}, nil, "public", "items", false},
		{"case-sensitive", []string{"Orders"}, nil, "public", "orders", false},
		{"excluded bare", nil, []string{"audit"}, "public", "audit", false},
		{"excluded qualified", nil, []string{"public.audit"}, "public", "audit", false},
		{"exclude wins over include", []string{"audit"}, []string{"public.audit"}, "public", "audit", false},
		{"exclude other schema", nil, []string{"public.audit"}, "log", "audit", true},
		{"table with a dot", []string{"s.a.b"}, nil, "s", "a.b", true},
		{"prefix is not a match", []string{"public.order"}, nil, "public", "orders", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := Bind{Tables: tc.tables, ExcludeTables: tc.exclude}
			if got := b.Tracks(tc.schema, tc.table); got != tc.want {
				t.Errorf("Tracks(%q, %q) = %v, want %v", tc.schema, tc.table, got, tc.want)
			}
		})
	}
}

func BenchmarkTracks(b *testing.B) {
	bind := Bind{Tables: []string{"public.orders", "items", "public.customers"}, ExcludeTables: []string{"audit"}}
	b.ReportAllocs()
	for b.Loop() {
		bind.Tracks("public", "customers")
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Parse("postgresql+psycopg2://scott:tiger%40x@db.example:5432/app?sslmode=require&application_name=trackerd")
	}
}

func TestPoolMaxOpen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    Pool
		want int
	}{
		{Pool{Size: 5, MaxOverflow: 10}, 15},
		{Pool{Size: 0, MaxOverflow: 0}, 1},
		{Pool{Size: 5, MaxOverflow: -1}, 0},
	} {
		if got := tc.p.MaxOpen(); got != tc.want {
			t.Errorf("%+v.MaxOpen() = %d, want %d", tc.p, got, tc.want)
		}
	}
}
