package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// checkNATS checks NATS as the sink would use it. With no NATS_URL it checks
// that the embedded server's address is free.
func checkNATS(ctx context.Context, cfg *config.Config) []tracker.CheckResult {
	if cfg.NATSURL == "" {
		r := tracker.CheckResult{Name: "embedded NATS address", OK: true,
			Detail: fmt.Sprintf("NATS_URL is not set: `trackerd run` starts an embedded server on %s", cfg.EmbeddedNATSAddr)}
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
	return natssink.Check(cctx, nc, sinkOptions(cfg, quiet))
}

// redactURL hides a password in a NATS URL (nats://user:pass@host).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable NATS_URL)"
	}
	return u.Redacted()
}
