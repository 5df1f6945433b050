package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// imageTag is the tag the image test builds; each run replaces it.
const imageTag = "trackerd-e2e:latest"

// docker runs the docker CLI and returns its standard output, failing the
// test with its output when it fails.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// TestImage builds the Dockerfile with the local base images
// (scripts/test-images.sh: tc-local/golang:<go version> and
// tc-local/distroless-static:nonroot) and runs the image against the test
// PostgreSQL and NATS on the host network: it runs as 65532, carries the
// version, revision and OCI labels, becomes healthy through `trackerd
// probe`, publishes a row's events, and stops on `docker stop` with exit 0.
func TestImage(t *testing.T) {
	pg := server(t, "TRACKERD_TEST_POSTGRES_URL")
	cli := dockerEngine(t)
	goImage := testImage(t, cli, "TRACKERD_TEST_GO_IMAGE", "tc-local/golang:"+strings.TrimPrefix(runtime.Version(), "go"))
	runtimeImage := testImage(t, cli, "TRACKERD_TEST_RUNTIME_IMAGE", "tc-local/distroless-static:nonroot")
	if _, err := exec.LookPath("docker"); err != nil {
		skipOrFail(t, "no docker CLI: %v", err)
	}
	revision := "unknown"
	if out, err := exec.Command("git", "-C", "..", "rev-parse", "HEAD").Output(); err == nil {
		revision = strings.TrimSpace(string(out))
	}

	// Build. The dependency layer is cached after the first build: a
	// build after a change to trackerd's code takes seconds.
	old, _ := exec.Command("docker", "image", "inspect", "-f", "{{.Id}}", imageTag).Output()
	began := time.Now()
	docker(t, "build", "-q", "-t", imageTag, "--build-arg", "GO_IMAGE="+goImage, "--build-arg", "RUNTIME_IMAGE="+runtimeImage,
		"--build-arg", "VERSION=v0.0.0-e2e", "--build-arg", "REVISION="+revision, "..")
	t.Logf("docker build: %v", time.Since(began).Round(time.Millisecond))
	if id := strings.TrimSpace(string(old)); id != "" && id != docker(t, "image", "inspect", "-f", "{{.Id}}", imageTag) {
		exec.Command("docker", "rmi", id).Run() // the previous build, now untagged
	}
	removeOldBuildStages(t)

	var img struct {
		Config struct {
			User        string
			Labels      map[string]string
			Healthcheck struct{ Test []string }
		}
	}
	if err := json.Unmarshal([]byte(docker(t, "image", "inspect", "-f", "{{json .}}", imageTag)), &img); err != nil {
		t.Fatal(err)
	}
	if img.Config.User != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532", img.Config.User)
	}
	if got := strings.Join(img.Config.Healthcheck.Test, " "); !strings.HasPrefix(got, "CMD /usr/local/bin/trackerd probe") {
		t.Errorf("health check %q, want CMD /usr/local/bin/trackerd probe", got)
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.version": "v0.0.0-e2e", "org.opencontainers.image.revision": revision,
		"org.opencontainers.image.source": "https://github.com/trackerd/trackerd", "org.opencontainers.image.title": "trackerd",
	} {
		if img.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, img.Config.Labels[k], v)
		}
	}
	short := revision
	if len(short) > 12 {
		short = short[:12]
	}
	if v := docker(t, "run", "--rm", imageTag, "version"); !strings.HasPrefix(v, "trackerd v0.0.0-e2e (revision "+short+", go") {
		t.Errorf("version in the image: %q", v)
	}

	// Run against the host's PostgreSQL and NATS.
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, note text"})
	if !strings.Contains(pg, "127.0.0.1") && !strings.Contains(pg, "localhost") {
		t.Logf("note: the container reaches %s through the host network", pg)
	}
	name := uniq("trackerd_e2e")
	args := []string{"run", "-d", "--name", name, "--network", "host", "--health-interval", "1s"}
	env := bs.env(t)
	delete(env, "TRACKER_DATA_DIR") // the image's volume
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	// The host's network: a port of the test's own, not the image's 9187.
	env["TRACKER_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for k, v := range env {
		args = append(args, "-e", k+"="+v)
	}
	docker(t, append(args, imageTag)...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", name).CombinedOutput()
			t.Logf("container logs:\n%s", out)
		}
		exec.Command("docker", "rm", "-f", "-v", name).Run()
	})
	state := func() (status, health string, exit int) {
		var s struct {
			Status   string
			ExitCode int
			Health   *struct{ Status string }
		}
		json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .State}}", name)), &s)
		if s.Health != nil {
			health = s.Health.Status
		}
		return s.Status, health, s.ExitCode
	}
	eventually(t, 60*time.Second, "the container to be healthy", func() bool {
		status, health, _ := state()
		if status != "running" {
			t.Fatalf("container %s: %s", name, status)
		}
		return health == "healthy"
	})
	pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %q.t VALUES (1, 'from the image test')`, b.schema))
	bs.waitCount(t, 2, 30*time.Second)
	for _, m := range bs.read(t) {
		if m.Change.Table != "t" || string(m.Change.After["note"]) != `"from the image test"` {
			t.Fatalf("event %s: %+v", m.Subject, m.Change)
		}
	}

	began = time.Now()
	docker(t, "stop", "-t", "30", name)
	status, _, code := state()
	if status != "exited" || code != 0 {
		t.Fatalf("after docker stop: %s, exit code %d; want exited, 0", status, code)
	}
	if logs, _ := exec.Command("docker", "logs", name).CombinedOutput(); !bytes.Contains(logs, []byte("stopped cleanly")) {
		t.Fatalf("trackerd did not stop cleanly:\n%s", logs)
	}
	t.Logf("docker stop: %v", time.Since(began).Round(time.Millisecond))
}

// removeOldBuildStages removes the build stages (untagged images) of
// earlier builds of the Dockerfile, all but the newest, which the next
// build may reuse. Their own parent layers go with them; the cached
// dependency layer stays, a parent of the newest build too.
func removeOldBuildStages(t testing.TB) {
	t.Helper()
	type stage struct{ id, created string }
	var stages []stage
	for _, id := range strings.Fields(docker(t, "images", "-q", "--no-trunc", "-f", "dangling=true")) {
		out, err := exec.Command("docker", "image", "inspect", "-f", "{{.Created}} {{json .ContainerConfig.Cmd}}", id).Output()
		if err != nil || !bytes.Contains(out, []byte("-o /out/trackerd ./cmd/trackerd")) {
			continue
		}
		created, _, _ := strings.Cut(string(out), " ")
		stages = append(stages, stage{id, created})
	}
	slices.SortFunc(stages, func(a, b stage) int { return strings.Compare(b.created, a.created) })
	for i, s := range stages {
		if i > 0 {
			exec.Command("docker", "rmi", s.id).Run()
		}
	}
}
