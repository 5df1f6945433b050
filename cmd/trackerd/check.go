package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/mysql"
	"github.com/trackerd/trackerd/sources/postgres"
	"github.com/trackerd/trackerd/tracker"
)

// cmdCheck prints one line per prerequisite of every tracked bind and of
// NATS, each failing line with its fix, and fails (exit 1) if any fails.
func cmdCheck(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	cfg, rest, err := loadConfig("check", args, lookup, stdout, stderr, nil)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("check takes no arguments, got %q", rest)}
	}
	bs, err := binds.FromConfig(cfg)
	if err != nil {
		return err
	}
	checks := map[binds.Kind]tracker.CheckFunc{binds.Postgres: postgres.Check, binds.MySQL: mysql.Check}
	failed := 0
	fixes := map[string]bool{} // each fix is printed once
	report := func(scope string, rs []tracker.CheckResult) {
		for _, r := range rs {
			status := "ok  "
			switch {
			case !r.OK:
				status = "FAIL"
				failed++
			case r.Warn:
				status = "warn"
			}
			fmt.Fprintf(stdout, "%s  %-12s %s: %s\n", status, scope, r.Name, r.Detail)
			if (!r.OK || r.Warn) && r.Fix != "" && !fixes[r.Fix] {
				fixes[r.Fix] = true
				fmt.Fprintf(stdout, "      %-12s fix: %s\n", "", r.Fix)
			}
		}
	}
	if !cfg.Tracking() {
		fmt.Fprintln(stdout, "note  "+cfg.TrackingDisabled())
	}
	var tracked []string
	for _, b := range bs {
		if !b.Track {
			fmt.Fprintf(stdout, "skip  %-12s track = false\n", b.Key)
			continue
		}
		tracked = append(tracked, b.Key)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		report(b.Key, checks[b.Kind](cctx, b))
		cancel()
	}
	report("nats", checkNATS(ctx, cfg, tracked))
	if failed > 0 {
		fmt.Fprintf(stdout, "%d check(s) failed\n", failed)
		return silentError{exitFailure}
	}
	fmt.Fprintln(stdout, "all checks passed")
	return nil
}
