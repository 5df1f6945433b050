package tracker

import (
	"context"
	"encoding/json"
	"log/slog"
)

// echoChange logs a change for ECHO, once, with the bind, sequence and
// transaction the tracker gave it; its row images are JSON objects (a
// JSON log handler embeds them as they are, a text handler quotes them).
func (a *assembler) echoChange(ctx context.Context, c *Change) {
	attrs := []slog.Attr{
		slog.String("op", string(c.Op)), slog.String("schema", c.Schema), slog.String("table", c.Table),
		slog.String("txid", c.TxID), slog.String("txkey", c.TxKey), slog.Int("seq", c.Seq), slog.String("pos", c.Pos),
	}
	for _, r := range []struct {
		name string
		row  Row
	}{{"key", c.Key}, {"before", c.Before}, {"after", c.After}} {
		if !r.row.IsZero() {
			attrs = append(attrs, slog.Any(r.name, json.RawMessage(r.row.AppendJSON(nil))))
		}
	}
	if len(c.Unchanged) > 0 {
		attrs = append(attrs, slog.Any("unchanged", c.Unchanged))
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "change", attrs...)
}
