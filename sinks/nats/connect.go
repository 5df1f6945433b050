package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/internal/backoff"
	"github.com/trackerd/trackerd/tracker"
)

// ConnectOptions are the NATS connection's name, credentials and TLS files
// (NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY,
// NATS_TLS_CERT, NATS_TLS_KEY, NATS_TLS_CA). Secrets are never logged.
type ConnectOptions struct {
	// Name is the connection name the server shows, default "trackerd".
	Name string
	// User and Password authenticate with a user name and password.
	User, Password string
	// Token authenticates with a token.
	Token string
	// Creds is a credentials file (JWT and NKey seed).
	Creds string
	// NKey is an NKey seed file.
	NKey string
	// TLSCert and TLSKey are a client certificate and its key; TLSCA is
	// the CA that signs the server's certificate.
	TLSCert, TLSKey, TLSCA string
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// Connect connects to the NATS server(s) at url (comma-separated for
// several) and keeps the connection up: it reconnects forever, with
// back-off from 100 ms to 5 s, and logs every disconnection and reconnection
// (without credentials).
//
// Publishes fail while the connection is down, rather than being buffered
// by nats.go (ReconnectBufSize -1): a lane then sends them again in order
// once it is back, so that a reconnect does not reorder the stream.
//
// Connect returns as soon as the first attempt is over. If the server is
// unreachable, it returns a connection that goes on trying in the
// background (logging a warning), so that trackerd starts while NATS is
// down and resumes when it appears: publishing blocks meanwhile. Errors that
// retrying cannot fix — a bad URL, unreadable credentials or TLS files,
// credentials the server refuses — are returned and match
// [tracker.ErrConfig]. ctx bounds the first attempt.
func Connect(ctx context.Context, url string, o ConnectOptions) (*natsgo.Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secrets := o.secrets(url)
	shown := redact(url, secrets)
	opts, err := o.options(log, secrets)
	if err != nil {
		return nil, tracker.ConfigError(fmt.Errorf("nats: %s", redact(err.Error(), secrets)))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, natsgo.Timeout(max(min(time.Until(d), 2*time.Second), 10*time.Millisecond)))
	}
	nc, err := natsgo.Connect(url, opts...)
	if err == nil {
		return nc, nil // the ConnectHandler logs "connected to NATS"
	}
	if !unreachable(err) {
		return nil, tracker.ConfigError(fmt.Errorf("nats: connect to %s: %s", shown, redact(err.Error(), secrets)))
	}
	log.Warn("NATS is not reachable: going on, and connecting in the background",
		slog.String("url", shown), slog.String("err", redact(err.Error(), secrets)))
	nc, err = natsgo.Connect(url, append(opts, natsgo.RetryOnFailedConnect(true))...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect to %s: %s", shown, redact(err.Error(), secrets))
	}
	return nc, nil
}

// unreachable reports a first-connect error that retrying may cure.
func unreachable(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.Is(err, natsgo.ErrNoServers) || errors.Is(err, natsgo.ErrTimeout) ||
		errors.As(err, &opErr) || errors.As(err, &dnsErr) || strings.Contains(err.Error(), "connection refused") ||
		strings.Contains(err.Error(), "no such host") || strings.Contains(err.Error(), "i/o timeout")
}

// secrets lists the strings that must never be shown: the password, the
// token and any password in the URL.
func (o ConnectOptions) secrets(url string) []string {
	var s []string
	for _, v := range []string{o.Password, o.Token} {
		if v != "" {
			s = append(s, v)
		}
	}
	for u := range strings.SplitSeq(url, ",") {
		_, rest, ok := strings.Cut(u, "://")
		if !ok {
			rest = u
		}
		at := strings.LastIndexByte(rest, '@')
		if at < 0 {
			continue
		}
		info := rest[:at]
		if _, pw, ok := strings.Cut(info, ":"); ok && pw != "" {
			s = append(s, pw)
		} else if !ok && info != "" {
			s = append(s, info) // a token in the URL
		}
	}
	return s
}

// redact replaces every secret in s by "***".
func redact(s string, secrets []string) string {
	for _, v := range secrets {
		s = strings.ReplaceAll(s, v, "***")
	}
	return s
}

func (o ConnectOptions) options(log *slog.Logger, secrets []string) ([]natsgo.Option, error) {
	name := o.Name
	if name == "" {
		name = "trackerd"
	}
	opts := []natsgo.Option{
		natsgo.Name(name),
		natsgo.MaxReconnects(-1),
		natsgo.CustomReconnectDelay(reconnectDelay()),
		// No buffering of publishes while reconnecting: they fail, and the
		// lanes send them again in order once the connection is back. A
		// buffer would deliver them ahead of those lost with the old
		// connection.
		natsgo.ReconnectBufSize(-1),
		natsgo.PingInterval(10 * time.Second),
		natsgo.MaxPingsOutstanding(3),
		natsgo.ConnectHandler(func(nc *natsgo.Conn) {
			log.Info("connected to NATS", slog.String("url", nc.ConnectedUrlRedacted()))
		}),
		natsgo.DisconnectErrHandler(func(nc *natsgo.Conn, err error) {
			if err == nil {
				log.Info("disconnected from NATS")
				return
			}
			log.Warn("disconnected from NATS: reconnecting", slog.String("err", redact(err.Error(), secrets)))
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			log.Info("reconnected to NATS", slog.String("url", nc.ConnectedUrlRedacted()))
		}),
		natsgo.ReconnectErrHandler(func(nc *natsgo.Conn, err error) {
			if err != nil {
				log.Debug("NATS reconnect attempt failed", slog.String("err", redact(err.Error(), secrets)))
			}
		}),
		natsgo.ClosedHandler(func(*natsgo.Conn) { log.Info("NATS connection closed") }),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			attrs := []any{slog.String("err", redact(err.Error(), secrets))}
			if sub != nil {
				attrs = append(attrs, slog.String("subject", sub.Subject))
			}
			log.Warn("NATS error", attrs...)
		}),
	}
	if o.User != "" || o.Password != "" {
		opts = append(opts, natsgo.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, natsgo.Token(o.Token))
	}
	if o.Creds != "" {
		opts = append(opts, natsgo.UserCredentials(o.Creds))
	}
	if o.NKey != "" {
		opt, err := natsgo.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY %s: %w", o.NKey, err)
		}
		opts = append(opts, opt)
	}
	switch {
	case o.TLSCert != "" && o.TLSKey != "":
		opts = append(opts, natsgo.ClientCert(o.TLSCert, o.TLSKey))
	case o.TLSCert != "" || o.TLSKey != "":
		return nil, errors.New("NATS_TLS_CERT and NATS_TLS_KEY go together: set both or neither")
	}
	if o.TLSCA != "" {
		opts = append(opts, natsgo.RootCAs(o.TLSCA))
	}
	return opts, nil
}

// reconnectDelay returns the connection's wait between two passes over
// its servers: backoff.Publish's range, 100 ms to 5 s, with jitter. nats.go
// calls it from the connection's reconnecting goroutine only, with attempts
// 1, 2, 3... in each outage, so attempt 1 starts the range again.
func reconnectDelay() natsgo.ReconnectDelayHandler {
	bo := backoff.Publish.New()
	return func(attempts int) time.Duration {
		if attempts <= 1 {
			bo.Reset()
		}
		return bo.Next()
	}
}
