package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

const statusAbout = `Show each bind of a running trackerd: its state, position, lag, events per
second over the last minute, last event, last error, lease holder, and a
line per running snapshot or backfill (rows read of the estimate, rows per
second, time left). Exit status 0 when every bind streams, 1
otherwise (a bind in another state, or no trackerd answering).

It asks HTTP_ADDR's /status.json first (read as "trackerd run" reads it, or
--addr), as "trackerd probe" does; when that does not answer, or with
--nats, it asks every instance over NATS (NATS_URL, else the embedded server
of a running "trackerd run" with the same DATA_DIR) and shows each bind as
the instance holding its lease sees it, the other instances as standby, and
a configured bind that no instance runs as not_running. The page at / of
HTTP_ADDR shows the same.`

// statusKeys are the configuration keys status's help shows.
var statusKeys = []string{"HTTP_ADDR", "NATS_URL", "DATA_DIR", "STREAM_NAME", "CHECKPOINT_BUCKET",
	"NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY", "NATS_TLS_CERT", "NATS_TLS_KEY", "NATS_TLS_CA"}

// cmdStatus prints the status of the running trackerd instances.
func cmdStatus(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var (
		addr            string
		viaNATS, asJSON bool
		timeout         time.Duration
	)
	cfg, rest, err := loadConfig("status", args, lookup, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "Ask trackerd at `HOST:PORT` (or an http:// URL). Default: HTTP_ADDR.")
		fs.BoolVar(&viaNATS, "nats", false, "Ask every instance over NATS, not HTTP_ADDR.")
		fs.BoolVar(&asJSON, "json", false, "Print the status document as JSON.")
		fs.DurationVar(&timeout, "timeout", 5*time.Second, "Give up after `DURATION`.")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("status takes no arguments, got %q", rest)}
	}
	if timeout <= 0 {
		return usageError{fmt.Sprintf("--timeout %v: want a duration above 0", timeout)}
	}
	if addr != "" && viaNATS {
		return usageError{"--addr and --nats: give one (--addr asks one instance over HTTP, --nats every instance over NATS)"}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var (
		doc     statusDoc
		via     string
		httpErr error
	)
	if !viaNATS {
		from := "--addr"
		if addr == "" {
			addr, from = cfg.HTTPAddr, "HTTP_ADDR ("+cfg.SourceOf("HTTP_ADDR")+")"
		}
		base, err := httpBase(addr, "/status.json")
		switch {
		case err != nil && from == "--addr":
			return usageError{fmt.Sprintf("status: --addr %s", err)}
		case err != nil:
			httpErr = fmt.Errorf("%s %w", from, err)
		default:
			hctx, hcancel := context.WithTimeout(ctx, timeout/2)
			doc, err = fetchStatus(hctx, base+"/status.json")
			hcancel()
			if err != nil && from == "--addr" {
				return fmt.Errorf("status: %w", err)
			}
			if err != nil {
				httpErr = fmt.Errorf("%s: %w", from, err)
			} else {
				via = base
			}
		}
	}
	if via == "" {
		doc, via, err = statusOverNATS(ctx, cfg, timeout)
		if err != nil {
			if httpErr != nil {
				return fmt.Errorf("status: no trackerd answers: %v; over NATS: %w", httpErr, err)
			}
			return fmt.Errorf("status: %w", err)
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return err
		}
	} else {
		writeStatus(stdout, doc, via)
	}
	if !doc.OK {
		return silentError{exitFailure}
	}
	return nil
}

// fetchStatus GETs a /status.json.
func fetchStatus(ctx context.Context, url string) (statusDoc, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return statusDoc{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return statusDoc{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusDoc{}, fmt.Errorf("GET %s: %s (a trackerd before `status`?)", url, resp.Status)
	}
	var doc statusDoc
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&doc); err != nil {
		return statusDoc{}, fmt.Errorf("GET %s: %w", url, err)
	}
	return doc, nil
}

// statusOverNATS asks every instance of the deployment over NATS and
// merges their answers with the leases of the configured binds.
func statusOverNATS(ctx context.Context, cfg *config.Config, timeout time.Duration) (statusDoc, string, error) {
	quiet := slog.New(slog.DiscardHandler)
	url, co := cfg.NATSURL, connectOptions(cfg, quiet)
	co.Name = "trackerd status"
	shown := redactURL(url)
	if url == "" {
		var err error
		url, co, err = embeddedTarget(cfg, "trackerd status", quiet)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return statusDoc{}, "", fmt.Errorf("NATS_URL is not set (looked at %s) and no embedded NATS server runs in DATA_DIR %s: is trackerd running? Set NATS_URL or HTTP_ADDR as trackerd run has them", cfg.LookedFor("NATS_URL"), cfg.DataDir)
		case err != nil:
			return statusDoc{}, "", fmt.Errorf("the embedded NATS server of DATA_DIR %s: %v; run status as the user that runs trackerd, or set NATS_URL", cfg.DataDir, err)
		}
		shown = "the embedded server " + url
	}
	nc, err := natssink.Connect(ctx, url, co)
	if err != nil {
		return statusDoc{}, "", err
	}
	defer nc.Close()
	if !nc.IsConnected() {
		return statusDoc{}, "", fmt.Errorf("NATS at %s does not answer", shown)
	}
	subject := controlSubject(cfg, "status")
	docs, err := askStatus(ctx, nc, subject, timeout/2, 500*time.Millisecond)
	if err != nil {
		return statusDoc{}, "", err
	}
	expect := expectedBinds(cfg)
	holders := map[string]string{}
	if len(expect) > 0 {
		if h, err := natssink.LeaseHolders(ctx, nc, cfg.CheckpointBucket, expect, time.Now()); err == nil {
			holders = h
		}
	}
	if len(docs) == 0 && len(expect) == 0 {
		return statusDoc{}, "", fmt.Errorf("no trackerd answers on %s at %s (STREAM_NAME %s)", subject, shown, cfg.StreamName)
	}
	return mergeStatus(docs, expect, holders, time.Now()), "NATS (" + shown + ")", nil
}

// expectedBinds are the tracked binds of the configuration, when it names
// any: each should be run by some instance.
func expectedBinds(cfg *config.Config) []string {
	if !cfg.Tracking() {
		return nil
	}
	bs, err := binds.FromConfig(cfg)
	if err != nil {
		return nil
	}
	var keys []string
	for _, b := range bs {
		if b.Track {
			keys = append(keys, b.Key)
		}
	}
	return keys
}

// writeStatus prints doc for an operator: one line per instance, a table of
// binds, and under a bind its state's detail, snapshot and last error.
func writeStatus(w io.Writer, doc statusDoc, via string) {
	now := doc.Time
	for _, in := range doc.Instances {
		line := fmt.Sprintf("instance %s: trackerd %s", holderName(in.Owner, in.PID), in.Version)
		if in.Revision != "" {
			line += " (" + in.Revision + ")"
		}
		line += ", up " + roughDuration(now.Sub(in.StartedAt))
		if in.NATS != "" {
			line += ", NATS " + in.NATS
			if in.NATSURL != "" {
				line += " (" + in.NATSURL + ")"
			}
		}
		if in.Stream != "" {
			line += ", stream " + in.Stream
		}
		if in.HTTP != "" {
			line += ", " + in.HTTP
		}
		fmt.Fprintln(w, line)
	}
	if len(doc.Instances) > 0 {
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BIND\tSTATE\tPOSITION\tLAG\tLAG S\tEVENTS/S\tEVENTS\tLAST EVENT\tLEASE HOLDER")
	for _, b := range doc.Binds {
		lagB, lagS := "-", "-"
		if b.LagBytes != nil {
			lagB = formatBytes(*b.LagBytes)
		}
		if b.LagSeconds != nil {
			lagS = formatSeconds(*b.LagSeconds)
		}
		last := "-"
		if b.LastEventAt != nil {
			last = ago(now, *b.LastEventAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Bind, b.State, dash(shortPosition(b.Position)), lagB, lagS,
			formatRate(b.EventsPerSecond), groupDigits(fmt.Sprint(b.EventsPublished)), last, dash(b.LeaseHolder))
	}
	tw.Flush()
	for _, b := range doc.Binds {
		var notes []string
		if b.StateDetail != "" {
			notes = append(notes, b.State+": "+b.StateDetail)
		}
		for _, s := range b.Snapshots {
			if s.State == tracker.SnapshotRunning {
				notes = append(notes, snapshotStatusLine(s))
			}
		}
		if b.LastError != "" {
			when := ""
			if b.LastErrorAt != nil {
				when = " " + ago(now, *b.LastErrorAt)
			}
			notes = append(notes, "last error"+when+": "+b.LastError)
		}
		if len(b.Standby) > 0 {
			notes = append(notes, "standby: "+strings.Join(b.Standby, "; "))
		}
		for _, n := range notes {
			fmt.Fprintf(w, "%s: %s\n", b.Bind, n)
		}
	}
	streaming := 0
	for _, b := range doc.Binds {
		if b.State == "streaming" {
			streaming++
		}
	}
	switch {
	case len(doc.Binds) == 0:
		fmt.Fprintf(w, "no bind is tracked (via %s)\n", via)
	case doc.OK:
		fmt.Fprintf(w, "every bind streaming (via %s)\n", via)
	default:
		fmt.Fprintf(w, "%d of %d binds streaming (via %s)\n", streaming, len(doc.Binds), via)
	}
}

// snapshotStatusLine is a running snapshot's line under its bind:
//
//	snapshot backfill-1a2b3c4d running public.orders (1/3 tables) 120,000/2,000,000 rows 85,000 rows/s eta 22 s
//
// the rows and their estimate being the snapshot's, over its tables.
func snapshotStatusLine(s snapshotStatus) string {
	line := "snapshot " + s.ID + " " + s.State
	if s.Table != "" {
		line += " " + s.Table
	}
	line += fmt.Sprintf(" (%d/%d tables) %s", s.TablesDone, s.Tables, groupDigits(fmt.Sprint(s.Rows)))
	if s.Estimated != nil {
		line += "/" + groupDigits(fmt.Sprint(*s.Estimated))
	}
	line += " rows " + formatRate(s.RowsPerSecond) + " rows/s"
	if s.ETASeconds != nil {
		line += " eta " + roughDuration(time.Duration(*s.ETASeconds*float64(time.Second)))
	}
	if s.Where != "" {
		line += " where " + s.Where
	}
	return line
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortPosition shows a position for an operator: a MySQL/MariaDB position,
// which the source writes as JSON, as file:offset and GTID; any other as it
// is.
func shortPosition(p string) string {
	if !strings.HasPrefix(p, "{") {
		return p
	}
	var v struct {
		GTID string `json:"gtid"`
		File string `json:"file"`
		Pos  uint64 `json:"pos"`
	}
	if json.Unmarshal([]byte(p), &v) != nil || v.File == "" {
		return p
	}
	s := fmt.Sprintf("%s:%d", v.File, v.Pos)
	if v.GTID != "" {
		s += " (" + v.GTID + ")"
	}
	return s
}
