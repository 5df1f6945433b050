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

// checkNATS checks NATS as the sink would use it, and reports where each
// bind of bindKeys would resume. With no NATS_URL it checks that the
// embedded server's address is free, or, when a trackerd runs it, reads the
// checkpoints there.
func checkNATS(ctx context.Context, cfg *config.Config, bindKeys []string) []tracker.CheckResult {
	if cfg.NATSURL == "" {
		url, co, err := embeddedTarget(cfg, "trackerd check", slog.New(slog.DiscardHandler))
		switch {
		case err == nil:
			if rs, ok := checkRunningEmbedded(ctx, cfg, url, co, bindKeys); ok {
				return rs
			}
		case !errors.Is(err, fs.ErrNotExist):
			return []tracker.CheckResult{{Name: "embedded NATS", Detail: fmt.Sprintf("DATA_DIR %s: %v", cfg.DataDir, err),
				Fix: "run `trackerd check` as the user that runs `trackerd run` (DATA_DIR's nats.url and nats.auth are theirs alone), or set NATS_URL"}}
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
		return []tracker.CheckResult{r}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	nc, err := natssink.Connect(cctx, cfg.NATSURL, connectOptions(cfg, quiet))
	if err != nil {
		return []tracker.CheckResult{{Name: "NATS connection", Detail: err.Error(),
			Fix: "start NATS with JetStream (nats-server -js), or correct NATS_URL and the NATS_* credentials"}}
	}
	defer nc.Close()
	rs := natssink.Check(cctx, nc, sinkOptions(cfg, quiet))
	return append(rs, checkpoints(cctx, cfg, nc, bindKeys)...)
}

// checkRunningEmbedded reads the checkpoints of a running trackerd's
// embedded server at url, connecting with co (its credentials); ok is false
// when nothing answers there (a leftover nats.url).
func checkRunningEmbedded(ctx context.Context, cfg *config.Config, url string, co natssink.ConnectOptions, bindKeys []string) (rs []tracker.CheckResult, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := natssink.Connect(cctx, url, co)
	if err != nil {
		// It answers, but refuses: credentials that are not its own.
		return []tracker.CheckResult{{Name: "embedded NATS", Detail: err.Error(),
			Fix: "the running trackerd's server refuses the credentials in DATA_DIR's nats.auth: run `trackerd check` with that trackerd's DATA_DIR"}}, true
	}
	if !nc.IsConnected() {
		nc.Close()
		return nil, false
	}
	defer nc.Close()
	rs = []tracker.CheckResult{{Name: "embedded NATS", OK: true,
		Detail: fmt.Sprintf("NATS_URL is not set (looked at %s): a running trackerd serves %s (DATA_DIR %s)", cfg.LookedFor("NATS_URL"), redactURL(url), cfg.DataDir)}}
	return append(rs, checkpoints(cctx, cfg, nc, bindKeys)...), true
}

// checkpoints reports where each bind would resume, from the checkpoint
// store `trackerd run` would use.
func checkpoints(ctx context.Context, cfg *config.Config, nc *nats.Conn, bindKeys []string) []tracker.CheckResult {
	if cfg.PublishMode == string(natssink.Core) {
		return []tracker.CheckResult{{Name: "checkpoints", OK: true,
			Detail: "PUBLISH_MODE=core: kept in " + checkpointFile(cfg)}}
	}
	if !nc.IsConnected() || len(bindKeys) == 0 {
		return nil
	}
	return natssink.CheckCheckpoints(ctx, nc, cfg.CheckpointBucket, bindKeys, time.Now())
}

// redactURL hides a password in a NATS URL (nats://user:pass@host).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable NATS_URL)"
	}
	return u.Redacted()
}
