// Command trackerd follows databases through their replication streams and
// publishes every row change as CloudEvents on NATS, in two phases,
// before_commit and after_commit.
//
//	trackerd run     [--config FILE] [flags]   the daemon
//	trackerd check   [--config FILE] [flags]   is every bind's server, and NATS, ready?
//	trackerd tail    [flags] [PATTERN]          print events as JSON lines
//	trackerd version
//
// Exit status: 0 done, 1 runtime failure, 2 bad configuration or usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes (DESIGN.md section 6).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel() // first signal: stop reading, flush, checkpoint, exit 0
		<-sigs
		fmt.Fprintln(os.Stderr, "trackerd: second signal: exiting without waiting")
		os.Exit(exitFailure)
	}()
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
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
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, rest, lookup, stdout, stderr)
	case "check":
		err = cmdCheck(ctx, rest, lookup, stdout, stderr)
	case "tail":
		err = cmdTail(ctx, rest, lookup, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "--help", "-help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "trackerd: unknown command %q\n", cmd)
		usage(stderr)
		return exitUsage
	}
	return exitCode(err, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: trackerd <command> [flags]

Commands:
  run      follow every bind and publish its changes (the daemon)
  check    check that every bind's server and NATS are ready, with fixes
  tail     subscribe and print events as JSON lines
  version  print the version

Run "trackerd <command> -h" for a command's flags. Configuration comes from
flags, then TRACKER_<KEY> and SQLALCHEMY_<KEY> environment variables, then
--config FILE (TOML), then defaults.
`)
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
