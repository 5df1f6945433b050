package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// runCLI runs the program with args and an environment holding only HOME.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(context.Background(), args, mapEnv(map[string]string{"HOME": t.TempDir()}), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestMistakesAreOneLine: a mistyped flag or command is one line on
// stderr, with the closest name when there is one, and exit status 2
// (operator review rows 17 and 17b).
func TestMistakesAreOneLine(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--databse-uri", "x"}, "trackerd: unknown flag --databse-uri; did you mean --database-uri?"},
		{[]string{"run", "-databse-uri=x"}, "trackerd: unknown flag --databse-uri; did you mean --database-uri?"},
		{[]string{"check", "--nats-ulr", "nats://x"}, "trackerd: unknown flag --nats-ulr; did you mean --nats-url?"},
		{[]string{"tail", "--pretyy"}, "trackerd: unknown flag --pretyy; did you mean --pretty?"},
		{[]string{"tail", "--until-ned"}, "trackerd: unknown flag --until-ned; did you mean --until-end?"},
		{[]string{"probe", "--adr", "x"}, "trackerd: unknown flag --adr; did you mean --addr?"},
		{[]string{"run", "--frobnicate"}, "trackerd: unknown flag --frobnicate; see trackerd help run"},
		{[]string{"tail", "-n"}, "trackerd: flag -n needs a value (N)"},
		{[]string{"tail", "-n", "many"}, `trackerd: invalid value "many" for -n: parse error`},
		{[]string{"run", "---x"}, `trackerd: bad flag syntax "---x"; see trackerd help run`},
		{[]string{"rnu"}, `trackerd: unknown command "rnu"; did you mean run?`},
		{[]string{"help", "tial"}, `trackerd: unknown command "tial"; did you mean tail?`},
		{[]string{"frobnicate"}, `trackerd: unknown command "frobnicate"; the commands are run, check, teardown, reset, tail, backfill, status, probe, version, help (see trackerd help)`},
		{[]string{"--database-uri", "x"}, "trackerd: unknown flag --database-uri: flags follow a command, as in trackerd run --database-uri (see trackerd help)"},
		{[]string{"run", "extra"}, `trackerd: run takes no arguments, got ["extra"]`},
		{[]string{"version", "--json"}, "trackerd: unknown flag --json; see trackerd help version"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			if code != exitUsage || out != "" || errOut != tc.want+"\n" {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and the one line:\n%s", code, out, errOut, tc.want)
			}
		})
	}
}

// TestHelp: `trackerd help CMD` is `trackerd CMD --help`, on stdout, exit
// 0; run's help lists every key once, as --kebab-case with its value and
// TRACKER_ variable, under the three groups, within 80 columns.
func TestHelp(t *testing.T) {
	for _, cmd := range commandNames() {
		code, viaHelp, errOut := runCLI(t, "help", cmd)
		if cmd == "help" {
			cmd = "<command>" // the commands' list
		}
		if code != exitOK || errOut != "" || !strings.HasPrefix(viaHelp, "Usage: trackerd "+cmd) {
			t.Fatalf("help %s: exit %d, stderr %q, stdout:\n%s", cmd, code, errOut, viaHelp)
		}
		for _, h := range []string{"--help", "-h", "-help"} {
			if cmd == "<command>" {
				cmd = ""
			}
			if code, out, _ := runCLI(t, strings.Fields(cmd+" "+h)...); code != exitOK || out != viaHelp {
				t.Errorf("%s %s: exit %d, and not the output of help %s:\n%s", cmd, h, code, cmd, out)
			}
		}
		for l := range strings.SplitSeq(viaHelp, "\n") {
			if len(l) > helpWidth {
				t.Errorf("help %s: line of %d columns: %q", cmd, len(l), l)
			}
		}
	}

	_, out, _ := runCLI(t, "help", "run")
	for _, k := range config.Keys() {
		want := "  --" + k.Flag()
		if k.Type != "bool" {
			want += " " + strings.ToUpper(k.Type)
		}
		want += "  [$TRACKER_" + k.Name
		if n := strings.Count(out, "\n"+want); n != 1 {
			t.Errorf("run's help has %d lines starting %q, want 1", n, want)
		}
	}
	if regexp.MustCompile(`(?m)^\s+-[a-z][a-z-]+`).MatchString(out) {
		t.Errorf("run's help shows a long flag with one dash:\n%s", out)
	}
	groups := []string{"\nFlask-SQLAlchemy keys:\n", "\ntrackerd keys:\n", "\nNATS connection:\n"}
	at := make([]int, len(groups))
	for i, g := range groups {
		if at[i] = strings.Index(out, g); at[i] < 0 {
			t.Fatalf("run's help lacks the group %q", g)
		}
	}
	if !slices.IsSorted(at) {
		t.Errorf("groups out of order: %v", at)
	}
	section := func(from int) string { return out[from:] }
	if s := section(at[2]); !strings.Contains(s, "--nats-url URL  [$TRACKER_NATS_URL, $NATS_URL]") || !strings.Contains(s, "--nats-tls-ca PATH") {
		t.Errorf("NATS connection group:\n%s", s)
	}
	if s := out[at[0]:at[1]]; !strings.Contains(s, "--database-uri URI  [$TRACKER_DATABASE_URI]") || strings.Contains(s, "--nats-url") {
		t.Errorf("Flask-SQLAlchemy group:\n%s", s)
	}

	// The top level.
	if code, out, _ := runCLI(t, "help"); code != exitOK || !strings.Contains(out, "  probe    ") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
	if code, out, errOut := runCLI(t); code != exitUsage || out != "" || !strings.HasPrefix(errOut, "Usage: trackerd <command>") {
		t.Errorf("no arguments: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, v := range []string{"-v", "-V", "--version", "version"} {
		if code, out, _ := runCLI(t, v); code != exitOK || !strings.HasPrefix(out, "trackerd ") || strings.Count(out, "\n") != 1 {
			t.Errorf("%s: exit %d, %q", v, code, out)
		}
	}
}

// TestParseArgs: GNU-style flags, one or two dashes, in any order with the
// arguments; "--" ends them.
func TestParseArgs(t *testing.T) {
	tests := []struct {
		args  []string
		want  string // n, v, s after parsing
		rest  []string
		isErr bool
	}{
		{[]string{"--s", "x", "-n", "3", "a"}, "3 false x", []string{"a"}, false},
		{[]string{"a", "--s=x", "b", "-v"}, "0 true x", []string{"a", "b"}, false},
		{[]string{"-v=false", "--n=4", "-s", "--"}, "4 false --", nil, false},
		{[]string{"--", "-n", "5"}, "0 false ", []string{"-n", "5"}, false},
		{[]string{"-", "--s", ""}, "0 false ", []string{"-"}, false},
		{[]string{"--s"}, "", nil, true},
		{[]string{"--v=maybe"}, "", nil, true},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		n := fs.Int("n", 0, "")
		v := fs.Bool("v", false, "")
		s := fs.String("s", "", "")
		rest, err := parseArgs(fs, "x", tc.args)
		if tc.isErr {
			if err == nil || !isConfigError(err) {
				t.Errorf("%q: err %v, want a usage error", tc.args, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if got := fmt.Sprintf("%d %v %s", *n, *v, *s); got != tc.want || !slices.Equal(rest, tc.rest) {
			t.Errorf("%q: flags %q, rest %q; want %q, %q", tc.args, got, rest, tc.want, tc.rest)
		}
	}
}

// TestClosest: near misses get a suggestion, other names none.
func TestClosest(t *testing.T) {
	names := []string{"database-uri", "binds", "nats-url", "n", "v"}
	for name, want := range map[string]string{
		"databse-uri": "database-uri", "DATABASE-URI": "database-uri", "bind": "binds", "nats-ulr": "nats-url",
		"x": "", "m": "", "frobnicate": "", "": "",
	} {
		if got := closest(name, names); got != want {
			t.Errorf("closest(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestWatchSignals: a second signal within repeatWindow is the same
// request; a later second one, or any third, exits 1.
func TestWatchSignals(t *testing.T) {
	tests := []struct {
		name  string
		gaps  []time.Duration // after the first signal, of each further one
		exits bool
	}{
		{"one signal", nil, false},
		{"twice at once, as under timeout", []time.Duration{0}, false},
		{"twice 50ms apart", []time.Duration{50 * time.Millisecond}, false},
		{"twice just under the window", []time.Duration{repeatWindow - time.Millisecond}, false},
		{"twice, the second late", []time.Duration{repeatWindow}, true},
		{"three times at once", []time.Duration{0, 0}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu       sync.Mutex
				now      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				first    = now
				canceled = make(chan struct{})
				exited   = make(chan int, 1)
				stderr   trackertest.Buffer
			)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			sigs := make(chan os.Signal)
			go watchSignals(sigs, func() { close(canceled) }, func(code int) { exited <- code }, &stderr, clock)
			sigs <- syscall.SIGTERM
			<-canceled
			for _, gap := range tc.gaps {
				mu.Lock()
				now = first.Add(gap)
				mu.Unlock()
				sigs <- syscall.SIGTERM
			}
			select {
			case code := <-exited:
				if !tc.exits || code != exitFailure {
					t.Fatalf("exit(%d); want it to go on draining", code)
				}
				if !strings.Contains(stderr.String(), "exiting without waiting for the drain") {
					t.Fatalf("stderr: %q", stderr.String())
				}
			case <-time.After(100 * time.Millisecond):
				if tc.exits {
					t.Fatal("no exit")
				}
				if len(tc.gaps) > 0 && !strings.Contains(stderr.String(), "still draining") {
					t.Fatalf("stderr: %q", stderr.String())
				}
			}
		})
	}
}

func TestFormatVersion(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}
	tests := []struct {
		v, rev string
		bi     *debug.BuildInfo
		want   string
	}{
		{"v1.2.3", "fedcba9876543210", bi, "trackerd v1.2.3 (revision fedcba987654, go"},
		{"", "", bi, "trackerd devel (revision 0123456789ab+dirty, go"},
		{"", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "trackerd v0.4.0 (go"},
		{"", "", nil, "trackerd devel (go"},
		{"v1.0.0", "", nil, "trackerd v1.0.0 (go"},
	}
	for _, tc := range tests {
		if got := formatVersion(tc.v, tc.rev, tc.bi); !strings.HasPrefix(got, tc.want) {
			t.Errorf("formatVersion(%q, %q) = %q, want the prefix %q", tc.v, tc.rev, got, tc.want)
		}
	}
}
