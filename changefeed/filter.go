package changefeed

import (
	"errors"
	"fmt"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// Filter selects events. A field that is empty (or "*") matches anything;
// any other value matches exactly. Names are given as they are in the
// database, unescaped: the feed applies the subject escaping (package
// wire/token: "my.table" is the subject token my=2Etable) and the
// NAMING_CONVENTION.
//
// The feed subscribes to the narrowest subject pattern the naming
// convention allows ([Feed.Subject]) and then checks every decoded event
// against the filter, so a handler sees exactly the events the filter
// selects, whatever the subject template.
type Filter struct {
	// Phase is before_commit, after_commit or rollback.
	Phase tracker.Phase
	// Bind is the bind key ("default" for DATABASE_URI).
	Bind string
	// Schema is the PostgreSQL schema, or the MySQL/MariaDB database.
	Schema string
	// Table is the table name.
	Table string
	// Op is insert, update, delete, truncate or snapshot. A filter with an
	// Op never matches rollback events: select those with Phase.
	Op tracker.Op
	// Control selects snapshot lifecycle events instead of changes: those
	// of Bind (every bind when empty), on <prefix>.control.<bind>.snapshot,
	// and with Table ("schema.table") the table_done events of that table.
	// Phase, Schema and Op must be empty. A filter without Control never
	// selects lifecycle events, even when its Pattern brings them.
	Control bool
	// Pattern, when set, is a raw NATS subject pattern subscribed to as it
	// is (wildcards * and > allowed), for subjects of your own naming
	// convention; the other fields still select among the events it
	// brings.
	Pattern string
}

// any reports whether a filter value matches anything.
func isAny(v string) bool { return v == "" || v == "*" }

// Match reports whether m is an event f selects (Pattern aside: the
// subscription applies it).
func (f Filter) Match(m *Message) bool {
	if f.Control || m.Lifecycle != nil {
		l := m.Lifecycle
		return f.Control && l != nil && (isAny(f.Bind) || l.Bind == f.Bind) && (isAny(f.Table) || l.Table == f.Table)
	}
	if !isAny(string(f.Phase)) && m.Phase != f.Phase {
		return false
	}
	c := &m.Change
	if !isAny(f.Bind) && c.Bind != f.Bind {
		return false
	}
	if !isAny(f.Schema) && c.Schema != f.Schema {
		return false
	}
	if !isAny(f.Table) && c.Table != f.Table {
		return false
	}
	if !isAny(string(f.Op)) && (m.Phase == tracker.PhaseRollback || c.Op != f.Op) {
		return false
	}
	return true
}

// Validate reports a field no event can match (an unknown phase or op) and
// a Pattern that is not a NATS subject pattern. Subscriptions call it.
func (f Filter) Validate() error {
	if f.Control && (!isAny(string(f.Phase)) || !isAny(f.Schema) || !isAny(string(f.Op))) {
		return errors.New("changefeed: a Control filter selects snapshot lifecycle events by Bind and Table only: leave Phase, Schema and Op empty")
	}
	if !isAny(string(f.Phase)) && !f.Phase.Valid() {
		return fmt.Errorf("changefeed: filter phase %q: want before_commit, after_commit or rollback", f.Phase)
	}
	if !isAny(string(f.Op)) && !f.Op.Valid() {
		if f.Op == "rollback" {
			return errors.New(`changefeed: filter op "rollback": select rollback events with Phase: tracker.PhaseRollback`)
		}
		return fmt.Errorf("changefeed: filter op %q: want insert, update, delete, truncate or snapshot", f.Op)
	}
	if f.Pattern != "" {
		if err := wire.CheckPattern(f.Pattern); err != nil {
			return fmt.Errorf("changefeed: subject pattern %q: %w", f.Pattern, err)
		}
	}
	return nil
}
