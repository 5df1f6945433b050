package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// builtinTypes resolves the types pgx knows; anything else decodes as a
// string. It is the resolver of decoders with no server to ask (tests,
// fuzzing).
type builtinTypes struct {
	m     *pgtype.Map
	plans map[uint32]*colType
}

func newBuiltinTypes() *builtinTypes {
	return &builtinTypes{m: pgtype.NewMap(), plans: make(map[uint32]*colType)}
}

func (t *builtinTypes) plan(oid uint32) *colType {
	if p, ok := t.plans[oid]; ok {
		return p
	}
	typ, _ := t.m.TypeForOID(oid)
	p := planForType(typ)
	t.plans[oid] = p
	return p
}

func (t *builtinTypes) forget(oid uint32) { delete(t.plans, oid) }

func (t *builtinTypes) primaryKey(uint32) ([]string, bool) { return nil, false }

// catalogTypes resolves types through pgx's type map, loading the ones it
// does not know (enums, domains, composites, arrays of them, extension types,
// and the few built-ins pgx lacks such as money and timetz) from pg_type
// over the query pool the first time a Relation message uses them.
type catalogTypes struct {
	builtinTypes
	ctx     context.Context
	pool    *pgxpool.Pool
	timeout time.Duration
	log     *slog.Logger
	stale   map[uint32]bool
}

func newCatalogTypes(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration, log *slog.Logger) *catalogTypes {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &catalogTypes{
		builtinTypes: *newBuiltinTypes(),
		ctx:          ctx, pool: pool, timeout: timeout, log: log,
		stale: make(map[uint32]bool),
	}
}

func (t *catalogTypes) plan(oid uint32) *colType {
	if p, ok := t.plans[oid]; ok {
		return p
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.timeout)
	defer cancel()
	typ, err := t.ensure(ctx, oid, 0)
	if err != nil {
		// Not cached: the next Relation message using it tries again.
		t.log.Warn("type unknown: its values are sent as text strings", "oid", oid, "err", err)
		return stringPlan()
	}
	p := planForType(typ)
	t.plans[oid] = p
	return p
}

func (t *catalogTypes) forget(oid uint32) {
	delete(t.plans, oid)
	t.stale[oid] = true
}

// maxTypeDepth bounds domain-of-array-of-domain chains.
const maxTypeDepth = 8

func (t *catalogTypes) ensure(ctx context.Context, oid uint32, depth int) (*pgtype.Type, error) {
	if typ, ok := t.m.TypeForOID(oid); ok && !t.stale[oid] {
		return typ, nil
	}
	if depth > maxTypeDepth {
		return nil, fmt.Errorf("type %d nests deeper than %d", oid, maxTypeDepth)
	}
	var (
		name, typtype, category, delim string
		base, elem                     uint32
	)
	err := t.pool.QueryRow(ctx, `SELECT t.typname::text, t.typtype::text, t.typbasetype, t.typelem, t.typcategory::text,
		COALESCE(e.typdelim::text, ',')
		FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem
		WHERE t.oid = $1`, oid).Scan(&name, &typtype, &base, &elem, &category, &delim)
	if err != nil {
		return nil, fmt.Errorf("load type %d: %w", oid, err)
	}
	typ := &pgtype.Type{Name: name, OID: oid}
	switch {
	case typtype == "e":
		typ.Codec = &pgtype.EnumCodec{}
	case typtype == "d" && base != 0:
		bt, err := t.ensure(ctx, base, depth+1)
		if err != nil {
			return nil, err
		}
		typ.Codec = bt.Codec
	case category == "A" && elem != 0:
		et, err := t.ensure(ctx, elem, depth+1)
		if err != nil {
			return nil, err
		}
		d := byte(',')
		if len(delim) == 1 {
			d = delim[0]
		}
		typ.Codec = &pgtype.ArrayCodec{ElementType: et, Delimiter: d}
	default:
		typ.Codec = pgtype.TextCodec{}
	}
	t.m.RegisterType(typ)
	delete(t.stale, oid)
	return typ, nil
}

func (t *catalogTypes) primaryKey(relid uint32) ([]string, bool) {
	ctx, cancel := context.WithTimeout(t.ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `SELECT a.attname::text
		FROM pg_catalog.pg_index i
		JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1 AND i.indisprimary
		ORDER BY array_position(i.indkey::int2[], a.attnum)`, relid)
	if err != nil {
		t.log.Warn("primary key unknown: the key is the replica identity", "relation", relid, "err", err)
		return nil, false
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, false
		}
		names = append(names, n)
	}
	if rows.Err() != nil {
		t.log.Warn("primary key unknown: the key is the replica identity", "relation", relid, "err", rows.Err())
		return nil, false
	}
	return names, true
}
