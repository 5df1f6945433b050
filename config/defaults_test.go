package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestDocumentedDefaults keeps the defaults the key table documents (its
// Default strings, which --help and the README show) equal to the ones
// Default applies: each documented default, read as the key's value, gives
// Default's value, and Default sets nothing that is not documented. The
// keys whose documented default is no value of theirs are listed with what
// holds instead.
func TestDocumentedDefaults(t *testing.T) {
	want := Default()
	elsewhere := map[string]func(t *testing.T, doc string){
		"RECORD_QUERIES": func(t *testing.T, doc string) {
			on := Config{Testing: true}
			if doc != "DEBUG or TESTING" || want.RecordQueries != nil || !on.RecordQueriesEnabled() {
				t.Errorf("RECORD_QUERIES: documented %q, Default %v, on with TESTING %v", doc, want.RecordQueries, on.RecordQueriesEnabled())
			}
		},
		"NAMING_CONVENTION": func(t *testing.T, doc string) {
			if doc != "subject = "+DefaultSubjectTemplate || !reflect.DeepEqual(want.NamingConvention, map[string]string{"subject": DefaultSubjectTemplate}) {
				t.Errorf("NAMING_CONVENTION: documented %q, Default %v", doc, want.NamingConvention)
			}
		},
		// Filled in by Load from the environment and DATA_DIR.
		"DATA_DIR": func(t *testing.T, doc string) {
			env := func(vars map[string]string) func(string) (string, bool) {
				return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
			}
			xdg := DefaultDataDir(env(map[string]string{"XDG_DATA_HOME": "/x", "HOME": "/h"}))
			home := DefaultDataDir(env(map[string]string{"HOME": "/h"}))
			if doc != "$XDG_DATA_HOME/trackerd, else ~/.local/share/trackerd" || xdg != "/x/trackerd" || home != "/h/.local/share/trackerd" {
				t.Errorf("DATA_DIR: documented %q; with XDG_DATA_HOME %q, with HOME only %q", doc, xdg, home)
			}
		},
		"NATS_STORE_DIR": func(t *testing.T, doc string) {
			if c := loadDataDir(t); doc != "DATA_DIR/nats" || c.NATSStoreDir != filepath.Join(c.DataDir, "nats") {
				t.Errorf("NATS_STORE_DIR: documented %q, loaded %q", doc, c.NATSStoreDir)
			}
		},
		"CHECKPOINT_FILE": func(t *testing.T, doc string) {
			c := loadDataDir(t)
			code := Config{DataDir: c.DataDir}
			if doc != "DATA_DIR/"+CheckpointFileName || c.CheckpointFile != filepath.Join(c.DataDir, CheckpointFileName) || code.CheckpointPath() != c.CheckpointFile {
				t.Errorf("CHECKPOINT_FILE: documented %q, loaded %q, CheckpointPath of a Config built in code %q", doc, c.CheckpointFile, code.CheckpointPath())
			}
		},
		// Resolved when trackerd runs, from HTTP_ADDR (cmd/trackerd).
		"DEBUG_ADDR": func(t *testing.T, doc string) {
			if want.DebugAddr != "" {
				t.Errorf("DEBUG_ADDR: Default %q, want unset (%s)", want.DebugAddr, doc)
			}
		},
		// Applied per bind and dialect by package binds (binds.DefaultPool,
		// whose test compares them with these).
		"POOL_SIZE":    func(*testing.T, string) {},
		"MAX_OVERFLOW": func(*testing.T, string) {},
		"POOL_TIMEOUT": func(*testing.T, string) {},
		"POOL_RECYCLE": func(*testing.T, string) {},
	}
	var got Config // what the documented defaults give
	for _, s := range specs() {
		if check, ok := elsewhere[s.Name]; ok {
			check(t, s.Default)
			continue
		}
		if s.Default == "" {
			continue // unset: got keeps the zero value
		}
		var p problems
		s.set(&state{c: &got}, field{key: s.Name, source: "its documented default", p: &p}, s.Default)
		if err := p.err(); err != nil {
			t.Errorf("%s's documented default %q is no value of the key: %v", s.Name, s.Default, err)
		}
	}
	got.NamingConvention = want.NamingConvention // checked above
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		f := gv.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if g, w := gv.Field(i).Interface(), wv.Field(i).Interface(); !reflect.DeepEqual(g, w) {
			t.Errorf("Config.%s: Default() has %#v, the documented default gives %#v", f.Name, w, g)
		}
	}
}

// loadDataDir loads the defaults with DATA_DIR set.
func loadDataDir(t *testing.T) *Config {
	t.Helper()
	c, err := Load(Options{Flags: map[string]string{"DATA_DIR": "/var/lib/trackerd"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
