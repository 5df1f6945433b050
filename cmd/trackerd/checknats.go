package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// holders maps a bind key to its stored checkpoints whose lease a running
// trackerd holds.
type holders map[string][]tracker.StoredCheckpoint

// checkNATS checks NATS as the sink would use it, and reports where each
// bind of bindKeys would resume, returning too which running trackerd
// holds each bind. With no NATS_URL it checks that the embedded server's
// address is free, or, when a trackerd runs it, reads the checkpoints
// there.
func checkNATS(ctx context.Context, cfg *config.Config, bindKeys []string) ([]tracker.CheckResult, holders) {
	if cfg.NATSURL == "" {
		url, co, err := embeddedTarget(cfg, "trackerd check", slog.New(slog.DiscardHandler))
		switch {
		case err == nil:
			if rs, hs, ok := checkRunningEmbedded(ctx, cfg, url, co, bindKeys); ok {
				return rs, hs
			}
		case !errors.Is(err, fs.ErrNotExist):
			return []tracker.CheckResult{{Name: "embedded NATS", Detail: fmt.Sprintf("DATA_DIR %s: %v", cfg.DataDir, err),
				Fix: "run `trackerd check` as the user that runs `trackerd run` (DATA_DIR's nats.url and nats.auth are theirs alone), or set NATS_URL"}}, nil
		}
		r := tracker.CheckResult{Name: "embedded NATS address", OK: true,
			Detail: fmt.Sprintf("NATS_URL is not set (looked at %s): `trackerd run` starts an embedded server on %s (its checkpoints can be read while it runs)", cfg.LookedFor("NATS_URL"), cfg.EmbeddedNATSAddr)}
		if ln, err := net.Listen("tcp", cfg.EmbeddedNATSAddr); err != nil {
			r.OK = false
			r.Detail = fmt.Sprintf("%s is not free: %v", cfg.EmbeddedNATSAddr, err)
			r.Fix = "stop what listens there, set EMBEDDED_NATS_ADDR (port 0 picks a free one), or set NATS_URL to use that server"
		} else {
			ln.Close()
		}
		return []tracker.CheckResult{r}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	nc, err := natssink.Connect(cctx, cfg.NATSURL, connectOptions(cfg, quiet))
	if err != nil {
		return []tracker.CheckResult{{Name: "NATS connection", Detail: err.Error(),
			Fix: "start NATS with JetStream (nats-server -js), or correct NATS_URL and the NATS_* credentials"}}, nil
	}
	defer nc.Close()
	rs := natssink.Check(cctx, nc, sinkOptions(cfg, quiet))
	cps, hs := checkpoints(cctx, cfg, nc, bindKeys)
	return append(rs, cps...), hs
}

// checkRunningEmbedded reads the checkpoints of a running trackerd's
// embedded server at url, connecting with co (its credentials); ok is false
// when nothing answers there (a leftover nats.url).
func checkRunningEmbedded(ctx context.Context, cfg *config.Config, url string, co natssink.ConnectOptions, bindKeys []string) (rs []tracker.CheckResult, hs holders, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := natssink.Connect(cctx, url, co)
	if err != nil {
		// It answers, but refuses: credentials that are not its own.
		return []tracker.CheckResult{{Name: "embedded NATS", Detail: err.Error(),
			Fix: "the running trackerd's server refuses the credentials in DATA_DIR's nats.auth: run `trackerd check` with that trackerd's DATA_DIR"}}, nil, true
	}
	if !nc.IsConnected() {
		nc.Close()
		return nil, nil, false
	}
	defer nc.Close()
	rs = []tracker.CheckResult{{Name: "embedded NATS", OK: true,
		Detail: fmt.Sprintf("NATS_URL is not set (looked at %s): a running trackerd serves %s (DATA_DIR %s)", cfg.LookedFor("NATS_URL"), redactURL(url), cfg.DataDir)}}
	cps, hs := checkpoints(cctx, cfg, nc, bindKeys)
	return append(rs, cps...), hs, true
}

// checkpoints reports where each bind would resume, from the checkpoint
// store `trackerd run` would use, and which running trackerd holds each.
func checkpoints(ctx context.Context, cfg *config.Config, nc *nats.Conn, bindKeys []string) ([]tracker.CheckResult, holders) {
	hs := holders{}
	if cfg.PublishMode == string(natssink.Core) {
		fs := tracker.NewFileStore(cfg.CheckpointPath())
		for _, b := range bindKeys {
			if cps, err := fs.ListCheckpoints(ctx, b); err == nil {
				hs.add(b, cps)
			}
		}
		return []tracker.CheckResult{{Name: "checkpoints", OK: true,
			Detail: "PUBLISH_MODE=core: kept in " + cfg.CheckpointPath()}}, hs
	}
	if !nc.IsConnected() || len(bindKeys) == 0 {
		return nil, hs
	}
	for _, b := range bindKeys {
		if cps, _, err := natssink.ReadCheckpoints(ctx, nc, cfg.CheckpointBucket, b); err == nil {
			hs.add(b, cps)
		}
	}
	return natssink.CheckCheckpoints(ctx, nc, cfg.CheckpointBucket, bindKeys, time.Now()), hs
}

// add records the checkpoints of bind that a running trackerd holds.
func (hs holders) add(bind string, cps []tracker.StoredCheckpoint) {
	for _, sc := range cps {
		if sc.Holder != "" {
			hs[bind] = append(hs[bind], sc)
		}
	}
}

// redactURL hides a password in a NATS URL (nats://user:pass@host).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable NATS_URL)"
	}
	return u.Redacted()
}
