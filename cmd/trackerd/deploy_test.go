package main

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
)

// TestComposeFile: deploy/compose.yaml parses, runs PostgreSQL with
// logical replication and NATS with JetStream, and gives trackerd an
// environment trackerd accepts: every TRACKER_ variable names a key, and
// the configuration loads with a bind.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string
			Command     []string
			Environment map[string]string
			DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
			Healthcheck *struct{ Test []string }
			Build       *struct{ Context string }
		}
		Volumes map[string]any
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	pg, nats, td := compose.Services["postgres"], compose.Services["nats"], compose.Services["trackerd"]
	if !slices.Contains(pg.Command, "wal_level=logical") || pg.Healthcheck == nil {
		t.Errorf("postgres: command %q, want wal_level=logical, and a health check", pg.Command)
	}
	if !slices.Contains(nats.Command, "-js") || nats.Healthcheck == nil {
		t.Errorf("nats: command %q, want -js, and a health check", nats.Command)
	}
	if td.Build == nil || td.Build.Context != ".." {
		t.Errorf("trackerd: built from %+v, want the repository (..)", td.Build)
	}
	for _, dep := range []string{"postgres", "nats"} {
		if td.DependsOn[dep].Condition != "service_healthy" {
			t.Errorf("trackerd does not wait for %s to be healthy", dep)
		}
	}
	var keys []string
	for _, k := range config.Keys() {
		keys = append(keys, k.Name)
	}
	for name := range td.Environment {
		key, ok := strings.CutPrefix(name, "TRACKER_")
		if !ok || !slices.Contains(keys, key) {
			t.Errorf("trackerd's environment sets %s, which is no TRACKER_<KEY>", name)
		}
	}
	cfg, err := config.Load(config.Options{LookupEnv: mapEnv(td.Environment)})
	if err != nil {
		t.Fatalf("trackerd's environment: %v", err)
	}
	if bs, err := binds.FromConfig(cfg); err != nil || len(bs) != 1 {
		t.Fatalf("trackerd's binds: %v, %v", bs, err)
	}
	if !cfg.Tracking() || !strings.Contains(cfg.NATSURL, "nats:4222") {
		t.Errorf("trackerd: tracking %v, NATS_URL %q", cfg.Tracking(), cfg.NATSURL)
	}
}

// TestDockerfile: the Dockerfile runs trackerd as 65532 with `trackerd
// probe` as its health check, stamps the version and revision, pulls
// nothing but its base images (no "# syntax=" line, which BuildKit pulls),
// and its dependency layer still compiles most of what trackerd links:
// every package it names is one trackerd imports, and together with their
// own dependencies they are at least 90% of trackerd's non-standard
// packages.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{
		"\nUSER 65532:65532\n",
		`CMD ["/usr/local/bin/trackerd", "probe"`,
		"-X main.version=${VERSION} -X main.revision=${REVISION}",
		`org.opencontainers.image.version="${VERSION}"`,
		`org.opencontainers.image.revision="${REVISION}"`,
		`org.opencontainers.image.source=`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
	if strings.Contains(df, "# syntax=") {
		t.Error("the Dockerfile has a # syntax= line: BuildKit would pull the frontend from Docker Hub")
	}

	m := regexp.MustCompile(`RUN go build -trimpath((?:\s*\\?\n?\s*[a-z][\w./-]+)+)\nCOPY \. \.`).FindStringSubmatch(df)
	if m == nil {
		t.Fatal("no dependency layer (RUN go build -trimpath <packages> before COPY . .)")
	}
	warm := strings.Fields(strings.ReplaceAll(m[1], "\\", " "))
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list trackerd's dependencies")
	}
	list := func(pkgs ...string) []string {
		t.Helper()
		args := append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}"}, pkgs...)
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			t.Fatalf("go %s: %v", strings.Join(args, " "), err)
		}
		return strings.Fields(string(out))
	}
	var deps []string
	for _, p := range list(".") {
		if !strings.HasPrefix(p, "github.com/trackerd/trackerd") {
			deps = append(deps, p)
		}
	}
	covered := list(warm...)
	for _, p := range warm {
		if !slices.Contains(deps, p) {
			t.Errorf("the Dockerfile compiles %s, which trackerd does not import", p)
		}
	}
	n := 0
	for _, p := range deps {
		if slices.Contains(covered, p) {
			n++
		}
	}
	if n*10 < len(deps)*9 {
		t.Errorf("the Dockerfile's dependency layer compiles %d of trackerd's %d dependency packages; add the missing ones' importers", n, len(deps))
	}
}

// TestGoInstallLine: the README's `go install` line names this command in
// the module go.mod declares, so that `go install ...@latest` builds it;
// and go.mod has no replace directive, which `go install pkg@version`
// refuses.
func TestGoInstallLine(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^module (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no module line")
	}
	if regexp.MustCompile(`(?m)^\s*replace\b`).Match(mod) {
		t.Error("go.mod has a replace directive: go install ...@latest would refuse to build")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "go install " + string(m[1]) + "/cmd/trackerd@latest"
	if !strings.Contains(string(readme), "\n"+want+"\n") {
		t.Errorf("README.md lacks the line %q", want)
	}
}
