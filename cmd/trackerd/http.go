package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// serveHTTP starts the status page (/), /status.json, /healthz, /readyz
// and /metrics on HTTP_ADDR ("off" disables it), and the debug endpoints — /debug/events and, with DEBUG,
// /debug/pprof/ — on a loopback address only: on HTTP_ADDR when it is
// loopback, else on DEBUG_ADDR (default 127.0.0.1:0, logged). It returns a
// function that stops the servers.
//
// /debug/pprof/cmdline is never served: it shows the command line, which
// may hold a password.
func serveHTTP(ctx context.Context, cfg *config.Config, d *daemon, log *slog.Logger) (func(), error) {
	tr, b := d.tr, d.bus
	var servers []*http.Server
	stop := func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, srv := range servers {
			srv.Shutdown(c)
		}
	}
	serve := func(ln net.Listener, mux *http.ServeMux) {
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server", slog.Any("err", err))
			}
		}()
	}

	var main net.Listener
	if cfg.HTTPAddr != "" && cfg.HTTPAddr != "off" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, tracker.ConfigError(fmt.Errorf("HTTP_ADDR %s: %w (set HTTP_ADDR to a free address, port 0 for any, or off)", cfg.HTTPAddr, err))
		}
		main = ln
	}
	var debugLn net.Listener
	debugOnMain := false
	switch {
	case cfg.DebugAddr == "off":
	case cfg.DebugAddr == "" && main == nil:
		// HTTP_ADDR is off: no HTTP at all, unless DEBUG_ADDR asks.
	case main != nil && isLoopback(main.Addr()) && (cfg.DebugAddr == "" || sameFixedAddr(cfg.DebugAddr, cfg.HTTPAddr)):
		debugOnMain = true
	default:
		addr := cfg.DebugAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err == nil && !isLoopback(ln.Addr()) {
			ln.Close()
			err = fmt.Errorf("it listens on %s, which is not loopback", ln.Addr())
		}
		if err != nil {
			if main != nil {
				main.Close()
			}
			return nil, tracker.ConfigError(fmt.Errorf("DEBUG_ADDR %s: %w (set DEBUG_ADDR to a free loopback address such as 127.0.0.1:9188, port 0 for any, or off)", addr, err))
		}
		debugLn = ln
	}

	if main != nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(&metrics{tr: tr, bus: b, build: d.build})
		mux := http.NewServeMux()
		mountHealth(mux, tr, b, reg)
		d.http = "http://" + main.Addr().String()
		mountStatus(mux, d)
		paths := []string{"/", "/status.json", "/healthz", "/readyz", "/metrics"}
		if debugOnMain {
			paths = append(paths, mountDebug(mux, cfg, tr)...)
		}
		log.Info("HTTP endpoints listening", slog.String("addr", "http://"+main.Addr().String()),
			slog.String("paths", strings.Join(paths, " ")))
		serve(main, mux)
	}
	if debugLn != nil {
		mux := http.NewServeMux()
		paths := mountDebug(mux, cfg, tr)
		log.Info("debug endpoints listening", slog.String("addr", "http://"+debugLn.Addr().String()),
			slog.String("paths", strings.Join(paths, " ")))
		serve(debugLn, mux)
	}
	if cfg.Debug && debugLn == nil && !debugOnMain {
		log.Info("DEBUG is set, but no debug endpoints are served (DEBUG_ADDR or HTTP_ADDR is off)")
	}
	return stop, nil
}

// mountHealth adds /healthz, /readyz and /metrics to mux.
func mountHealth(mux *http.ServeMux, tr *tracker.Tracker, b *bus, reg *prometheus.Registry) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		st := tr.Stats()
		ready := tr.Ready() && (b == nil || b.sink == nil || b.sink.Ready())
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Header().Set("Content-Type", "application/json")
		out := map[string]any{"ready": ready}
		binds := map[string]string{}
		for _, s := range st {
			binds[s.Bind] = s.State
		}
		out["binds"] = binds
		if b != nil && b.nc != nil {
			out["nats"] = b.nc.Status().String()
		}
		json.NewEncoder(w).Encode(out)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}

// mountDebug adds /debug/events and, with DEBUG, the profiles to mux, which
// must listen on loopback only, and returns the paths it serves.
func mountDebug(mux *http.ServeMux, cfg *config.Config, tr *tracker.Tracker) []string {
	mux.HandleFunc("GET /debug/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		evs := tr.DebugEvents()
		if evs == nil {
			evs = []tracker.DebugEvent{}
		}
		json.NewEncoder(w).Encode(map[string]any{"record_queries": cfg.RecordQueriesEnabled(), "events": evs})
	})
	if !cfg.Debug {
		return []string{"/debug/events"}
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	// Never the command line: it may hold a password (--database-uri).
	mux.Handle("/debug/pprof/cmdline", http.NotFoundHandler())
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return []string{"/debug/events", "/debug/pprof/"}
}

// sameFixedAddr reports whether a and b are the same host:port with a
// port other than 0 (which picks a new free port on every listen).
func sameFixedAddr(a, b string) bool {
	_, port, err := net.SplitHostPort(a)
	return err == nil && port != "0" && a == b
}

// isLoopback reports whether a listener's address is a loopback address.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// metrics exports the tracker's and the sink's counters at scrape time.
// A series is never -1 for "unknown": an unknown value leaves its series
// out. The series of a bind are there from the first scrape (the tracker
// lists every tracked bind from its start), one per state for
// trackerd_bind_state.
type metrics struct {
	tr    *tracker.Tracker
	bus   *bus
	build buildInfo
	snaps snapshotRows
	// stats, when set, replaces tr.Stats (tests).
	stats func() []tracker.BindStats
}

var (
	mBuild       = prometheus.NewDesc("trackerd_build_info", "Always 1: the version, revision and Go version of this trackerd.", []string{"version", "revision", "goversion"}, nil)
	mState       = prometheus.NewDesc("trackerd_bind_state", "1 for the bind's current state, 0 for every other state.", []string{"bind", "state"}, nil)
	mConnected   = prometheus.NewDesc("trackerd_source_connected", "1 while the bind's source is connected to its database server.", []string{"bind"}, nil)
	mChanges     = prometheus.NewDesc("trackerd_changes_total", "Row changes read from the bind's source.", []string{"bind"}, nil)
	mTxs         = prometheus.NewDesc("trackerd_transactions_total", "Transactions whose commit was processed.", []string{"bind"}, nil)
	mPublished   = prometheus.NewDesc("trackerd_events_published_total", "Events handed to the sink.", []string{"bind"}, nil)
	mAcked       = prometheus.NewDesc("trackerd_events_acked_total", "Events acknowledged by the sink.", []string{"bind"}, nil)
	mLastEvent   = prometheus.NewDesc("trackerd_last_event_timestamp_seconds", "When the bind last handed an event to the sink (to within CHECKPOINT_INTERVAL); absent before the first.", []string{"bind"}, nil)
	mCommitAck   = prometheus.NewDesc("trackerd_commit_to_ack_seconds", "Per transaction, from its commit on the database to the acknowledgement of its last after_commit event (host clock against the database's).", []string{"bind"}, nil)
	mCheckpoints = prometheus.NewDesc("trackerd_checkpoints_total", "Checkpoints written.", []string{"bind"}, nil)
	mCheckpointT = prometheus.NewDesc("trackerd_checkpoint_timestamp_seconds", "When the last checkpoint was written.", []string{"bind"}, nil)
	mOpenTx      = prometheus.NewDesc("trackerd_open_transactions", "Transactions read but not yet committed.", []string{"bind"}, nil)
	mSpilled     = prometheus.NewDesc("trackerd_spilled_bytes", "Bytes of the open transaction spilled to disk.", []string{"bind"}, nil)
	mRetries     = prometheus.NewDesc("trackerd_receiver_retries_total", "In-process receiver calls that failed and were retried.", []string{"bind"}, nil)
	mReconnects  = prometheus.NewDesc("trackerd_source_reconnects_total", "Times the bind's source lost its connection to the database.", []string{"bind"}, nil)
	mLagBytes    = prometheus.NewDesc("trackerd_replication_lag_bytes", "Server WAL/binlog end minus the checkpointed position; absent while unknown.", []string{"bind"}, nil)
	mLagSeconds  = prometheus.NewDesc("trackerd_replication_lag_seconds", "Age of the oldest commit read but not yet checkpointed; absent while unknown.", []string{"bind"}, nil)
	mSinkPub     = prometheus.NewDesc("trackerd_sink_published_total", "Messages of the bind published to NATS.", []string{"bind"}, nil)
	mSinkAck     = prometheus.NewDesc("trackerd_sink_acked_total", "Messages of the bind acknowledged by JetStream.", []string{"bind"}, nil)
	mSinkRetry   = prometheus.NewDesc("trackerd_sink_retried_total", "Publishes of the bind retried after a failure or timeout.", []string{"bind"}, nil)
	mSinkDup     = prometheus.NewDesc("trackerd_sink_duplicates_total", "Publishes of the bind JetStream reported as duplicates.", []string{"bind"}, nil)
	mSinkTrunc   = prometheus.NewDesc("trackerd_sink_truncated_total", "Events of the bind whose large values were left out to fit max_payload.", []string{"bind"}, nil)
	mSinkInfl    = prometheus.NewDesc("trackerd_sink_inflight", "Messages of the bind published and not yet acknowledged.", []string{"bind"}, nil)
	mSinkReord   = prometheus.NewDesc("trackerd_sink_reordered_total", "Events of the bind the stream stored before an earlier event of the bind (streams without batch publishing, after a failed publish).", []string{"bind"}, nil)
	mSinkRecr    = prometheus.NewDesc("trackerd_sink_stream_recreated_total", "Times the stream was found deleted and created again; what it held is gone.", nil, nil)
	mSinkLimit   = prometheus.NewDesc("trackerd_sink_inflight_limit", "MAX_INFLIGHT: the most unacknowledged messages of one bind.", nil, nil)
	mNATSUp      = prometheus.NewDesc("trackerd_nats_connected", "1 while connected to NATS.", nil, nil)
	mSnapRows    = prometheus.NewDesc("trackerd_snapshot_rows_total", "Rows of the table that snapshots and backfills of the bind published, summed over every snapshot since this process started.", []string{"bind", "table"}, nil)
	mSnapEst     = prometheus.NewDesc("trackerd_snapshot_rows_estimated", "The server's estimate of the table's rows, for the bind's running (else latest) snapshot of it; absent while unknown.", []string{"bind", "table"}, nil)
	mSnapRunning = prometheus.NewDesc("trackerd_snapshots_running", "Snapshots and backfills of the bind running.", []string{"bind"}, nil)
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mBuild, mState, mConnected, mChanges, mTxs, mPublished, mAcked, mLastEvent, mCommitAck,
		mCheckpoints, mCheckpointT, mOpenTx, mSpilled, mRetries, mReconnects, mLagBytes, mLagSeconds,
		mSinkPub, mSinkAck, mSinkRetry, mSinkDup, mSinkTrunc, mSinkInfl, mSinkReord, mSinkRecr, mSinkLimit, mNATSUp,
		mSnapRows, mSnapEst, mSnapRunning} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge(mBuild, 1, m.build.Version, m.build.Revision, m.build.GoVersion)
	var sinkStats map[string]natssink.Stats
	if m.bus != nil && m.bus.sink != nil {
		sinkStats = m.bus.sink.BindStats()
	}
	stats := m.stats
	if stats == nil {
		stats = m.tr.Stats
	}
	binds := stats()
	for k, v := range m.snaps.update(binds) {
		counter(mSnapRows, v, k.bind, k.table)
	}
	for _, s := range binds {
		running := 0
		for _, si := range s.Snapshots {
			if si.State == tracker.SnapshotRunning {
				running++
			}
		}
		gauge(mSnapRunning, float64(running), s.Bind)
		for table, est := range snapshotEstimates(s.Snapshots) {
			gauge(mSnapEst, float64(est), s.Bind, table)
		}
		for _, state := range tracker.States {
			gauge(mState, bit(s.State == state), s.Bind, state)
		}
		gauge(mConnected, bit(s.SourceConnected), s.Bind)
		counter(mChanges, float64(s.Changes), s.Bind)
		counter(mTxs, float64(s.Transactions), s.Bind)
		counter(mPublished, float64(s.Published), s.Bind)
		counter(mAcked, float64(s.Acked), s.Bind)
		if !s.LastEventAt.IsZero() {
			gauge(mLastEvent, unixSeconds(s.LastEventAt), s.Bind)
		}
		h := s.CommitToAck
		buckets := make(map[float64]uint64, len(h.Bounds))
		var cum uint64
		for i, b := range h.Bounds {
			cum += h.Counts[i]
			buckets[b] = cum
		}
		ch <- prometheus.MustNewConstHistogram(mCommitAck, h.Count, h.Sum, buckets, s.Bind)
		counter(mCheckpoints, float64(s.Checkpoints), s.Bind)
		if !s.CheckpointAt.IsZero() {
			gauge(mCheckpointT, unixSeconds(s.CheckpointAt), s.Bind)
		}
		gauge(mOpenTx, float64(s.OpenTx), s.Bind)
		gauge(mSpilled, float64(s.SpilledBytes), s.Bind)
		counter(mRetries, float64(s.ReceiverRetry), s.Bind)
		counter(mReconnects, float64(s.Reconnects), s.Bind)
		if s.Lag.Bytes >= 0 {
			gauge(mLagBytes, float64(s.Lag.Bytes), s.Bind)
		}
		if s.LagKnown {
			gauge(mLagSeconds, s.Lag.Behind.Seconds(), s.Bind)
		}
		if sinkStats != nil {
			// A bind's sink counters are 0 until its lane opens.
			st := sinkStats[s.Bind]
			counter(mSinkPub, float64(st.Published), s.Bind)
			counter(mSinkAck, float64(st.Acked), s.Bind)
			counter(mSinkRetry, float64(st.Retried), s.Bind)
			counter(mSinkDup, float64(st.Duplicates), s.Bind)
			counter(mSinkTrunc, float64(st.Truncated), s.Bind)
			gauge(mSinkInfl, float64(st.InFlight), s.Bind)
			counter(mSinkReord, float64(st.Reordered), s.Bind)
		}
	}
	if m.bus == nil || m.bus.sink == nil {
		return
	}
	gauge(mSinkLimit, float64(m.bus.sink.InflightLimit()))
	counter(mSinkRecr, float64(m.bus.sink.Stats().StreamRecreated))
	gauge(mNATSUp, bit(m.bus.nc != nil && m.bus.nc.IsConnected()))
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// bindTable names a series of the snapshot metrics.
type bindTable struct{ bind, table string }

// snapshotRows makes trackerd_snapshot_rows_total a counter that never
// goes down, out of the binds' snapshot lists, which do: a bind's list
// starts empty again when its pipeline restarts, and a snapshot it
// resumes then counts its tables' rows from 0 again. It remembers, per
// bind, snapshot and table, the rows it last saw, and adds only their
// growth; a count seen lower than before, or a snapshot seen again after
// it was missing from a scrape, counts from 0. (A restart between two
// scrapes, after which the resumed snapshot has read more of a table than
// before, is taken for growth: the counter then misses the rows read before
// the restart since the last scrape, and never counts a row twice.)
type snapshotRows struct {
	mu    sync.Mutex
	seen  map[snapshotTable]int64
	total map[bindTable]float64
}

// snapshotTable is one table of one snapshot of a bind.
type snapshotTable struct{ bind, id, table string }

// update takes in the binds' snapshot lists and returns the counter's
// values: every (bind, table) seen since the start.
func (c *snapshotRows) update(stats []tracker.BindStats) map[bindTable]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total == nil {
		c.seen, c.total = map[snapshotTable]int64{}, map[bindTable]float64{}
	}
	seen := make(map[snapshotTable]int64, len(c.seen))
	for _, s := range stats {
		for _, si := range s.Snapshots {
			for table, n := range si.TableRows {
				k := snapshotTable{s.Bind, si.ID, table}
				prev, ok := c.seen[k]
				if !ok || n < prev {
					prev = 0
				}
				c.total[bindTable{s.Bind, table}] += float64(n - prev)
				seen[k] = n
			}
		}
	}
	c.seen = seen
	out := make(map[bindTable]float64, len(c.total))
	for k, v := range c.total {
		out[k] = v
	}
	return out
}

// snapshotEstimates returns the server's estimate of each table of a
// bind's snapshots (sorted by start, as BindStats lists them): the running
// snapshot's, else the latest one's; tables with an unknown estimate are
// left out.
func snapshotEstimates(snaps []tracker.SnapshotInfo) map[string]int64 {
	out := map[string]int64{}
	running := map[string]bool{}
	for _, si := range snaps {
		isRunning := si.State == tracker.SnapshotRunning
		for table, est := range si.TableEstimated {
			if running[table] && !isRunning {
				continue
			}
			out[table] = est
			running[table] = running[table] || isRunning
		}
	}
	for table, est := range out {
		if est < 0 {
			delete(out, table)
		}
	}
	return out
}
