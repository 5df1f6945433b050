package tracker_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/trackerd/trackerd/"

// TestImportsFollowTheDataFlow keeps the layout of ARCHITECTURE.md, "The map": the
// tracker links no driver, sources and sinks never import each other, the
// consumer (changefeed) and the producer (sinks/nats) meet only in wire,
// and the wire format sits between the model and its transports.
func TestImportsFollowTheDataFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	deps := moduleDeps(t)
	// A rule ending in "/" forbids a tree; any other forbids one package
	// (and not its subpackages: tracker and config use wire/token, not
	// wire).
	for _, tc := range []struct {
		pkg       string
		forbidden []string
	}{
		{"tracker", []string{"github.com/jackc/", "github.com/nats-io/", "github.com/go-mysql-org/", mod + "sources/", mod + "sinks/", mod + "wire", mod + "changefeed"}},
		{"sources/postgres", []string{mod + "sinks/", "github.com/nats-io/", mod + "sources/mysql", mod + "wire", mod + "changefeed"}},
		{"sources/mysql", []string{mod + "sinks/", "github.com/nats-io/", mod + "sources/postgres", mod + "wire", mod + "changefeed"}},
		{"sinks/nats", []string{mod + "sources/", "github.com/jackc/", "github.com/go-mysql-org/", mod + "changefeed"}},
		{"changefeed", []string{mod + "sinks/", mod + "sources/", "github.com/jackc/", "github.com/go-mysql-org/"}},
		{"wire", []string{"github.com/nats-io/", "github.com/jackc/", "github.com/go-mysql-org/", mod + "sinks/", mod + "sources/", mod + "changefeed"}},
		{"binds", []string{mod + "tracker", mod + "wire"}},
		{"config", []string{mod + "binds", mod + "tracker", mod + "wire"}},
	} {
		got, ok := deps[mod+tc.pkg]
		if !ok {
			t.Fatalf("go list does not know %s", tc.pkg)
		}
		for _, dep := range got {
			for _, f := range tc.forbidden {
				if dep == f || strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", tc.pkg, dep)
				}
			}
		}
	}
	// wire/token is a leaf: the standard library only.
	for _, dep := range deps[mod+"wire/token"] {
		if strings.Contains(strings.SplitN(dep, "/", 2)[0], ".") {
			t.Errorf("wire/token depends on %s", dep)
		}
	}
	// Only the transports of the wire format, their consumers and the
	// programs that wire them up may import wire.
	mayUseWire := []string{"sinks/", "changefeed", "cmd/", "examples/", "internal/wiretest"}
	for pkg, got := range deps {
		rel := strings.TrimPrefix(pkg, mod)
		if rel == "wire" || !slices.Contains(got, mod+"wire") {
			continue
		}
		allowed := false
		for _, a := range mayUseWire {
			if rel == a || strings.HasSuffix(a, "/") && strings.HasPrefix(rel, a) {
				allowed = true
			}
		}
		if !allowed {
			t.Errorf("%s depends on wire: only %v may", rel, mayUseWire)
		}
	}
}

// moduleDeps returns every package of the module with its dependencies.
func moduleDeps(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 0 {
			deps[f[0]] = f[1:]
		}
	}
	return deps
}
