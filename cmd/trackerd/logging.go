package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// newLogger returns trackerd's logger: text (logfmt) or JSON lines on w, at
// LOG_LEVEL. Its attributes are made readable for their format (see
// replaceAttr).
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch cfg.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	jsonFormat := cfg.LogFormat == "json"
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: replaceAttr(jsonFormat)}
	if jsonFormat {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// positionKeys are the attributes in which trackerd logs a bind's source
// position. A MySQL/MariaDB position is a JSON object in a string
// ({"gtid":"0-1-5","file":"mariadb-bin.000001","pos":4}): the logger makes
// it a group, pos.gtid=0-1-5 pos.file=... in text, an object in JSON.
var positionKeys = map[string]bool{
	"position": true, "pos": true, "from": true, "checkpoint": true, "its_position": true, "resume": true,
}

// replaceAttr is the loggers' slog.HandlerOptions.ReplaceAttr:
//   - durations are Go duration strings in text ("1m30s", as slog writes
//     them) and seconds, a number, in JSON (slog would write nanoseconds);
//   - a position held in a string as a JSON object (see positionKeys)
//     becomes a group of its fields;
//   - in JSON, any other string attribute holding a JSON object (the key
//     and row images ECHO logs) is written as that object, not as a
//     string.
func replaceAttr(jsonFormat bool) func(groups []string, a slog.Attr) slog.Attr {
	return func(groups []string, a slog.Attr) slog.Attr {
		switch a.Value.Kind() {
		case slog.KindDuration:
			if jsonFormat {
				return slog.Float64(a.Key, a.Value.Duration().Seconds())
			}
		case slog.KindString:
			if len(groups) > 0 {
				return a // members of a group this function made, or a caller's
			}
			s := a.Value.String()
			if !jsonObject(s) {
				return a
			}
			if positionKeys[a.Key] {
				if g, ok := jsonGroup(a.Key, s); ok {
					return g
				}
			}
			if jsonFormat {
				return slog.Any(a.Key, json.RawMessage(s))
			}
		}
		return a
	}
}

// jsonObject reports whether s is a JSON object.
func jsonObject(s string) bool {
	return len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' && json.Valid([]byte(s))
}

// jsonGroup turns the JSON object s into a group named key, its members in
// order: strings, numbers, booleans and null as themselves, arrays and
// objects as their JSON text.
func jsonGroup(key, s string) (slog.Attr, bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return slog.Attr{}, false
	}
	var attrs []any
	for dec.More() {
		t, err := dec.Token()
		name, ok := t.(string)
		if err != nil || !ok {
			return slog.Attr{}, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return slog.Attr{}, false
		}
		var v any
		d := json.NewDecoder(strings.NewReader(string(raw)))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return slog.Attr{}, false
		}
		switch x := v.(type) {
		case string:
			attrs = append(attrs, slog.String(name, x))
		case json.Number:
			if i, err := x.Int64(); err == nil {
				attrs = append(attrs, slog.Int64(name, i))
			} else {
				attrs = append(attrs, slog.String(name, x.String()))
			}
		case bool:
			attrs = append(attrs, slog.Bool(name, x))
		case nil:
			attrs = append(attrs, slog.Any(name, nil))
		default:
			attrs = append(attrs, slog.String(name, string(raw)))
		}
	}
	return slog.Group(key, attrs...), true
}

// logStart logs trackerd's one start-up line: its version, the binds
// (URIs without passwords), where events go and the stream.
func logStart(log *slog.Logger, cfg *config.Config, bs []binds.Bind) {
	var bindAttrs []any
	for _, b := range bs {
		v := b.URI.String()
		if !b.Track {
			v += " (not tracked)"
		}
		bindAttrs = append(bindAttrs, slog.String(b.Key, v))
	}
	target := redactURL(cfg.NATSURL)
	if cfg.NATSURL == "" {
		target = "embedded server (NATS_URL is not set)"
	}
	attrs := []any{slog.String("version", strings.TrimPrefix(versionString(), "trackerd ")), slog.Group("binds", bindAttrs...),
		slog.String("nats", target), slog.String("mode", cfg.PublishMode)}
	if cfg.PublishMode != string(natssink.Core) {
		attrs = append(attrs, slog.String("stream", cfg.StreamName))
	}
	attrs = append(attrs, slog.String("subjects", cfg.SubjectPrefix+".>"))
	log.Info("trackerd starting", attrs...)
}

// statser is what logProgress reads: *tracker.Tracker.
type statser interface{ Stats() []tracker.BindStats }

// logProgress logs one line per bind every interval until ctx ends: its
// state, the events acknowledged since the last line and in all, the
// checkpoint position and the lag.
func logProgress(ctx context.Context, log *slog.Logger, tr statser, every time.Duration) {
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	last := map[string]uint64{}
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			elapsed := now.Sub(lastAt)
			lastAt = now
			for _, s := range tr.Stats() {
				n := s.Acked - min(last[s.Bind], s.Acked)
				last[s.Bind] = s.Acked
				attrs := []slog.Attr{slog.String("bind", s.Bind), slog.String("state", s.State),
					slog.Uint64("events", n), slog.Uint64("events_total", s.Acked),
					slog.Duration("interval", elapsed.Round(time.Second))}
				if s.Checkpoint != "" {
					attrs = append(attrs, slog.String("position", s.Checkpoint))
				}
				if s.Lag.Bytes >= 0 {
					attrs = append(attrs, slog.Int64("lag_bytes", s.Lag.Bytes))
				}
				attrs = append(attrs, slog.Duration("lag", s.Lag.Behind.Round(time.Millisecond)))
				if s.State != tracker.StateStreaming && s.LastError != "" {
					attrs = append(attrs, slog.String("last_error", s.LastError))
				}
				log.LogAttrs(ctx, slog.LevelInfo, "progress", attrs...)
			}
		}
	}
}
