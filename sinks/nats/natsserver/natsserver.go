// Package natsserver runs a NATS server with JetStream inside trackerd's
// process, for when NATS_URL is not set, so that `trackerd run` needs
// nothing but a database. It is a package of its own so that programs that
// only consume trackerd's events (changefeed) do not link nats-server.
//
// The server listens on loopback only. `trackerd run` also makes it require
// a user and password (Options.User and Options.Password), generated on the
// first start and kept in DATA_DIR/nats.auth, mode 0600 (see
// LoadOrCreateCredentials), so that other local users can neither read the
// events nor touch the checkpoints.
package natsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/trackerd/trackerd/tracker"
)

// DefaultAddr is where the embedded server listens by default.
const DefaultAddr = "127.0.0.1:4223"

// Options configure the embedded NATS server.
type Options struct {
	// Addr is EMBEDDED_NATS_ADDR, default "127.0.0.1:4223": a loopback
	// host and a port; port 0 picks a free one (see Server.ClientURL).
	Addr string
	// StoreDir is NATS_STORE_DIR: where JetStream keeps its data. It is
	// created if missing.
	StoreDir string
	// MaxPayload is the server's max_payload; 0 is nats-server's default
	// (1 MiB).
	MaxPayload int32
	// Logger receives the server's logs: notices and debug at debug level,
	// warnings and errors at warn.
	Logger *slog.Logger
	// User and Password, when set, are required from every client (see
	// LoadOrCreateCredentials). Empty: any local user may connect, which
	// suits tests and single-user machines only.
	User, Password string
}

// SyncInterval is how often the embedded server syncs its JetStream store
// to disk (nats-server's sync_interval; its own default is 2 minutes). An
// acknowledged event may be lost on a power failure of the host until the
// next sync, so the tracker's checkpoint trails acknowledgements by
// CheckpointDelay, and a power failure loses nothing the checkpoint (or the
// PostgreSQL slot) is past. Syncing every write (sync_interval: always)
// costs 15 to 30 times the throughput on this project's test machine;
// every 10 s costs nothing measurable (README, Performance).
const SyncInterval = 10 * time.Second

// CheckpointDelay is the checkpoint delay (tracker.WithCheckpointDelay) that
// goes with SyncInterval: one interval and a margin for the sync itself.
const CheckpointDelay = SyncInterval + 2*time.Second

// Server is a NATS server with JetStream running in this process, for
// when NATS_URL is not set. It has no TLS, so it listens on loopback only.
type Server struct {
	srv *server.Server
	log *serverLog
}

// embeddedStart bounds the start when ctx has no deadline.
const embeddedStart = 10 * time.Second

// Start starts the embedded server and returns once it accepts
// connections with JetStream enabled, or fails, or ctx ends.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	host, portStr, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, addrError(o.Addr, "want host:port")
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, addrError(o.Addr, "want a port from 0 to 65535")
	}
	if !loopback(host) {
		return nil, addrError(o.Addr, "the embedded server has no TLS, so it listens on loopback only (127.0.0.1, ::1 or localhost)")
	}
	if (o.User == "") != (o.Password == "") {
		return nil, configErr("nats: the embedded server's user and password go together: set both or neither")
	}
	if o.StoreDir == "" {
		return nil, configErr("nats: NATS_STORE_DIR is empty: the embedded server needs a directory for JetStream")
	}
	if err := os.MkdirAll(o.StoreDir, 0o700); err != nil {
		return nil, configErr(fmt.Sprintf("nats: NATS_STORE_DIR %s: %v", o.StoreDir, err))
	}
	if port != 0 {
		// A clear error now beats nats-server's log line later.
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			return nil, addrError(o.Addr, fmt.Sprintf("cannot listen (%v): is another NATS server or trackerd running? Choose a free address, or port 0 for any", err))
		}
		ln.Close()
	} else {
		port = server.RANDOM_PORT
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sopts := &server.Options{
		ServerName: "trackerd-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		MaxPayload: o.MaxPayload,
		NoSigs:     true,
		HTTPPort:   0,
		Username:   o.User,
		Password:   o.Password,
		// See SyncInterval.
		SyncInterval: SyncInterval,
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, configErr(fmt.Sprintf("nats: embedded server: %v", err))
	}
	sl := &serverLog{log: logger.With(slog.String("component", "nats-server"))}
	srv.SetLoggerV2(sl, true, false, false)
	go srv.Start()

	timeout := embeddedStart
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	deadline := time.Now().Add(timeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		if fatal := sl.fatal(); fatal != "" {
			srv.Shutdown()
			if strings.Contains(fatal, "listening") {
				return nil, addrError(o.Addr, fatal)
			}
			return nil, fmt.Errorf("nats: embedded server: %s", fatal)
		}
		if err := ctx.Err(); err != nil {
			srv.Shutdown()
			return nil, err
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			return nil, fmt.Errorf("nats: embedded server at %s not ready within %v", o.Addr, timeout)
		}
	}
	if !srv.JetStreamEnabled() {
		fatal := sl.fatal()
		srv.Shutdown()
		return nil, fmt.Errorf("nats: embedded server: JetStream did not start (NATS_STORE_DIR %s): %s", o.StoreDir, fatal)
	}
	logger.Info("embedded NATS server started", slog.String("url", srv.ClientURL()), slog.String("store_dir", o.StoreDir))
	return &Server{srv: srv, log: sl}, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func addrError(addr, why string) error {
	return configErr(fmt.Sprintf("nats: EMBEDDED_NATS_ADDR %q: %s", addr, why))
}

// ClientURL is the URL clients connect to, with the actual port.
func (e *Server) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server, waiting for it until ctx ends.
func (e *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nats: embedded server shutdown: %w", ctx.Err())
	}
}

// serverLog routes nats-server's logs to slog and keeps its fatal errors,
// which nats-server reports by logging, not returning.
type serverLog struct {
	log *slog.Logger
	mu  sync.Mutex
	f   string
}

func (l *serverLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f
}

func (l *serverLog) Noticef(format string, v ...any) { l.out(slog.LevelDebug, format, v) }
func (l *serverLog) Debugf(format string, v ...any)  { l.out(slog.LevelDebug, format, v) }
func (l *serverLog) Tracef(format string, v ...any)  {}
func (l *serverLog) Warnf(format string, v ...any)   { l.out(slog.LevelWarn, format, v) }
func (l *serverLog) Errorf(format string, v ...any)  { l.out(slog.LevelWarn, format, v) }

func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	if l.f == "" {
		l.f = msg
	}
	l.mu.Unlock()
	l.log.Error(msg)
}

func (l *serverLog) out(level slog.Level, format string, v []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

// configErr is a configuration error with a ready message.
func configErr(msg string) error { return tracker.ConfigError(errors.New(msg)) }
