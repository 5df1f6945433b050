package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/internal/backoff"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/sources/mysql"
	"github.com/trackerd/trackerd/sources/postgres"
	"github.com/trackerd/trackerd/tracker"
)

// loadConfig parses a command's flags and loads the configuration; it
// returns the arguments that are not flags. extra adds the command's own
// flags. -h and --help print the command's help on stdout and return
// silentError{exitOK}.
func loadConfig(name string, args []string, lookup env, stdout, stderr io.Writer, extra func(*flag.FlagSet)) (*config.Config, []string, error) {
	fs := flag.NewFlagSet("trackerd "+name, flag.ContinueOnError)
	file := fs.String("config", "", "TOML configuration `file`")
	flags := make(map[string]string)
	config.BindFlags(fs, flags)
	if extra != nil {
		extra(fs)
	}
	rest, err := parseArgs(fs, name, args)
	if errors.Is(err, errHelp) {
		cmd, _ := findCommand(name)
		writeHelp(stdout, cmd, fs)
		return nil, nil, silentError{exitOK}
	}
	if err != nil {
		return nil, nil, err
	}
	if *file == "" {
		if v, ok := lookup("TRACKER_CONFIG"); ok {
			*file = v
		}
	}
	cfg, err := config.Load(config.Options{File: *file, Flags: flags, LookupEnv: lookup})
	if err != nil {
		return nil, nil, err
	}
	if secret := config.SecretFlags(flags); len(secret) > 0 {
		// Named, never shown: the value is the very thing to keep quiet.
		newLogger(cfg, stderr).Warn("a password or token is given on the command line, which every local user can read (ps, /proc/PID/cmdline): set it in the environment (TRACKER_<KEY>) or the --config file instead",
			slog.String("flags", strings.Join(secret, " ")))
	}
	return cfg, rest, nil
}

func cmdRun(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	cfg, rest, err := loadConfig("run", args, lookup, stdout, stderr, nil)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("run takes no arguments, got %q", rest)}
	}
	log := newLogger(cfg, stderr)
	logConfigNotes(cfg, log)
	if !cfg.Tracking() {
		log.Warn(cfg.TrackingDisabled()+"; exiting", slog.String("from", cfg.SourceOf("TRACK_MODIFICATIONS")))
		return nil
	}
	// Refuse a bad bind before starting anything.
	bs, err := binds.FromConfig(cfg)
	if err != nil {
		return err
	}
	logStart(log, cfg, bs)

	opts := []tracker.Option{
		tracker.WithLogger(log),
		tracker.WithSource(binds.Postgres, postgres.Open),
		tracker.WithSource(binds.MySQL, mysql.Open),
		tracker.WithReset(binds.Postgres, postgres.Reset),
		tracker.WithReset(binds.MySQL, func(ctx context.Context, b binds.Bind, from string, _ tracker.SourceOptions) (tracker.Reset, error) {
			return mysql.Reset(ctx, b, from)
		}),
	}
	bus, err := startBus(ctx, cfg, log)
	if err != nil {
		if interrupted(ctx, err) {
			log.Info("stopped cleanly: interrupted while waiting for NATS")
			return nil
		}
		return err
	}
	defer bus.close(log)
	opts = append(opts, tracker.WithSink(bus.sink), tracker.WithCheckpointStore(bus.store))
	if bus.embedded != nil {
		// The embedded server syncs its store every natsserver.SyncInterval:
		// the checkpoint trails it, so a power loss loses nothing it is past.
		opts = append(opts, tracker.WithCheckpointDelay(natsserver.CheckpointDelay))
	}

	tr, err := tracker.New(cfg, opts...)
	if err != nil {
		return err
	}
	d := newDaemon(cfg, tr, bus)
	stopHTTP, err := serveHTTP(ctx, cfg, d, log)
	if err != nil {
		return err
	}
	defer stopHTTP()
	pctx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	go logProgress(pctx, log, tr, cfg.ProgressInterval)
	if stopControl, err := startControl(bus.nc, cfg, d, log); err != nil {
		log.Warn("trackerd status cannot reach this instance over NATS", slog.Any("err", err))
	} else {
		defer stopControl()
	}
	err = tr.Run(ctx)
	switch {
	case err != nil && interrupted(ctx, err):
		// A signal while a bind was still starting (waiting for NATS, or
		// for its database): a clean stop, like one while streaming.
		log.Info("stopped cleanly: interrupted before every bind was streaming")
		return nil
	case err == nil:
		log.Info("stopped cleanly")
	}
	return err
}

// interrupted reports whether err is only ctx ending: SIGINT or SIGTERM
// cancelled what was under way.
func interrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// logConfigNotes logs what the configuration skipped (a Flask config
// file's own keys, at debug) and its advice about unwise values (at warn).
func logConfigNotes(cfg *config.Config, log *slog.Logger) {
	for _, k := range cfg.SkippedKeys() {
		log.Debug("config file key skipped: not a trackerd key", slog.String("key", k))
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
}

// bus is trackerd's NATS side: an embedded server when no NATS_URL is
// given, the connection, the sink and the checkpoint store.
type bus struct {
	embedded *natsserver.Server
	nc       *natsgo.Conn
	sink     *natssink.Sink
	store    tracker.CheckpointStore
	urlFile  string
}

func startBus(ctx context.Context, cfg *config.Config, log *slog.Logger) (*bus, error) {
	b := &bus{}
	url := cfg.NATSURL
	co := connectOptions(cfg, log)
	if url == "" {
		if cfg.DataDir == "" {
			return nil, tracker.ConfigError(errors.New("DATA_DIR is unset and there is no HOME to place it: set DATA_DIR, where the embedded NATS server keeps its data and credentials, or set NATS_URL"))
		}
		dir := cfg.NATSStoreDir
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "nats")
		}
		credFile := filepath.Join(cfg.DataDir, natsserver.CredentialsFile)
		creds, err := natsserver.LoadOrCreateCredentials(credFile, log)
		if err != nil {
			return nil, err
		}
		e, err := natsserver.Start(ctx, natsserver.Options{Addr: cfg.EmbeddedNATSAddr, StoreDir: dir, User: creds.User, Password: creds.Password,
			Logger: log.With(slog.String("component", "nats-server"))})
		if err != nil {
			return nil, err
		}
		b.embedded = e
		url = e.ClientURL()
		co = embeddedConnectOptions("trackerd", creds, log)
		// natsserver has logged the server's URL and store: say why.
		log.Info("NATS_URL is not set: events go to the embedded NATS server, on this host only", slog.String("credentials", credFile),
			slog.String("looked_at", cfg.LookedFor("NATS_URL")))
		b.urlFile = filepath.Join(cfg.DataDir, "nats.url")
		if err := os.WriteFile(b.urlFile, []byte(url+"\n"), 0o600); err != nil {
			log.Warn("cannot write the embedded server's URL for `trackerd tail`", slog.Any("err", err))
			b.urlFile = ""
		}
	}
	nc, err := natssink.Connect(ctx, url, co)
	if err != nil {
		b.close(log)
		return nil, err
	}
	b.nc = nc
	// NATS may not answer yet: keep trying, since trackerd must start and
	// resume once it does.
	err = retryUntil(ctx, log, "NATS JetStream is not answering; waiting", func() error {
		if b.sink == nil {
			s, err := natssink.New(ctx, nc, sinkOptions(cfg, log))
			if err != nil {
				return err
			}
			b.sink = s
		}
		if cfg.PublishMode == string(natssink.Core) {
			b.store = tracker.NewFileStore(cfg.CheckpointPath())
			return nil
		}
		// Its retries are logged (every 30 s while NATS is away): a bind
		// waiting for its lease or checkpoint is not silent.
		st, err := natssink.NewKVStore(ctx, nc, cfg.CheckpointBucket, natssink.KVLogger(log.With(slog.String("component", "checkpoints"))))
		if err != nil {
			return err
		}
		b.store = st
		return nil
	})
	if err != nil {
		b.close(log)
		return nil, err
	}
	return b, nil
}

func (b *bus) close(log *slog.Logger) {
	if b.nc != nil {
		if err := b.nc.Drain(); err != nil {
			log.Debug("draining the NATS connection", slog.Any("err", err))
		}
		b.nc.Close()
	}
	if b.embedded != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.embedded.Shutdown(ctx); err != nil {
			log.Warn("embedded NATS server shutdown", slog.Any("err", err))
		}
	}
	if b.urlFile != "" {
		os.Remove(b.urlFile)
	}
}

func connectOptions(cfg *config.Config, log *slog.Logger) natssink.ConnectOptions {
	a := cfg.NATS
	return natssink.ConnectOptions{
		Name: "trackerd", User: a.User, Password: a.Password, Token: a.Token, Creds: a.Creds, NKey: a.NKey,
		TLSCert: a.TLSCert, TLSKey: a.TLSKey, TLSCA: a.TLSCA, Logger: log.With(slog.String("component", "nats")),
	}
}

// embeddedConnectOptions connect to the embedded server with the
// credentials it requires; NATS_USER and the other NATS_* keys are for
// NATS_URL only.
func embeddedConnectOptions(name string, c natsserver.Credentials, log *slog.Logger) natssink.ConnectOptions {
	return natssink.ConnectOptions{Name: name, User: c.User, Password: c.Password, Logger: log.With(slog.String("component", "nats"))}
}

// embeddedTarget is the URL and connect options of the embedded server a
// running `trackerd run` with the same DATA_DIR announces in nats.url,
// with the credentials of nats.auth. The error matches fs.ErrNotExist when
// no trackerd announces one there.
func embeddedTarget(cfg *config.Config, name string, log *slog.Logger) (string, natssink.ConnectOptions, error) {
	data, err := os.ReadFile(filepath.Join(cfg.DataDir, "nats.url"))
	if err != nil {
		return "", natssink.ConnectOptions{}, err
	}
	url := strings.TrimSpace(string(data))
	creds, err := natsserver.ReadCredentials(filepath.Join(cfg.DataDir, natsserver.CredentialsFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The server of a trackerd from before credentials: none needed.
		co := natssink.ConnectOptions{Name: name, Logger: log.With(slog.String("component", "nats"))}
		return url, co, nil
	case err != nil:
		// Not fs.ErrNotExist, whatever the cause: the server is there.
		return "", natssink.ConnectOptions{}, fmt.Errorf("the embedded NATS server's credentials: %v", err)
	}
	return url, embeddedConnectOptions(name, creds, log), nil
}

func sinkOptions(cfg *config.Config, log *slog.Logger) natssink.Options {
	return natssink.Options{
		Prefix:           cfg.SubjectPrefix,
		NamingConvention: cfg.NamingConvention,
		Mode:             natssink.Mode(cfg.PublishMode),
		Stream: natssink.StreamConfig{
			Name:            cfg.StreamName,
			DuplicateWindow: cfg.DuplicateWindow,
			MaxAge:          cfg.StreamMaxAge,
			MaxBytes:        cfg.StreamMaxBytes,
			MaxMsgs:         cfg.StreamMaxMsgs,
			Replicas:        cfg.StreamReplicas,
		},
		MaxInflight:      cfg.MaxInflight,
		MaxInflightBytes: cfg.MaxInflightBytes,
		OversizePolicy:   cfg.OversizePolicy,
		Logger:           log.With(slog.String("component", "sink")),
		Echo:             cfg.Echo,
	}
}

// retryUntil calls fn until it succeeds, a configuration error comes back,
// or ctx ends, backing off (backoff.Reconnect: 100 ms to 10 s, jittered)
// and logging msg.
func retryUntil(ctx context.Context, log *slog.Logger, msg string, fn func() error) error {
	bo := backoff.Reconnect.New()
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || isConfigError(err) {
			return err
		}
		log.Warn(msg, slog.Any("err", err), slog.Int("attempt", attempt))
		if werr := bo.Wait(ctx); werr != nil {
			return fmt.Errorf("%s: %w (last: %v)", msg, werr, err)
		}
	}
}

// isConfigError reports errors that retrying cannot fix: exit status 2.
func isConfigError(err error) bool {
	var fe *config.FieldError
	var ue *binds.URIError
	var use usageError
	return errors.As(err, &fe) || errors.As(err, &ue) || errors.As(err, &use) ||
		errors.Is(err, tracker.ErrConfig) || errors.Is(err, binds.ErrUnsupportedDialect)
}
