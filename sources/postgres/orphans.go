package postgres

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/trackerd/trackerd/tracker"
)

// An open transaction whose changes were handed over on a connection that
// then dropped is normally sent again on the next one: streamed again from
// its start, whole at its commit, or, prepared, at its prepare. Not always:
// decoding restarts after the last commit handed over, and a transaction
// whose changes all lie before that is no longer streamed; if it then rolls
// back, the server sends nothing of it. Such an orphan would stay open in
// the tracker for ever, its before_commit events never retracted.
// checkOrphans asks the server what became of each (pg_xact_status):
//
//   - in progress (or prepared): it will come again; keep waiting;
//   - aborted: it is retracted (a rollback record);
//   - committed, or too old for the server to know: had it anything left
//     to publish, it arrives whole before the stream passes the server's
//     WAL position of that moment; if it has not by then, its changes
//     were all in subtransactions rolled back, and it is retracted.
//
// An orphan sent again is settled by the decoder (see decoder.adopt).

// xactNextQuery* read the next full transaction id and the server's WAL
// position, xactStatusQuery* the status of full transaction ids
// (pg_xact_status from PostgreSQL 13, txid_status before).
const (
	xactNextQuery13 = `SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::int8,
		(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END)::text`
	xactStatusQuery13 = `SELECT x, COALESCE(pg_catalog.pg_xact_status(x::text::xid8), '') FROM unnest($1::int8[]) AS x`
	xactNextQuery10   = `SELECT pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot()),
		(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END)::text`
	xactStatusQuery10 = `SELECT x, COALESCE(pg_catalog.txid_status(x), '') FROM unnest($1::int8[]) AS x`
)

// fullXid maps a 32-bit xid to the 64-bit one of the server whose next
// full transaction id is next: the xid is at most 2^31 transactions old,
// so it belongs to next's epoch unless its low half is not below next's,
// in which case it belongs to the epoch before. ok is false for an xid
// from before the first epoch.
func fullXid(xid uint32, next uint64) (full uint64, ok bool) {
	epoch := next >> 32
	if xid >= uint32(next) {
		if epoch == 0 {
			return 0, false
		}
		epoch--
	}
	return epoch<<32 | uint64(xid), true
}

// xactStatus returns the status of each xid ("committed", "aborted", "in
// progress", or "" when the server no longer knows) and the server's WAL
// position.
func (s *Source) xactStatus(ctx context.Context, xids []uint32) (map[uint32]string, lsn, error) {
	timeout := s.b.Pool.Timeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nextQ, statusQ := xactNextQuery13, xactStatusQuery13
	if s.major < 13 {
		nextQ, statusQ = xactNextQuery10, xactStatusQuery10
	}
	var next int64
	var at string
	if err := s.pool.QueryRow(ctx, nextQ).Scan(&next, &at); err != nil {
		return nil, 0, fmt.Errorf("read the next transaction id: %w", err)
	}
	walAt, err := parseLSN(at)
	if err != nil {
		return nil, 0, fmt.Errorf("server WAL position %q: %w", at, err)
	}
	out := make(map[uint32]string, len(xids))
	full := make([]int64, 0, len(xids))
	byFull := make(map[int64]uint32, len(xids))
	for _, x := range xids {
		f, ok := fullXid(x, uint64(next))
		if !ok {
			out[x] = ""
			continue
		}
		full = append(full, int64(f))
		byFull[int64(f)] = x
	}
	rows, err := s.pool.Query(ctx, statusQ, full)
	if err != nil {
		return nil, 0, fmt.Errorf("read transaction status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f int64
		var status string
		if err := rows.Scan(&f, &status); err != nil {
			return nil, 0, fmt.Errorf("read transaction status: %w", err)
		}
		out[byFull[f]] = status
	}
	return out, walAt, rows.Err()
}

// checkOrphans settles the orphans whose fate the server knows (see
// above). A failed query is tried again at the next call.
func (s *Source) checkOrphans(ctx context.Context, st *runState, h tracker.Handler) error {
	orphans := st.carry.orphans
	xids := make([]uint32, 0, len(orphans))
	for x := range orphans {
		xids = append(xids, x)
	}
	status, at, err := s.xactStatus(ctx, xids)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("could not ask the fate of transactions open before the reconnect; asking again later", "err", s.cs.safe(err))
		}
		return nil
	}
	for _, x := range xids {
		o := orphans[x]
		var why string
		switch status[x] {
		case "in progress":
			continue
		case "aborted":
			why = "it rolled back"
		default: // committed, or forgotten
			if o.until == 0 {
				o.until = max(at, 1)
				continue
			}
			if st.seen < o.until {
				continue
			}
			why = "it committed with nothing left to publish"
		}
		delete(orphans, x)
		s.log.Info("a transaction handed over before the reconnect was not sent again: "+why+"; retracting its before_commit events",
			slog.String("txkey", o.key), slog.String("txid", o.id))
		rec := tracker.Record{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: o.key, TxID: o.id, Streamed: true}}
		if err := s.hand(ctx, st, h, rec, 0); err != nil {
			return err
		}
	}
	return nil
}
