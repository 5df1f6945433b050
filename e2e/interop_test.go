//go:build linux

// The nats CLI part opens a Linux pseudo-terminal (`nats stream view`
// refuses to page without one), hence the build constraint.

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	cenats "github.com/cloudevents/sdk-go/protocol/nats/v2"
	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	ceclient "github.com/cloudevents/sdk-go/v2/client"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	natsgo "github.com/nats-io/nats.go"
)

// natsCLI finds the nats command-line tool (github.com/nats-io/natscli,
// which scripts/install-tools.sh installs): NATS_CLI_BIN, PATH, or
// $(go env GOPATH)/bin/nats. Without it the test is skipped, or fails
// under CI=true.
func natsCLI(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NATS_CLI_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			if p := filepath.Join(dir, "bin", "nats"); fileExists(p) {
				return p
			}
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no nats CLI: run scripts/install-tools.sh (go install github.com/nats-io/natscli/nats@v0.5.0) or set NATS_CLI_BIN")
	}
	t.Skip("no nats CLI: run scripts/install-tools.sh, or set NATS_CLI_BIN, to run the nats CLI interop test")
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// cliEnv is the nats CLI's environment: no user contexts (a HOME of its
// own), nothing else from ours but PATH.
func cliEnv(t testing.TB) []string {
	home := t.TempDir()
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
}

// ceReceived collects what an sdk-go client receives.
type ceReceived struct {
	mu     sync.Mutex
	events []cloudevents.Event
}

func (r *ceReceived) add(e cloudevents.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *ceReceived) get() []cloudevents.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// startCE runs an sdk-go client on protocol p until the test ends.
func startCE(t *testing.T, p any) *ceReceived {
	t.Helper()
	c, err := ceclient.New(p)
	if err != nil {
		t.Fatal(err)
	}
	r := &ceReceived{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.StartReceiver(ctx, r.add); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("sdk-go StartReceiver: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// dumpRecord is one message as `nats sub --dump=-` writes it.
type dumpRecord struct {
	Subject string
	Reply   string
	Header  natsgo.Header
	Data    []byte
}

// parseDump splits `nats sub --dump=-` output: JSON records ended by NUL.
func parseDump(t testing.TB, out []byte) []dumpRecord {
	t.Helper()
	var recs []dumpRecord
	for _, chunk := range bytes.Split(out, []byte{0}) {
		chunk = bytes.TrimSpace(chunk)
		if len(chunk) == 0 {
			continue
		}
		var r dumpRecord
		if err := json.Unmarshal(chunk, &r); err != nil {
			t.Fatalf("nats sub --dump output: %v\n%s", err, chunk)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestInteropCloudEventsAndNATSCLI runs trackerd over PostgreSQL and reads
// its events with other software: sdk-go's core-NATS and JetStream
// consumers and the nats CLI's `nats sub` and `nats stream view`. Each must
// get every event unchanged — every attribute, extension and data byte as
// stored in the stream, and the headers.
func TestInteropCloudEventsAndNATSCLI(t *testing.T) {
	cli := natsCLI(t)
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"things": `id int PRIMARY KEY, name text, price numeric(12,2), big bigint,
		doc jsonb, at timestamptz, raw bytea, flag bool`})

	// Core-NATS readers subscribe before anything is published.
	pattern := bs.prefix + ".>"
	coreConn, err := natsgo.Connect(bs.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(coreConn.Close)
	core, err := cenats.NewConsumerFromConn(coreConn, pattern)
	if err != nil {
		t.Fatal(err)
	}
	coreGot := startCE(t, core)
	eventually(t, 10*time.Second, "sdk-go's core-NATS consumer to subscribe", func() bool {
		return coreConn.NumSubscriptions() > 0 && coreConn.Flush() == nil
	})
	syncSubj := bs.prefix + "_sync"
	var subOut syncBuffer
	sub := exec.Command(cli, "--server", bs.url, "sub", pattern, syncSubj, "--dump=-")
	sub.Env, sub.Stdout, sub.Stderr = cliEnv(t), &subOut, &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Process.Kill(); sub.Wait() })
	eventually(t, 20*time.Second, "nats sub to subscribe", func() bool {
		bs.nc.Publish(syncSubj, []byte("sync"))
		bs.nc.Flush()
		time.Sleep(50 * time.Millisecond)
		return strings.Contains(subOut.String(), `"Subject":"`+syncSubj+`"`)
	})

	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "things")
	p := start(t, env, "run")
	p.waitLog(`msg=streaming`, 60*time.Second)
	db := pgAdmin(t)
	tbl := fmt.Sprintf("%q.things", b.schema)
	pgExec(t, db, "BEGIN; "+
		"INSERT INTO "+tbl+` VALUES (1, 'héllo "q" <&> `+"\u2028"+` tab	end', 12.50, 9007199254740993, '{"a":[1,2.5,null],"b":{"c":"d"}}', '2026-05-01T12:34:56.789012Z', '\xdeadbeef', true);`+
		"INSERT INTO "+tbl+" VALUES (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL); COMMIT")
	pgExec(t, db, "UPDATE "+tbl+" SET name = 'second', price = price + 1 WHERE id = 1")
	pgExec(t, db, "DELETE FROM "+tbl+" WHERE id = 2")
	const n = 8 // 4 changes, 2 phases
	bs.waitCount(t, n, 30*time.Second)
	stored := bs.read(t)

	// The JetStream consumer reads the stored stream from its start.
	jsConn, err := natsgo.Connect(bs.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jsConn.Close)
	jsc, err := cejs.NewConsumerFromConn(jsConn, bs.stream, pattern, nil, []natsgo.SubOpt{natsgo.DeliverAll(), natsgo.AckExplicit()})
	if err != nil {
		t.Fatal(err)
	}
	jsGot := startCE(t, jsc)

	byID := map[string]msg{}
	for _, m := range stored {
		byID[m.Event.ID()] = m
	}
	for name, r := range map[string]*ceReceived{"sdk-go protocol/nats": coreGot, "sdk-go protocol/nats_jetstream": jsGot} {
		eventually(t, 20*time.Second, fmt.Sprintf("%s to receive %d events", name, n), func() bool { return len(r.get()) >= n })
		got := r.get()
		if len(got) != n {
			t.Fatalf("%s received %d events, want %d", name, len(got), n)
		}
		for _, e := range got {
			m, ok := byID[e.ID()]
			if !ok {
				t.Fatalf("%s received event %q, which is not in the stream", name, e.ID())
			}
			checkSameEvent(t, name, e, m.Data)
		}
	}

	// nats sub: subject, headers and data bytes as stored.
	eventually(t, 20*time.Second, "nats sub to dump every event", func() bool {
		c := 0
		for _, r := range parseDump(t, []byte(subOut.String())) {
			if r.Subject != syncSubj {
				c++
			}
		}
		return c >= n
	})
	var dumped []dumpRecord
	for _, r := range parseDump(t, []byte(subOut.String())) {
		if r.Subject != syncSubj {
			dumped = append(dumped, r)
		}
	}
	if len(dumped) != n {
		t.Fatalf("nats sub dumped %d events, want %d", len(dumped), n)
	}
	for i, r := range dumped {
		m := stored[i] // one bind, one connection: core NATS keeps the order
		if r.Subject != m.Subject || !bytes.Equal(r.Data, m.Data) {
			t.Fatalf("nats sub message %d: subject %s, data\n%s\nwant %s\n%s", i, r.Subject, r.Data, m.Subject, m.Data)
		}
		if r.Header.Get("Nats-Msg-Id") != m.Event.ID() || r.Header.Get("Content-Type") != "application/cloudevents+json" {
			t.Fatalf("nats sub message %d headers: %v", i, r.Header)
		}
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "ce-") {
				t.Fatalf("nats sub message %d has a binary-mode header %s: sdk-go would read it in binary mode", i, k)
			}
		}
	}

	// nats stream view --raw: the stored data, in stream order.
	out := runInPTY(t, cli, []string{"--server", bs.url, "stream", "view", bs.stream, "25", "--raw"}, cliEnv(t), 30*time.Second)
	var viewed []string
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		if strings.HasPrefix(l, "{") {
			viewed = append(viewed, l)
		}
	}
	if len(viewed) != n {
		t.Fatalf("nats stream view printed %d events, want %d:\n%s", len(viewed), n, out)
	}
	for i, l := range viewed {
		if l != string(stored[i].Data) {
			t.Fatalf("nats stream view event %d:\n%s\nwant\n%s", i, l, stored[i].Data)
		}
	}
	p.signal(syscall.SIGINT)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("trackerd run: exit %d after SIGINT", code)
	}
}

// checkSameEvent compares an event sdk-go received with the stored
// CloudEvent JSON: every attribute and extension, the data bytes, and
// sdk-go's own encoding of what it read.
func checkSameEvent(t *testing.T, who string, e cloudevents.Event, stored []byte) {
	t.Helper()
	var attrs map[string]json.RawMessage
	if err := json.Unmarshal(stored, &attrs); err != nil {
		t.Fatal(err)
	}
	str := func(name string) string {
		var s string
		if raw, ok := attrs[name]; ok {
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("stored attribute %s is not a string: %s", name, raw)
			}
		}
		return s
	}
	got := map[string]string{
		"specversion": e.SpecVersion(), "id": e.ID(), "source": e.Source(), "type": e.Type(),
		"subject": e.Subject(), "datacontenttype": e.DataContentType(),
	}
	if !e.Time().IsZero() {
		got["time"] = e.Time().UTC().Format(time.RFC3339Nano)
	}
	for k, v := range e.Extensions() {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("%s: extension %s is a %T, not a string", who, k, v)
		}
		got[k] = s
	}
	for name, raw := range attrs {
		if name == "data" {
			if !bytes.Equal(e.Data(), raw) {
				t.Fatalf("%s: event %s data\n%s\nwant\n%s", who, e.ID(), e.Data(), raw)
			}
			continue
		}
		if got[name] != str(name) {
			t.Fatalf("%s: event %s attribute %s = %q, stored %q", who, e.ID(), name, got[name], str(name))
		}
		delete(got, name)
	}
	if len(got) != 0 {
		t.Fatalf("%s: event %s has attributes the stored event has not: %v", who, e.ID(), got)
	}
	if enc, err := e.MarshalJSON(); err != nil || !bytes.Equal(enc, stored) {
		t.Fatalf("%s: event %s re-encodes as\n%s\nstored\n%s (%v)", who, e.ID(), enc, stored, err)
	}
}

// runInPTY runs a command on a pseudo-terminal of its own (`nats stream
// view` refuses to page without one) and returns what it wrote there.
func runInPTY(t *testing.T, name string, args, env []string, d time.Duration) string {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	defer master.Close()
	ioctl := func(f *os.File, req uintptr, arg unsafe.Pointer) {
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, uintptr(arg)); e != 0 {
			t.Fatalf("ioctl %#x: %v", req, e)
		}
	}
	var unlock int32
	ioctl(master, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock))
	var ptn uint32
	ioctl(master, syscall.TIOCGPTN, unsafe.Pointer(&ptn))
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", ptn), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ws := struct{ rows, cols, x, y uint16 }{50, 400, 0, 0}
	ioctl(tty, syscall.TIOCSWINSZ, unsafe.Pointer(&ws))
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var out bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&out, master); close(read) }() // ends with EIO once the command exits
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		<-read
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
		}
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %v did not finish within %v", name, args, d)
	}
	return out.String()
}
