package mysql

import (
	"context"
	"log/slog"
)

// go-mysql logs through slog; its lines are demoted here.

// demoteHandler logs go-mysql's messages at debug level: it logs errors
// that it also returns, which trackerd reports itself.
type demoteHandler struct{ h slog.Handler }

func (d demoteHandler) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}

func (d demoteHandler) Handle(ctx context.Context, r slog.Record) error {
	r2 := slog.NewRecord(r.Time, slog.LevelDebug, "go-mysql: "+r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "config" { // the syncer's whole configuration
			return true
		}
		if err, ok := a.Value.Any().(error); ok {
			// pingcap errors print stack traces under %+v.
			a = slog.String(a.Key, err.Error())
		}
		r2.AddAttrs(a)
		return true
	})
	return d.h.Handle(ctx, r2)
}

func (d demoteHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteHandler{d.h.WithAttrs(as)}
}

func (d demoteHandler) WithGroup(name string) slog.Handler { return demoteHandler{d.h.WithGroup(name)} }
