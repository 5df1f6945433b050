// Command trackerd follows databases through their replication streams and
// publishes every row change as CloudEvents on NATS, in two phases,
// before_commit and after_commit.
//
//	trackerd run     [--config FILE] [flags]   the daemon
//	trackerd check   [--config FILE] [flags]   is every bind's server, and NATS, ready?
//	trackerd teardown --bind KEY [--yes]       remove what trackerd made for a bind
//	trackerd reset   --bind KEY --to current   move a stuck bind to the server's current position
//	trackerd tail    [flags] [PATTERN]          print events as JSON lines
//	trackerd backfill [--bind KEY] [--table T ...] [--where SQL] [--wait] | --list | --cancel ID
//	                                           read existing rows again while streaming
//	trackerd status  [--addr H:P | --nats]     each bind of the running instances (--json)
//	trackerd probe   [--addr HOST:PORT]         is a running trackerd ready? (health checks)
//	trackerd version
//	trackerd help    [COMMAND]
//
// Exit status: 0 done, 1 runtime failure, 2 bad configuration or usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes (the README, "Operating trackerd").
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go watchSignals(sigs, cancel, os.Exit, os.Stderr, time.Now)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// repeatWindow is how soon after the first SIGINT or SIGTERM a second one
// is taken as the same request delivered twice, not as a demand to exit
// at once: coreutils timeout signals both trackerd and its process group,
// so trackerd gets SIGTERM twice in a row, and an impatient Ctrl-C is
// rarely quicker than this.
const repeatWindow = time.Second

// watchSignals turns SIGINT and SIGTERM into a clean stop. The first
// cancels the commands' context: trackerd run stops reading, waits for
// outstanding acknowledgements, writes its checkpoints and exits 0. A
// second signal within repeatWindow of the first is noted and the drain
// goes on; a second one later than that, or a third, calls exit(1) at once
// without waiting for the drain.
func watchSignals(sigs <-chan os.Signal, cancel context.CancelFunc, exit func(int), stderr io.Writer, now func() time.Time) {
	first := <-sigs
	start := now()
	cancel()
	for n := 2; ; n++ {
		sig := <-sigs
		since := now().Sub(start)
		if n == 2 && since < repeatWindow {
			fmt.Fprintf(stderr, "trackerd: %v again %v after the first: still draining (a third signal, or one after %v, exits at once)\n",
				sig, since.Round(time.Millisecond), repeatWindow)
			continue
		}
		fmt.Fprintf(stderr, "trackerd: %v (%v after the first %v): exiting without waiting for the drain\n", sig, since.Round(time.Millisecond), first)
		exit(exitFailure)
		return
	}
}

// env is how commands read the environment; tests pass a map.
type env func(string) (string, bool)

// run is the whole program behind main, with its inputs and outputs passed
// in so tests can drive it.
func run(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "-help":
		usage(stdout)
		return exitOK
	case "-v", "-V", "--version", "-version":
		args = []string{"version"}
	}
	cmd, err := findCommand(args[0])
	if err == nil {
		err = cmd.run(ctx, args[1:], lookup, stdout, stderr)
	}
	return exitCode(err, stderr)
}

// cmdVersion prints the version.
func cmdVersion(_ context.Context, args []string, _ env, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	rest, err := parseArgs(fs, "version", args)
	switch {
	case errors.Is(err, errHelp):
		c, _ := findCommand("version")
		writeHelp(stdout, c, fs)
		return nil
	case err != nil:
		return err
	case len(rest) > 0:
		return usageError{fmt.Sprintf("version takes no arguments, got %q", rest)}
	}
	fmt.Fprintln(stdout, versionString())
	return nil
}

// cmdHelp prints the commands, or the help of the command named.
func cmdHelp(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	switch len(args) {
	case 0:
		usage(stdout)
		return nil
	case 1:
		c, err := findCommand(args[0])
		if err != nil {
			return err
		}
		if c.name == "help" {
			usage(stdout)
			return nil
		}
		return c.run(ctx, []string{"--help"}, lookup, stdout, stderr)
	}
	return usageError{fmt.Sprintf("help takes one command, got %q", args)}
}

// usageError is a mistake on the command line; it exits with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// silentError carries an exit code for a failure already reported.
type silentError struct{ code int }

func (e silentError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var se silentError
	if errors.As(err, &se) {
		return se.code
	}
	code := exitFailure
	if isConfigError(err) {
		code = exitUsage
	}
	// errors.Join puts one problem on each line: each gets the prefix.
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(stderr, "trackerd: %s\n", line)
	}
	return code
}
