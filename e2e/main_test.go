// Package e2e holds black-box tests of the trackerd binary against real
// PostgreSQL, MariaDB and NATS servers. It imports nothing of the project: it
// builds ./cmd/trackerd once, runs it as a user would, writes SQL, and reads
// what arrives on NATS.
//
// Servers come from TRACKERD_TEST_POSTGRES_URL, TRACKERD_TEST_MYSQL_URL and
// TRACKERD_TEST_NATS_URL (what scripts/test.sh and CI set); for each one
// unset, when a Docker engine answers, TestMain starts the server in a
// container with testcontainers-go (see servers_test.go). A test whose
// server is still missing is skipped with a message naming the variable,
// except under CI=true, where a missing server fails the test. The fault
// tests always run their own servers in containers (containers_test.go).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the trackerd executable built by TestMain.
var binary string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "trackerd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "trackerd")
	build := exec.Command("go", "build", "-o", binary, "../cmd/trackerd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building trackerd:", err)
		return 1
	}
	defer startFallbackServers()()
	return m.Run()
}

// server returns the URL in the environment variable name, or skips the
// test (fails it under CI=true) when it is unset.
func server(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set: CI must run the e2e tests against real servers (scripts/test.sh sets it)", name)
		}
		t.Skipf("set %s to run this test against a real server (scripts/test.sh does)", name)
	}
	return v
}

// uniq returns a lower-case name unique to this test run.
func uniq(prefix string) string {
	return fmt.Sprintf("%s_%d_%04x", prefix, time.Now().UnixNano()%1e6, rand.IntN(1<<16))
}

// proc is a running trackerd.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// syncBuffer collects a process's output for later inspection.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs trackerd with args and exactly the environment env (plus PATH
// and HOME), logging its output to the test log when the test fails.
func start(t testing.TB, env map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{t: t, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start trackerd: %v", err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("trackerd %v output:\n%s", args, p.out.String())
		}
	})
	return p
}

// exitCode waits for the process (at most d) and returns its exit status.
func (p *proc) exitCode(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("trackerd did not exit within %v; output:\n%s", d, p.out.String())
	}
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// waitLog waits until the output matches re and returns the first match's
// submatches.
func (p *proc) waitLog(re string, d time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for {
		if m := rx.FindStringSubmatch(p.out.String()); m != nil {
			return m
		}
		select {
		case <-p.done:
			p.t.Fatalf("trackerd exited (%v) before logging %q; output:\n%s", p.err, re, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("trackerd did not log %q within %v; output:\n%s", re, d, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lines returns the output's lines.
func (p *proc) lines() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctxT returns a context bounded by d that ends with the test.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var _ = io.Discard
