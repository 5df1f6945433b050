// Command trackerd-bench measures trackerd end to end, the way a user runs
// it: the trackerd binary against a real database and JetStream.
//
// Throughput: it writes a backlog of rows while trackerd is stopped, starts
// trackerd, and measures rows per second until every event is stored in
// the stream (acknowledged). Latency: with trackerd running, it commits
// single-row transactions at a steady rate and measures, for each, the time
// from the commit's return to its after_commit event being readable from the
// stream. It samples trackerd's resident memory throughout.
//
// With -mode snapshot it writes -rows rows first and starts trackerd with
// the bind option snapshot = "initial": rows per second until every row is
// stored, peak RSS, and, as the ceiling, the rate of JetStream async
// publishes of the same message size from this process. With -mode
// backfill it runs the latency run twice, the second time while a
// backfill of the -rows rows runs (trackerd backfill).
//
//	go build -o /tmp/trackerd ./cmd/trackerd
//	go run ./cmd/trackerd-bench -trackerd /tmp/trackerd -source postgres
//	go run ./cmd/trackerd-bench -trackerd /tmp/trackerd -source mysql -signals after_commit
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type options struct {
	trackerd string
	source   string
	pgURL    string
	myURL    string
	natsURL  string
	rows     int
	txRows   int
	signals  string
	rate     int
	duration time.Duration
	keep     bool
	timeout  time.Duration
	extra    []string
	mode     string
	logFile  string
}

func main() {
	var o options
	flag.StringVar(&o.trackerd, "trackerd", "trackerd", "the trackerd `binary` to measure")
	flag.StringVar(&o.source, "source", "postgres", "`postgres` or mysql")
	flag.StringVar(&o.pgURL, "postgres", envOr("TRACKERD_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"), "PostgreSQL `URL`")
	flag.StringVar(&o.myURL, "mysql", envOr("TRACKERD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"), "MySQL/MariaDB `URL`")
	flag.StringVar(&o.natsURL, "nats", envOr("TRACKERD_TEST_NATS_URL", "nats://127.0.0.1:4222"), "NATS `URL` (JetStream)")
	flag.IntVar(&o.rows, "rows", 200000, "backlog `rows` for the throughput run (0 skips it)")
	flag.IntVar(&o.txRows, "tx-rows", 1000, "rows per backlog `transaction`")
	flag.StringVar(&o.signals, "signals", "before_commit,after_commit", "SIGNALS for trackerd")
	flag.IntVar(&o.rate, "rate", 2000, "single-row transactions per `second` for the latency run (0 skips it)")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "length of the latency run")
	flag.BoolVar(&o.keep, "keep", false, "keep the table, slot and stream afterwards")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on the throughput run after this long")
	flag.StringVar(&o.mode, "mode", "stream", "`stream` (backlog throughput, then latency), snapshot (initial snapshot of -rows rows) or backfill (latency with and without a backfill)")
	flag.StringVar(&o.logFile, "log", "", "write trackerd's output to `FILE` at the end (backfill mode)")
	flag.Func("set", "`KEY=VALUE` passed to trackerd as TRACKER_KEY=VALUE (repeatable), e.g. -set MAX_INFLIGHT=8192", func(kv string) error {
		if !strings.Contains(kv, "=") {
			return errors.New("want KEY=VALUE")
		}
		o.extra = append(o.extra, "TRACKER_"+kv)
		return nil
	})
	flag.Parse()
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "trackerd-bench:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// db is the little the benchmark needs of a database.
type db interface {
	setup(ctx context.Context) error
	bindJSON(snapshot string) string
	backlog(ctx context.Context, rows, perTx int) error
	insertOne(ctx context.Context, id int) error
	cleanup(ctx context.Context)
}

func run(ctx context.Context, o options, w io.Writer) error {
	name := fmt.Sprintf("bench_%d_%04x", time.Now().Unix()%1e6, rand.IntN(1<<16))
	var d db
	switch o.source {
	case "postgres":
		d = &pgDB{url: o.pgURL, name: name}
	case "mysql":
		d = &myDB{url: o.myURL, name: name}
	default:
		return fmt.Errorf("-source %q: want postgres or mysql", o.source)
	}
	switch o.mode {
	case "stream", "snapshot", "backfill":
	default:
		return fmt.Errorf("-mode %q: want stream, snapshot or backfill", o.mode)
	}
	if err := d.setup(ctx); err != nil {
		return err
	}
	if !o.keep {
		defer d.cleanup(context.Background())
	}
	nc, err := natsgo.Connect(o.natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream := strings.ToUpper(name)
	if !o.keep {
		defer func() {
			js.DeleteStream(context.Background(), stream)
			js.DeleteKeyValue(context.Background(), name+"_cp")
		}()
	}
	dataDir, err := os.MkdirTemp("", "trackerd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"TRACKER_NATS_URL=" + o.natsURL, "TRACKER_STREAM_NAME=" + stream,
		"TRACKER_SUBJECT_PREFIX=" + name, "TRACKER_CHECKPOINT_BUCKET=" + name + "_cp", "TRACKER_DATA_DIR=" + dataDir,
		"TRACKER_HTTP_ADDR=off", "TRACKER_TRACK_MODIFICATIONS=true", "TRACKER_SIGNALS=" + o.signals,
	}
	env = append(env, o.extra...)
	perRow := uint64(strings.Count(o.signals, ",") + 1)
	if o.mode == "snapshot" {
		return snapshotRun(ctx, o, d, js, append(env, "TRACKER_BINDS="+d.bindJSON("initial")), stream, name, w)
	}
	env = append(env, "TRACKER_BINDS="+d.bindJSON("never"))
	if o.mode == "backfill" {
		return backfillRun(ctx, o, d, js, env, stream, name, w)
	}

	// A first start creates the slot (PostgreSQL) or the checkpoint (MySQL)
	// so that the backlog written while trackerd is stopped is followed.
	t, err := startTrackerd(o.trackerd, env)
	if err != nil {
		return err
	}
	if err := waitCheckpoint(ctx, js, name+"_cp"); err != nil {
		t.stop()
		return err
	}
	if err := t.stop(); err != nil {
		return err
	}
	fmt.Fprintf(w, "trackerd-bench: source=%s signals=%s nats=%s\n", o.source, o.signals, redact(o.natsURL))

	if o.rows > 0 {
		t0 := time.Now()
		if err := d.backlog(ctx, o.rows, o.txRows); err != nil {
			return err
		}
		fmt.Fprintf(w, "backlog: %d rows in %d-row transactions written in %v\n", o.rows, o.txRows, time.Since(t0).Round(time.Millisecond))
		want := uint64(o.rows) * perRow
		start := time.Now()
		t, err = startTrackerd(o.trackerd, env)
		if err != nil {
			return err
		}
		if err := waitMsgs(ctx, js, stream, want, o.timeout); err != nil {
			t.stop()
			return fmt.Errorf("%w; trackerd's output:\n%s", err, t.output())
		}
		wall := time.Since(start)
		info, _ := streamInfo(ctx, js, stream)
		first, last := info.State.FirstTime, info.State.LastTime
		span := last.Sub(first)
		fmt.Fprintf(w, "throughput: %d rows (%d events) acked in %v from start = %.0f rows/s (%.0f events/s); first-to-last stored %v = %.0f rows/s\n",
			o.rows, want, wall.Round(time.Millisecond), float64(o.rows)/wall.Seconds(), float64(want)/wall.Seconds(),
			span.Round(time.Millisecond), float64(o.rows)/span.Seconds())
		fmt.Fprintf(w, "memory during the backlog: peak RSS %.1f MB\n", float64(t.peakRSS())/1e6)
	} else if t, err = startTrackerd(o.trackerd, env); err != nil {
		return err
	}
	defer t.stop()

	if o.rate > 0 {
		lat, err := latencyRun(ctx, o, d, js, stream, name, t, 10_000_000)
		if err != nil {
			return err
		}
		fmt.Fprint(w, lat)
	}
	return nil
}

// snapshotRun measures an initial snapshot of o.rows rows.
func snapshotRun(ctx context.Context, o options, d db, js jetstream.JetStream, env []string, stream, name string, w io.Writer) error {
	t0 := time.Now()
	if err := d.backlog(ctx, o.rows, 10000); err != nil {
		return err
	}
	fmt.Fprintf(w, "trackerd-bench: snapshot of %d rows (written in %v), source=%s nats=%s\n", o.rows, time.Since(t0).Round(time.Millisecond), o.source, redact(o.natsURL))
	start := time.Now()
	t, err := startTrackerd(o.trackerd, env)
	if err != nil {
		return err
	}
	defer t.stop()
	// The rows and the started, table_done and completed events.
	if err := waitMsgs(ctx, js, stream, uint64(o.rows)+3, o.timeout); err != nil {
		return fmt.Errorf("%w; trackerd's output:\n%s", err, t.output())
	}
	wall := time.Since(start)
	info, err := streamInfo(ctx, js, stream)
	if err != nil {
		return err
	}
	span := info.State.LastTime.Sub(info.State.FirstTime)
	size := int(info.State.Bytes / max(info.State.Msgs, 1))
	rate := float64(o.rows) / wall.Seconds()
	fmt.Fprintf(w, "snapshot: %d rows stored in %v from start = %.0f rows/s; first-to-last stored %v = %.0f rows/s; peak RSS %.1f MB\n",
		o.rows, wall.Round(time.Millisecond), rate, span.Round(time.Millisecond), float64(o.rows)/span.Seconds(), float64(t.peakRSS())/1e6)
	ceil, err := publishCeiling(ctx, js, name+"_ceil", min(o.rows, 500000), size)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "ceiling: JetStream async publish of %d-byte messages from one connection: %.0f msgs/s; the snapshot reached %.2f of it\n",
		size, ceil, float64(o.rows)/span.Seconds()/ceil)
	return nil
}

// publishCeiling publishes n messages of size bytes to a stream of its own
// with async publishes (each with a Nats-Msg-Id, as trackerd's), and
// returns the rate at which they were acknowledged.
func publishCeiling(ctx context.Context, js jetstream.JetStream, name string, n, size int) (float64, error) {
	stream := strings.ToUpper(name)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), stream)
	body := []byte(strings.Repeat("x", size))
	start := time.Now()
	for i := 0; i < n; i++ {
		m := &natsgo.Msg{Subject: name + ".rows", Data: body, Header: natsgo.Header{}}
		m.Header.Set("Nats-Msg-Id", name+"/"+strconv.Itoa(i))
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		return 0, errors.New("ceiling: acknowledgements did not arrive within 5 minutes")
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// backfillRun measures the latency of a steady stream without, then with,
// a backfill of o.rows rows running.
func backfillRun(ctx context.Context, o options, d db, js jetstream.JetStream, env []string, stream, name string, w io.Writer) error {
	if err := d.backlog(ctx, o.rows, 10000); err != nil {
		return err
	}
	t, err := startTrackerd(o.trackerd, env)
	if err != nil {
		return err
	}
	defer t.stop()
	fmt.Fprintf(w, "trackerd-bench: latency with and without a backfill of %d rows, source=%s nats=%s\n", o.rows, o.source, redact(o.natsURL))
	defer func() {
		if o.logFile != "" {
			os.WriteFile(o.logFile, []byte(t.output()), 0o644)
		}
	}()
	alone, err := latencyRun(ctx, o, d, js, stream, name, t, 10_000_000)
	if err != nil {
		return err
	}
	fmt.Fprint(w, "without a backfill: "+alone)
	cmd := exec.CommandContext(ctx, o.trackerd, "backfill", "--bind", "bench")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("trackerd backfill: %w\n%s", err, out)
	}
	with, err := latencyRun(ctx, o, d, js, stream, name, t, 20_000_000)
	if err != nil {
		return err
	}
	fmt.Fprint(w, "during a backfill: "+with)
	return nil
}

// latencyRun commits single-row transactions at o.rate per second and
// measures commit-to-stored latency of each one's after_commit event.
func latencyRun(ctx context.Context, o options, d db, js jetstream.JetStream, stream, prefix string, t *trackerd, base int) (string, error) {
	info, err := streamInfo(ctx, js, stream)
	if err != nil {
		return "", err
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + ".after_commit.>"}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: info.State.LastSeq + 1,
	})
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	committed := map[int]time.Time{}
	arrived := map[int]time.Time{} // events seen before their commit returned to the client
	var lats []time.Duration
	received := 0
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		var ev struct {
			Data struct {
				Op    string                     `json:"op"`
				After map[string]json.RawMessage `json:"after"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data(), &ev) != nil || ev.Data.Op != "insert" {
			return // a backfill's rows are not the run's
		}
		id, _ := strconv.Atoi(string(ev.Data.After["id"]))
		mu.Lock()
		if c, ok := committed[id]; ok {
			lats = append(lats, now.Sub(c))
			delete(committed, id)
		} else {
			arrived[id] = now
		}
		received++
		mu.Unlock()
	})
	if err != nil {
		return "", err
	}
	defer cc.Stop()
	// Warm up, then measure at a steady rate.
	n := int(o.duration.Seconds() * float64(o.rate))
	interval := time.Second / time.Duration(o.rate)
	next := time.Now()
	for i := 0; i < n; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		id := base + i
		if err := d.insertOne(ctx, id); err != nil {
			return "", err
		}
		now := time.Now()
		mu.Lock()
		if a, ok := arrived[id]; ok {
			lats = append(lats, max(0, a.Sub(now)))
			delete(arrived, id)
		} else {
			committed[id] = now
		}
		mu.Unlock()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := received >= n
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lats) == 0 {
		return "", errors.New("latency run: no event arrived")
	}
	slices.Sort(lats)
	pct := func(p float64) time.Duration { return lats[min(len(lats)-1, int(p*float64(len(lats))))] }
	return fmt.Sprintf("latency: %d single-row transactions at %d/s: commit to after_commit stored p50 %v p90 %v p99 %v max %v (%d missing)\nmemory at a steady rate: RSS %.1f MB, peak %.1f MB\n",
		len(lats), o.rate, pct(0.50).Round(10*time.Microsecond), pct(0.90).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond),
		lats[len(lats)-1].Round(10*time.Microsecond), n-len(lats), float64(t.rss())/1e6, float64(t.peakRSS())/1e6), nil
}

// waitCheckpoint waits until trackerd has written a checkpoint, so that a
// restart resumes from it rather than from the server's current position.
func waitCheckpoint(ctx context.Context, js jetstream.JetStream, bucket string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if kv, err := js.KeyValue(ctx, bucket); err == nil {
			if keys, err := kv.Keys(ctx); err == nil {
				for _, k := range keys {
					if !strings.HasSuffix(k, ".lease") {
						return nil
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("trackerd wrote no checkpoint within 60s")
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

func waitMsgs(ctx context.Context, js jetstream.JetStream, stream string, want uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		info, err := streamInfo(ctx, js, stream)
		if err == nil && info.State.Msgs >= want {
			return nil
		}
		if time.Now().After(deadline) {
			got := uint64(0)
			if info != nil {
				got = info.State.Msgs
			}
			return fmt.Errorf("only %d of %d events stored after %v", got, want, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// trackerd is a running trackerd process with an RSS sampler.
type trackerd struct {
	cmd  *exec.Cmd
	out  *strings.Builder
	mu   sync.Mutex
	peak int64
	last int64
	done chan struct{}
}

func startTrackerd(bin string, env []string) (*trackerd, error) {
	t := &trackerd{cmd: exec.Command(bin, "run"), out: &strings.Builder{}, done: make(chan struct{})}
	t.cmd.Env = env
	pr, pw := io.Pipe()
	t.cmd.Stdout, t.cmd.Stderr = pw, pw
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			t.mu.Lock()
			t.out.WriteString(line + "\n")
			t.mu.Unlock()
			if strings.Contains(line, "msg=streaming") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-t.done:
				return
			case <-tick.C:
				if r := readRSS(t.cmd.Process.Pid); r > 0 {
					t.mu.Lock()
					t.last = r
					t.peak = max(t.peak, r)
					t.mu.Unlock()
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- t.cmd.Wait(); pw.Close() }()
	select {
	case <-ready:
		go func() { <-exited; close(t.done) }()
		return t, nil
	case err := <-exited:
		close(t.done)
		return nil, fmt.Errorf("trackerd exited before streaming (%v):\n%s", err, t.output())
	case <-time.After(60 * time.Second):
		t.cmd.Process.Kill()
		return nil, fmt.Errorf("trackerd did not start streaming within 60s:\n%s", t.output())
	}
}

func (t *trackerd) output() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.out.String()
}

func (t *trackerd) stop() error {
	t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.done:
	case <-time.After(60 * time.Second):
		t.cmd.Process.Kill()
		return errors.New("trackerd did not stop within 60s")
	}
	if c := t.cmd.ProcessState.ExitCode(); c != 0 {
		return fmt.Errorf("trackerd exited %d:\n%s", c, t.output())
	}
	return nil
}

func (t *trackerd) rss() int64     { t.mu.Lock(); defer t.mu.Unlock(); return t.last }
func (t *trackerd) peakRSS() int64 { t.mu.Lock(); defer t.mu.Unlock(); return t.peak }

// readRSS returns a process's resident set size in bytes, from /proc.
func readRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "?"
	}
	return u.Redacted()
}

// pgDB is a PostgreSQL table of the benchmark's own.
type pgDB struct {
	url, name string
	conn      *pgx.Conn
}

func (p *pgDB) setup(ctx context.Context) error {
	c, err := pgx.Connect(ctx, p.url)
	if err != nil {
		return err
	}
	p.conn = c
	_, err = c.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, name text, qty int, price numeric(10,2), at timestamptz DEFAULT now())`, p.name))
	return err
}

func (p *pgDB) bindJSON(snapshot string) string {
	b, _ := json.Marshal(map[string]any{"bench": map[string]any{"uri": p.url, "slot": p.name, "publication": p.name, "tables": []string{"public." + p.name}, "snapshot": snapshot}})
	return string(b)
}

func (p *pgDB) backlog(ctx context.Context, rows, perTx int) error {
	for i := 0; i < rows; i += perTx {
		_, err := p.conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (id, name, qty, price) SELECT g, 'item-' || g, g %% 100, g * 0.01 FROM generate_series($1::int, $2::int) g`, p.name),
			i+1, min(i+perTx, rows))
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *pgDB) insertOne(ctx context.Context, id int) error {
	_, err := p.conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (id, name, qty, price) VALUES ($1, 'one', 1, 1.00)`, p.name), id)
	return err
}

func (p *pgDB) cleanup(ctx context.Context) {
	p.conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, p.name)
	p.conn.Exec(ctx, fmt.Sprintf(`DROP PUBLICATION IF EXISTS %s`, p.name))
	p.conn.Exec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS %s`, p.name))
	p.conn.Close(ctx)
}

// myDB is a MySQL/MariaDB database of the benchmark's own.
type myDB struct {
	url, name string
	db        *sql.DB
	serverID  int
}

func (m *myDB) setup(ctx context.Context) error {
	u, err := url.Parse(m.url)
	if err != nil {
		return err
	}
	pass, _ := u.User.Password()
	m.db, err = sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/?multiStatements=true", u.User.Username(), pass, u.Host))
	if err != nil {
		return err
	}
	m.db.SetMaxOpenConns(1)
	m.serverID = 3_000_000 + rand.IntN(1_000_000)
	for _, q := range []string{
		"CREATE DATABASE " + m.name,
		fmt.Sprintf("CREATE TABLE %s.t (id INT PRIMARY KEY, name VARCHAR(40), qty INT, price DECIMAL(10,2), at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))", m.name),
	} {
		if _, err := m.db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

func (m *myDB) bindJSON(snapshot string) string {
	u, _ := url.Parse(m.url)
	u.Path = "/" + m.name
	b, _ := json.Marshal(map[string]any{"bench": map[string]any{"uri": u.String(), "server_id": m.serverID, "snapshot": snapshot}})
	return string(b)
}

func (m *myDB) backlog(ctx context.Context, rows, perTx int) error {
	for i := 0; i < rows; i += perTx {
		_, err := m.db.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s.t (id, name, qty, price) SELECT seq, CONCAT('item-', seq), seq %% 100, seq * 0.01 FROM %s.seq_%d_to_%d",
			m.name, m.name, i+1, min(i+perTx, rows)))
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *myDB) insertOne(ctx context.Context, id int) error {
	_, err := m.db.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s.t (id, name, qty, price) VALUES (?, 'one', 1, 1.00)", m.name), id)
	return err
}

func (m *myDB) cleanup(ctx context.Context) {
	m.db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+m.name)
	m.db.Close()
}
