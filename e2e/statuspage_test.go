package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns the Chromium to drive: $TRACKERD_TEST_CHROMIUM, else
// Debian's /usr/bin/chromium (scripts/test.sh's preparation installs it),
// else chromium on PATH. Without one the test is skipped, except under
// CI=true, where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("TRACKERD_TEST_CHROMIUM"), "/usr/bin/chromium"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium (TRACKERD_TEST_CHROMIUM, /usr/bin/chromium): CI must test the status page in a real browser; scripts/test.sh's preparation installs Debian's chromium")
	}
	t.Skip("no Chromium: set TRACKERD_TEST_CHROMIUM, or install Debian's chromium (scripts/install-packages.sh), to test the status page in a real browser")
	return ""
}

// browser starts a headless Chromium and returns a chromedp context for one
// tab; cleanup closes it. The flags keep Chromium off the network (this
// machine's is closed) and out of the sandbox (the tests may run as root).
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1400, 700),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// artifactDir is where the browser tests leave their screenshots:
// $TRACKERD_ARTIFACTS, else the test's temporary directory. Never the
// repository.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("TRACKERD_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("TRACKERD_ARTIFACTS: %v", err)
		}
		return d
	}
	return t.TempDir()
}

// TestStatusPageInBrowser loads the status page of a real `trackerd run`
// (a PostgreSQL bind, the embedded NATS server) in headless Chromium: the
// bind's row says streaming with its position; after rows are inserted,
// the page shows the new events and the last event's time by itself,
// without being reloaded; it requests nothing but trackerd's own address
// and throws no error.
func TestStatusPageInBrowser(t *testing.T) {
	path := chromium(t)
	b := newPGBind(t, map[string]string{"orders": "id int PRIMARY KEY, note text"})
	name := uniq("e2epage")
	env := map[string]string{
		"TRACKER_DATA_DIR":            t.TempDir(),
		"TRACKER_HTTP_ADDR":           "127.0.0.1:0",
		"TRACKER_EMBEDDED_NATS_ADDR":  "127.0.0.1:0",
		"TRACKER_TRACK_MODIFICATIONS": "true",
		"TRACKER_STREAM_NAME":         strings.ToUpper(name),
		"TRACKER_SUBJECT_PREFIX":      name,
		"TRACKER_CHECKPOINT_INTERVAL": "50ms",
		"TRACKER_BINDS":               b.bindsJSON(t, "orders"),
	}
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	base := "http://" + p.waitLog(`HTTP endpoints listening" addr=http://(\S+)`, 10*time.Second)[1]

	ctx := browser(t, path)
	var (
		mu       sync.Mutex
		messages []string
	)
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				messages = append(messages, m.String())
				mu.Unlock()
			}
		}
	}()
	run := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		v, err := chromedp.Run(c, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	row := "#bind-" + b.key
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := chromedp.Do(c, chromedp.Navigate(base+"/"), chromedp.WaitVisible(row)); err != nil {
		t.Fatalf("load %s/: %v", base, err)
	}
	cancel()
	// A mark on the window: a reload would drop it.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.trackerdMark = "same page"`)); err != nil {
		t.Fatal(err)
	}
	// A new bind has a position once its first checkpoint is written, a
	// moment after it streams: the page shows it by itself.
	position := regexp.MustCompile(`^[0-9A-F]+/[0-9A-F]+ `)
	var text string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		text = run("read the bind's row", chromedp.Text(row))
		if position.MatchString(run("position", chromedp.Text(row+" .position"))) || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(text, "streaming") || !position.MatchString(run("position", chromedp.Text(row+" .position"))) {
		t.Fatalf("the bind's row does not say streaming with a position:\n%s", text)
	}
	if got := run("events", chromedp.Text(row+" .events")); got != "0" {
		t.Fatalf("events published before any insert: %q, want 0", got)
	}
	if got := run("last event", chromedp.Text(row+" .last-event")); got != "–" {
		t.Fatalf("last event before any insert: %q, want –", got)
	}
	if title := run("title", chromedp.Title()); title != "trackerd: every bind streaming" {
		t.Errorf("title %q", title)
	}

	db := pgAdmin(t)
	for i := 1; i <= 3; i++ {
		pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.orders VALUES (%d, 'row %d')`, b.schema, i, i))
	}
	// before_commit and after_commit of three rows: six events, shown
	// without the test reloading the page.
	deadline := time.Now().Add(30 * time.Second)
	var events, last string
	for {
		events = run("events", chromedp.Text(row+" .events"))
		last = run("last event", chromedp.Text(row+" .last-event"))
		if events == "6" && strings.HasSuffix(last, "ago") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if events != "6" || !regexp.MustCompile(`^(just now|\d+ s ago)$`).MatchString(last) {
		t.Fatalf("the page did not update by itself: events %q (want 6), last event %q (want seconds ago)", events, last)
	}
	attr, err := chromedp.Run(ctx, chromedp.AttributeValue(row+" .last-event time", "title"))
	if err != nil {
		t.Fatal(err)
	}
	if title := attr.Value; !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC$`).MatchString(title) {
		t.Errorf("last event's title %q: want the absolute time", title)
	}
	mark, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.trackerdMark || "reloaded"`))
	if err != nil || mark != "same page" {
		t.Fatalf("the page was reloaded (%q, %v): it must update in place", mark, err)
	}
	rate := run("events/s", chromedp.Text(row+" .rate"))
	if rate == "0" {
		t.Errorf("events/s is 0 after 6 events")
	}

	// Offline: nothing but trackerd's own address is requested.
	urls, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`performance.getEntriesByType("resource").map(e => e.name).concat([location.href])`))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, base+"/") {
			t.Errorf("the page requested %s, outside %s", u, base)
		}
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(artifactDir(t), "trackerd-status-page.png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)

	mu.Lock()
	defer mu.Unlock()
	if len(messages) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(messages, "\n"))
	}
}
