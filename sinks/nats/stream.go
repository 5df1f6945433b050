package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
)

// streamConfig is the configuration of the stream New creates.
func (s *Sink) streamConfig() jetstream.StreamConfig {
	o := s.o.Stream
	cfg := jetstream.StreamConfig{
		Name:         o.Name,
		Description:  "trackerd change events",
		Subjects:     []string{s.subjects.StreamSubject()},
		Storage:      jetstream.FileStorage,
		Retention:    jetstream.LimitsPolicy,
		Discard:      jetstream.DiscardOld,
		Duplicates:   o.DuplicateWindow,
		MaxAge:       o.MaxAge,
		MaxBytes:     o.MaxBytes,
		MaxMsgs:      o.MaxMsgs,
		Replicas:     max(o.Replicas, 1),
		MaxMsgSize:   -1,
		MaxConsumers: -1,
	}
	if s.js != nil && serverAtLeast(s.js.Conn().ConnectedServerVersion(), 2, 14) {
		// Fast batch publishing keeps a bind's order through any failure
		// (see the lane). Servers before 2.14 do not know it.
		cfg.AllowBatchPublish = true
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
	if cfg.MaxMsgs == 0 {
		cfg.MaxMsgs = -1
	}
	// The server refuses a duplicate window longer than the maximum age.
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		cfg.Duplicates = cfg.MaxAge
	}
	return cfg
}

// ensureStream makes sure the stream exists and captures the prefix, and
// returns its max_msg_size (-1 or 0 when unlimited). Errors that retrying
// cannot fix match tracker.ErrConfig.
func (s *Sink) ensureStream(ctx context.Context) (int32, error) {
	want := s.streamConfig()
	st, err := s.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = s.js.CreateStream(ctx, want)
		switch {
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			st, err = s.js.Stream(ctx, want.Name) // created meanwhile by another instance
		case err == nil && s.streamSeen.Load():
			s.recreated.Add(1)
			s.log.Warn("the stream was deleted while trackerd ran, and is created again: the events it held are gone, and the checkpoints are past those trackerd had stored in it, so they are not sent again (each bind logs which of its events are lost)",
				slog.String("stream", want.Name), slog.String("subjects", want.Subjects[0]))
			defer s.streamRecreated(want.Name)
		case err == nil:
			s.log.Info("created stream", slog.String("stream", want.Name),
				slog.String("subjects", want.Subjects[0]), slog.Duration("duplicate_window", want.Duplicates),
				slog.Bool("batch_publish", want.AllowBatchPublish))
		case isAPIError(err) && !isUnavailable(err):
			return 0, tracker.ConfigError(fmt.Errorf("create stream %s for %s: %w (check STREAM_* settings; an existing stream may already capture these subjects: then set STREAM_NAME to it)",
				want.Name, want.Subjects[0], err))
		}
	}
	if err != nil {
		if jetStreamMissing(err) {
			return 0, fmt.Errorf("stream %s: JetStream does not answer (is it enabled on the server and for this account? PUBLISH_MODE=core publishes without it): %w", want.Name, err)
		}
		if isAPIError(err) && !isUnavailable(err) {
			return 0, tracker.ConfigError(fmt.Errorf("stream %s: %w", want.Name, err))
		}
		return 0, fmt.Errorf("stream %s: %w", want.Name, err)
	}
	cfg := st.CachedInfo().Config
	if !anyCovers(cfg.Subjects, want.Subjects[0]) {
		return 0, tracker.ConfigError(fmt.Errorf("stream %s exists with subjects [%s], which do not capture %s: add %q to its subjects, set STREAM_NAME to a stream that captures them, or SUBJECT_PREFIX to a prefix this one captures",
			want.Name, strings.Join(cfg.Subjects, " "), want.Subjects[0], want.Subjects[0]))
	}
	if cfg.NoAck {
		return 0, tracker.ConfigError(fmt.Errorf("stream %s does not acknowledge publishes (no_ack): trackerd needs acks to checkpoint; turn no_ack off or use PUBLISH_MODE=core", want.Name))
	}
	if !cfg.AllowBatchPublish && !s.streamSeen.Load() {
		s.log.Info("the stream does not allow batch publishing: events are published one by one, and a failed publish can let later events of a bind into the stream before it (counted in trackerd_sink_reordered_total, and put back in order by changefeed); on nats-server 2.14 or later, allow it with `nats stream edit "+want.Name+" --allow-fast`",
			slog.String("stream", want.Name))
	}
	s.batched.Store(cfg.AllowBatchPublish)
	s.streamSeen.Store(true)
	if cfg.Duplicates != want.Duplicates {
		s.log.Warn("the stream's duplicate window is not DUPLICATE_WINDOW; leaving the stream as it is",
			slog.String("stream", want.Name), slog.Duration("stream_window", cfg.Duplicates), slog.Duration("configured", want.Duplicates))
	}
	return cfg.MaxMsgSize, nil
}

// serverAtLeast reports whether a nats-server version ("2.14.1",
// "2.15.0-beta.1") is at least major.minor.
func serverAtLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// jetStreamMissing reports an error that says nothing serves JetStream's API.
func jetStreamMissing(err error) bool {
	return errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

func isAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}

// isUnavailable reports a JetStream API error of the server's own (5xx:
// unavailable, or a failure such as a store it could not create), which
// trying again may cure, unlike a refused request (4xx).
func isUnavailable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code >= 500
}

// anyCovers reports whether one of the stream subjects captures every
// subject that pattern matches.
func anyCovers(streamSubjects []string, pattern string) bool {
	for _, s := range streamSubjects {
		if covers(s, pattern) {
			return true
		}
	}
	return false
}

// covers reports whether every subject matched by pattern q is matched by
// pattern p ("*" is one token, ">" one or more at the end).
func covers(p, q string) bool {
	pt := strings.Split(p, ".")
	qt := strings.Split(q, ".")
	for i, t := range pt {
		if t == ">" {
			return i < len(qt)
		}
		if i >= len(qt) {
			return false
		}
		switch {
		case qt[i] == ">":
			return false // q matches several tokens where p matches one
		case t == "*":
		case t != qt[i]:
			return false
		}
	}
	return len(pt) == len(qt)
}
