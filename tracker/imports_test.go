package tracker_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsFollowTheDataFlow keeps the layout of DESIGN.md section 1: the
// tracker links no driver, and sources and sinks never import each other.
func TestImportsFollowTheDataFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for _, tc := range []struct {
		pkg       string
		forbidden []string
	}{
		{"github.com/trackerd/trackerd/tracker", []string{"github.com/jackc/", "github.com/nats-io/", "github.com/go-mysql-org/", "github.com/trackerd/trackerd/sources/", "github.com/trackerd/trackerd/sinks/"}},
		{"github.com/trackerd/trackerd/sources/postgres", []string{"github.com/trackerd/trackerd/sinks/", "github.com/nats-io/", "github.com/trackerd/trackerd/sources/mysql"}},
		{"github.com/trackerd/trackerd/sources/mysql", []string{"github.com/trackerd/trackerd/sinks/", "github.com/nats-io/", "github.com/trackerd/trackerd/sources/postgres"}},
		{"github.com/trackerd/trackerd/sinks/nats", []string{"github.com/trackerd/trackerd/sources/", "github.com/jackc/", "github.com/go-mysql-org/"}},
		{"github.com/trackerd/trackerd/binds", []string{"github.com/trackerd/trackerd/tracker"}},
		{"github.com/trackerd/trackerd/config", []string{"github.com/trackerd/trackerd/binds", "github.com/trackerd/trackerd/tracker"}},
	} {
		out, err := exec.Command("go", "list", "-deps", tc.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", tc.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range tc.forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", tc.pkg, dep)
				}
			}
		}
	}
}
