package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
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
			detail := r.Detail
			if d, fix, ok := strings.Cut(detail, "; fix: "); ok && r.Fix != "" && strings.TrimSpace(fix) == strings.TrimSpace(r.Fix) {
				detail = d // the fix line says it
			}
			fmt.Fprintf(stdout, "%s  %-12s %s: %s\n", status, scope, r.Name, detail)
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
		if b.Track {
			tracked = append(tracked, b.Key)
		}
	}
	// NATS first, though printed last: the checkpoint store says which
	// running trackerd holds each bind, whose slot or server_id in use is
	// then no problem.
	natsResults, held := checkNATS(ctx, cfg, tracked)
	for _, b := range bs {
		if !b.Track {
			fmt.Fprintf(stdout, "skip  %-12s track = false\n", b.Key)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		report(b.Key, heldByHolder(b, checks[b.Kind](cctx, b), held[b.Key]))
		cancel()
	}
	report("nats", natsResults)
	if failed > 0 {
		fmt.Fprintf(stdout, "%d check(s) failed\n", failed)
		return silentError{exitFailure}
	}
	fmt.Fprintln(stdout, "all checks passed")
	return nil
}

// heldByHolder makes a bind's replication slot (PostgreSQL) or reader
// server_id (MySQL/MariaDB) found in use an ok line when a running
// trackerd holds the bind's lease for this very source: that trackerd is
// what uses it (operator review row 5). held are the bind's checkpoints
// with a live lease.
func heldByHolder(b binds.Bind, rs []tracker.CheckResult, held []tracker.StoredCheckpoint) []tracker.CheckResult {
	holder := ""
	for _, sc := range held {
		if ownSource(b, sc.Source) {
			holder = sc.Holder
			break
		}
	}
	if holder == "" {
		return rs
	}
	out := slices.Clone(rs)
	for i, r := range out {
		switch {
		case b.Kind == binds.Postgres && r.Name == "slot not in use" && !r.OK:
			r.Detail = fmt.Sprintf("%s: the running trackerd that holds the bind's lease (%s)", r.Detail, holder)
		case b.Kind == binds.MySQL && r.Name == "reader server_id" && r.Warn && strings.HasPrefix(r.Detail, mysql.ReaderConnected):
			r.Detail = fmt.Sprintf("server_id %d is in use by the running trackerd that holds the bind's lease (%s)", b.ServerID, holder)
		default:
			continue
		}
		r.OK, r.Warn, r.Fix = true, false, ""
		out[i] = r
	}
	return out
}

// ownSource reports whether a checkpoint's source identity is that of b:
// PostgreSQL's names the database and the slot, MySQL's and MariaDB's the
// database.
func ownSource(b binds.Bind, identity string) bool {
	switch b.Kind {
	case binds.Postgres:
		return strings.HasPrefix(identity, "pg/") && strings.HasSuffix(identity, "/"+b.URI.Database+"/"+b.Slot)
	case binds.MySQL:
		return (strings.HasPrefix(identity, "mysql/") || strings.HasPrefix(identity, "mariadb/")) && strings.HasSuffix(identity, "/"+b.URI.Database)
	}
	return false
}
