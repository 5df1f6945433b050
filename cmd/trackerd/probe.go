package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

const probeAbout = `Ask a running trackerd whether it is ready: GET /readyz on --addr, by
default HTTP_ADDR read as "trackerd run" reads it (flags, environment,
--config). Exit status 0 when it answers 200 (every bind streaming, NATS
connected), 1 otherwise, with one line saying why; nothing is printed when
it is ready. An address that listens on every interface (0.0.0.0:9187, as
in the container image) is asked on loopback. Made for health checks where
there is no shell or curl, as in the distroless image:

  HEALTHCHECK CMD ["/usr/local/bin/trackerd", "probe"]`

// cmdProbe asks /readyz of a running trackerd: nil when it is ready, a
// runtime error (exit 1) otherwise, a usage error (exit 2) when there is no
// address to ask.
func cmdProbe(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	var (
		addr    string
		timeout time.Duration
	)
	cfg, rest, err := loadConfig("probe", args, lookup, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "Ask trackerd at `HOST:PORT` (or an http:// URL). Default: HTTP_ADDR.")
		fs.DurationVar(&timeout, "timeout", 5*time.Second, "Give up after `DURATION`.")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("probe takes no arguments, got %q", rest)}
	}
	if timeout <= 0 {
		return usageError{fmt.Sprintf("--timeout %v: want a duration above 0", timeout)}
	}
	from := "--addr"
	if addr == "" {
		addr, from = cfg.HTTPAddr, "HTTP_ADDR ("+cfg.SourceOf("HTTP_ADDR")+")"
	}
	url, err := readyzURL(addr)
	if err != nil {
		return usageError{fmt.Sprintf("probe: %s %s", from, err)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{fmt.Sprintf("probe: %s %q: %v", from, addr, err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe: not ready: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: not ready: GET %s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// readyzURL is the /readyz URL of an HTTP_ADDR or --addr (see httpBase).
func readyzURL(addr string) (string, error) {
	base, err := httpBase(addr, "/readyz")
	if err != nil {
		return "", err
	}
	return base + "/readyz", nil
}

// httpBase is the base URL of an HTTP_ADDR or --addr: host:port, or a URL.
// An unspecified host (":9187", "0.0.0.0:9187", "[::]:9187") is asked on
// loopback; "off" and port 0 have nothing to ask (path, for the error).
func httpBase(addr, path string) (string, error) {
	if base, ok := strings.CutPrefix(addr, "http://"); ok {
		return "http://" + strings.TrimSuffix(base, "/"), nil
	}
	if strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/"), nil
	}
	if addr == "" || addr == "off" {
		return "", fmt.Errorf("is off: trackerd serves no %s to ask; set HTTP_ADDR, or give --addr", path)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q: want host:port (%v)", addr, err)
	}
	if port == "0" {
		return "", fmt.Errorf("%q has port 0, a free port trackerd picks and logs: give that address with --addr", addr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}
