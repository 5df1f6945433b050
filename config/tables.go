package config

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// The table-valued keys: BINDS, ENGINE_OPTIONS, NAMING_CONVENTION.

// engineOptionNames are the pool settings of ENGINE_OPTIONS and of a bind.
var engineOptionNames = []string{"pool_size", "max_overflow", "pool_timeout", "pool_recycle"}

// ignoredEngineOptions are SQLAlchemy create_engine options a Flask
// application may carry in ENGINE_OPTIONS that mean nothing to trackerd;
// they are accepted and ignored, so a shared configuration still loads.
var ignoredEngineOptions = []string{
	"connect_args", "echo", "echo_pool", "execution_options", "future", "hide_parameters",
	"isolation_level", "logging_name", "pool_logging_name", "pool_pre_ping", "pool_reset_on_return",
	"pool_use_lifo", "query_cache_size",
}

const (
	allowedPoolSize    = "a whole number, 0 or more"
	allowedMaxOverflow = "a whole number, 0 or more, or -1 for no limit"
)

// intOption parses a pool setting of at least lo; a bad value is reported
// and kept out of the Config.
func intOption(f field, v any, lo int64, allowed string) *int {
	n, ok := toInt(f, v, allowed)
	if !ok {
		return nil
	}
	if n < lo || n > math.MaxInt32 {
		f.bad(v, allowed, nil)
		return nil
	}
	i := int(n)
	return &i
}

// durationOption parses a pool setting in seconds; negative values are
// refused unless allowNegative.
func durationOption(f field, v any, allowNegative bool) *time.Duration {
	d, ok := toDuration(f, v, allowedSeconds)
	if !ok {
		return nil
	}
	if d < 0 && !allowNegative {
		f.bad(v, "0 or more seconds", nil)
		return nil
	}
	return &d
}

// setEngineOption parses one pool setting into o; it reports whether name
// is one.
func setEngineOption(o *EngineOptions, f field, name string, v any) bool {
	switch name {
	case "pool_size":
		o.PoolSize = intOption(f, v, 0, allowedPoolSize)
	case "max_overflow":
		o.MaxOverflow = intOption(f, v, -1, allowedMaxOverflow)
	case "pool_timeout":
		o.PoolTimeout = durationOption(f, v, false)
	case "pool_recycle":
		o.PoolRecycle = durationOption(f, v, true)
	default:
		return false
	}
	return true
}

// parseEngineOptions reads an ENGINE_OPTIONS-style table.
func parseEngineOptions(f field, m map[string]any) EngineOptions {
	var o EngineOptions
	for _, k := range sortedKeys(m) {
		if setEngineOption(&o, f.at(k), k, m[k]) || slices.Contains(ignoredEngineOptions, k) {
			continue
		}
		unknownKey(f.at(k), engineOptionNames, true)
	}
	return o
}

// mergeEngineOptions returns base with every field set in over replacing
// it.
func mergeEngineOptions(base, over EngineOptions) EngineOptions {
	if over.PoolSize != nil {
		base.PoolSize = over.PoolSize
	}
	if over.MaxOverflow != nil {
		base.MaxOverflow = over.MaxOverflow
	}
	if over.PoolTimeout != nil {
		base.PoolTimeout = over.PoolTimeout
	}
	if over.PoolRecycle != nil {
		base.PoolRecycle = over.PoolRecycle
	}
	return base
}

// bindKeys are the keys of a BINDS table entry ("url" is Flask-SQLAlchemy
// 3.x's name for "uri").
var bindKeys = []string{
	"uri", "url", "tables", "exclude_tables", "track", "slot", "publication", "server_id",
	"streaming", "heartbeat", "snapshot", "engine_options", "pool_size", "max_overflow", "pool_timeout", "pool_recycle",
}

const allowedBinds = "a table of bind key -> URI or table (a JSON object in the environment or a flag)"

func setBinds(st *state, f field, v any) {
	m, ok := toTable(f, v, allowedBinds)
	if !ok {
		return
	}
	binds := make(map[string]BindConfig, len(m))
	for _, key := range sortedKeys(m) {
		bf := f.at(key)
		if key == "" {
			bf.bad(nil, "a non-empty bind key", fmt.Errorf("empty bind key"))
			continue
		}
		var bc BindConfig
		switch x := m[key].(type) {
		case string:
			bc.URI = x
		case map[string]any:
			bc = parseBind(bf, x, key == DefaultBind)
		default:
			bf.bad(x, "a URI string or a table with uri", gotKind(x))
			continue
		}
		binds[key] = bc
	}
	st.c.Binds = binds
}

// parseBind reads one BINDS entry given as a table. The default bind's may
// lack a URI: it may hold options for DATABASE_URI's bind, which validate
// checks once every key is read.
func parseBind(f field, m map[string]any, isDefault bool) BindConfig {
	var bc BindConfig
	var direct EngineOptions // pool_size etc. given beside uri
	uriFrom := ""
	for _, k := range sortedKeys(m) {
		kf := f.at(k)
		v := m[k]
		switch k {
		case "uri", "url":
			if uriFrom != "" {
				kf.bad(nil, "one of uri and url", fmt.Errorf("set twice, as %s and %s", uriFrom, k))
				continue
			}
			uriFrom = k
			if s, ok := toString(kf, v); ok {
				bc.URI = s
			}
		case "tables":
			bc.Tables, _ = toList(kf, v)
		case "exclude_tables":
			bc.ExcludeTables, _ = toList(kf, v)
		case "track":
			if b, ok := toBool(kf, v); ok {
				bc.Track = &b
			}
		case "slot":
			bc.Slot, _ = toString(kf, v)
		case "publication":
			bc.Publication, _ = toString(kf, v)
		case "server_id":
			const allowed = "a whole number from 1 to 4294967295 (0 derives one from the bind key)"
			if n, ok := toInt(kf, v, allowed); ok {
				if n < 0 || n > math.MaxUint32 {
					kf.bad(v, allowed, nil)
				} else {
					bc.ServerID = uint32(n)
				}
			}
		case "streaming":
			bc.Streaming, _ = toBool(kf, v)
		case "snapshot":
			if s, ok := toString(kf, v); ok {
				switch s {
				case "", "never", "initial", "when_needed":
					bc.Snapshot = s
				default:
					kf.bad(v, `one of "never", "initial", "when_needed"`, nil)
				}
			}
		case "heartbeat":
			bc.Heartbeat, _ = toDuration(kf, v, allowedDuration+" (0 = the default 10s, negative = off)")
		case "engine_options":
			if t, ok := toTable(kf, v, "a table of pool_size, max_overflow, pool_timeout, pool_recycle"); ok {
				bc.Engine = parseEngineOptions(kf, t)
			}
		default:
			if !setEngineOption(&direct, kf, k, v) {
				unknownKey(kf, bindKeys, true)
			}
		}
	}
	if uriFrom == "" && !isDefault {
		f.at("uri").bad(nil, "the bind's URI", fmt.Errorf("missing"))
	}
	// A setting given both directly and in engine_options is ambiguous.
	for _, name := range engineOptionNames {
		if engineOptionSet(direct, name) && engineOptionSet(bc.Engine, name) {
			f.at(name).bad(nil, "it once", fmt.Errorf("set twice, directly and in engine_options"))
		}
	}
	bc.Engine = mergeEngineOptions(direct, bc.Engine)
	return bc
}

func engineOptionSet(o EngineOptions, name string) bool {
	switch name {
	case "pool_size":
		return o.PoolSize != nil
	case "max_overflow":
		return o.MaxOverflow != nil
	case "pool_timeout":
		return o.PoolTimeout != nil
	case "pool_recycle":
		return o.PoolRecycle != nil
	}
	return false
}

// templateKeys are the NAMING_CONVENTION keys holding templates: "subject"
// for every phase, then the per-phase overrides. Every other key is a
// user-defined static token.
var templateKeys = []string{"subject", "before_commit", "after_commit", "rollback"}

func setNamingConvention(st *state, f field, v any) {
	m, ok := toTable(f, v, "a table of templates and static tokens")
	if !ok {
		return
	}
	nc := make(map[string]string, len(m)+1)
	for _, k := range sortedKeys(m) {
		if s, ok := toString(f.at(k), m[k]); ok {
			nc[k] = s
		}
	}
	st.c.NamingConvention = nc
}
