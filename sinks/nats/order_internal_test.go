package nats

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// Issue 9, F10: one failed publish must not let a later event of the same
// bind be stored before it. These tests force failures on real servers —
// a refused publish, a server killed and restarted, a stream leader killed
// in a three-node cluster — and check the stream. On streams that allow
// fast batch publishing (nats-server 2.14+) the order must hold; on others
// ("one by one": a stream without allow_batched, or Debian's 2.9), every
// event stored ahead of an earlier one must be counted in Stats.Reordered.

// checkOrder checks the stream against the published ids: all there once;
// in order when batched; otherwise every overtaking event counted.
func checkOrder(t *testing.T, s *Sink, batch bool, stream, ids []string, logs *logBuffer) {
	t.Helper()
	sorted, want := slices.Clone(stream), slices.Clone(ids)
	slices.Sort(sorted)
	slices.Sort(want)
	if !slices.Equal(sorted, want) {
		t.Fatalf("the stream holds %d messages, want the %d published, once each", len(stream), len(ids))
	}
	over := overtakers(stream, ids)
	st := s.Stats()
	t.Logf("%s: %d events; Stats %+v; stored ahead of an earlier event: %d", modeName(batch), len(ids), st, over)
	if batch && over != 0 {
		t.Fatalf("%d events stored ahead of an earlier event of their bind, batched", over)
	}
	if st.Reordered != over {
		t.Fatalf("Stats.Reordered = %d, want %d (the events stored ahead of an earlier one)", st.Reordered, over)
	}
	if over > 0 && !logs.contains("events stored out of order") {
		t.Errorf("reordered events not logged:\n%s", logs.String())
	}
}

// distinctSubjects makes events whose subjects are all different: event i
// changes table t<i>.
type distinctSubjects struct {
	bind string
	n    uint64
}

func (g *distinctSubjects) next() *tracker.Event {
	g.n++
	c := testChange(g.bind, int(g.n), 0)
	c.Table = "t" + strconv.FormatUint(g.n, 10)
	ev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, ID: tracker.EventID(g.bind, "o", c.TxKey, 0, tracker.PhaseAfterCommit), LaneSeq: g.n, TxTotal: 1}
	return ev
}

// TestIntegrationOrderRejectedPublish: the stream refuses one event (its
// subject is full: max_msgs_per_subject 1 with discard_new_per_subject)
// while it stores the later ones, until the subject is purged.
func TestIntegrationOrderRejectedPublish(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	type run struct {
		name  string
		url   string
		batch bool
	}
	embedded := startEmbedded(t, "").ClientURL()
	for _, r := range []run{
		{"embedded 2.15/batched", embedded, batched},
		{"embedded 2.15/one by one", embedded, oneByOne},
		{"external/one by one", os.Getenv(envNATS), oneByOne},
	} {
		t.Run(r.name, func(t *testing.T) {
			testServer{url: r.url}.need(t)
			nc := dial(t, r.url)
			name := uniqueName(t)
			prefix := "t_" + name
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			cleanupStream(t, nc, name)
			if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
				Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute,
				MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true, AllowBatchPublish: r.batch,
			}); err != nil {
				t.Fatal(err)
			}
			var logs logBuffer
			s, err := New(t.Context(), nc, Options{Prefix: prefix, Stream: StreamConfig{Name: name, DuplicateWindow: time.Minute},
				AckTimeout: time.Second, MaxInflight: 512, Logger: logs.logger()})
			if err != nil {
				t.Fatal(err)
			}
			if s.batched.Load() != r.batch {
				t.Fatalf("the sink publishes %s, want %s", modeName(s.batched.Load()), modeName(r.batch))
			}
			lane, err := s.OpenLane(t.Context(), "b", nil)
			if err != nil {
				t.Fatal(err)
			}
			gen := distinctSubjects{bind: "b"}
			const n, refused = 400, 50
			evs := make([]*tracker.Event, n)
			ids := make([]string, n)
			for i := range evs {
				evs[i] = gen.next()
				ids[i] = evs[i].ID
			}
			// Fill the subject of event 50.
			full := string(s.subjects.Append(nil, tracker.PhaseAfterCommit, evs[refused-1].Change))
			if _, err := js.Publish(t.Context(), full, []byte("{}"), jetstream.WithMsgID("placeholder")); err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if err := lane.Publish(t.Context(), ev); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 10*time.Second, "the refusal", func() bool { return logs.contains("maximum messages per subject exceeded") })
			time.Sleep(200 * time.Millisecond) // let later events be stored where they can
			st, err := js.Stream(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Purge(t.Context(), jetstream.WithPurgeSubject(full)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := lane.Close(ctx); err != nil {
				t.Fatalf("Close: %v\n%s", err, logs.String())
			}
			checkOrder(t, s, r.batch, streamIDs(t, nc, name), ids, &logs)
			if !r.batch && s.Stats().Reordered == 0 {
				t.Errorf("one by one, nothing overtook the refused event: the test did not force a reorder")
			}
		})
	}
}

// waitAcked waits until the lane has n events acknowledged, showing its
// log if it does not.
func waitAcked(t *testing.T, rec *ackRecorder, n uint64, logs *logBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for rec.last() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events acknowledged after 60s; the lane's log:\n%s", rec.last(), n, tail(logs.String(), 5000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// natsServerBin builds nats-server, the version go.mod pins, once.
var natsServerBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "trackerd-nats-server-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build nats-server: %v\n%s", err, out)
	}
	return bin, nil
})

// serverProc is a nats-server process of a test.
type serverProc struct {
	name, conf, url string
	cmd             *exec.Cmd
	log             *os.File
}

func (p *serverProc) start(t *testing.T) {
	t.Helper()
	bin, err := natsServerBin()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-c", p.conf)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// kill sends SIGKILL to the process and waits for it.
func (p *serverProc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		p.cmd = nil
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startServers runs n nats-server processes with JetStream on loopback
// ports, clustered when n > 1, and waits until JetStream answers.
func startServers(t *testing.T, n int) []*serverProc {
	t.Helper()
	dir := t.TempDir()
	ports, cports := make([]int, n), make([]int, n)
	for i := range n {
		ports[i], cports[i] = freePort(t), freePort(t)
	}
	var routes []string
	for _, p := range cports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	procs := make([]*serverProc, n)
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q }\n", name, ports[i], filepath.Join(dir, name))
		if n > 1 {
			conf += fmt.Sprintf("cluster { name: trk, listen: 127.0.0.1:%d, routes: [%s] }\n", cports[i], strings.Join(routes, ", "))
		}
		p := &serverProc{name: name, conf: filepath.Join(dir, name+".conf"), url: fmt.Sprintf("nats://127.0.0.1:%d", ports[i])}
		if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		var err error
		if p.log, err = os.Create(filepath.Join(dir, name+".log")); err != nil {
			t.Fatal(err)
		}
		p.start(t)
		procs[i] = p
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				if b, err := os.ReadFile(p.log.Name()); err == nil {
					t.Logf("%s log (tail):\n%s", p.name, tail(string(b), 3000))
				}
			}
		}
	})
	for _, p := range procs {
		waitJetStream(t, p.url)
	}
	if n > 1 {
		// Every peer known to the meta group: a stream of n replicas can
		// be placed.
		nc := dial(t, procs[0].url)
		js, _ := jetstream.New(nc)
		eventually(t, 30*time.Second, "the cluster ready for R3 streams", func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "READY", Subjects: []string{"ready.>"}, Replicas: n}); err != nil {
				time.Sleep(100 * time.Millisecond)
				return false
			}
			_ = js.DeleteStream(ctx, "READY")
			return true
		})
	}
	return procs
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitJetStream waits until JetStream answers at url.
func waitJetStream(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := natsgo.Connect(url, natsgo.Timeout(time.Second))
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream at %s not ready: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publisher publishes n events on a lane in the background.
type publisher struct {
	ids  []string
	done chan error
}

func publishInBackground(ctx context.Context, lane tracker.Lane, n int) *publisher {
	gen := eventSeq{bind: "b", txSize: 5}
	p := &publisher{done: make(chan error, 1)}
	evs := make([]*tracker.Event, n)
	for i := range evs {
		evs[i] = gen.next()
		p.ids = append(p.ids, evs[i].ID)
	}
	go func() {
		for _, ev := range evs {
			if err := lane.Publish(ctx, ev); err != nil {
				p.done <- err
				return
			}
		}
		p.done <- nil
	}()
	return p
}

// TestIntegrationOrderLeaderKilled kills the stream's leader (SIGKILL) in
// a three-node cluster of nats-server processes while a lane publishes.
func TestIntegrationOrderLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, batch := range []bool{batched, oneByOne} {
		t.Run(modeName(batch), func(t *testing.T) {
			procs := startServers(t, 3)
			var urls []string
			for _, p := range procs {
				urls = append(urls, p.url)
			}
			nc, err := Connect(t.Context(), strings.Join(urls, ","), ConnectOptions{Name: t.Name()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			const name, prefix = "ORDER", "order"
			js, _ := jetstream.New(nc)
			if batch == oneByOne {
				// An existing stream without allow_batched is used as it is.
				if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"},
					Storage: jetstream.FileStorage, Replicas: 3, Duplicates: 10 * time.Minute}); err != nil {
					t.Fatal(err)
				}
			}
			var logs logBuffer
			s, err := New(t.Context(), nc, Options{Prefix: prefix, Stream: StreamConfig{Name: name, Replicas: 3},
				AckTimeout: 2 * time.Second, MaxInflight: 2048, Logger: logs.logger()})
			if err != nil {
				t.Fatal(err)
			}
			if s.batched.Load() != batch {
				t.Fatalf("the sink publishes %s, want %s", modeName(s.batched.Load()), modeName(batch))
			}
			var rec ackRecorder
			lane, err := s.OpenLane(t.Context(), "b", rec.acked)
			if err != nil {
				t.Fatal(err)
			}
			const n = 30000
			p := publishInBackground(t.Context(), lane, n)
			waitAcked(t, &rec, 5000, &logs)
			info, err := js.Stream(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			leader := info.CachedInfo().Cluster.Leader
			for _, pr := range procs {
				if pr.name == leader {
					t.Logf("killing the stream leader %s at %d acked", leader, rec.last())
					pr.kill()
				}
			}
			if err := <-p.done; err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			if err := lane.Close(ctx); err != nil {
				t.Fatalf("Close: %v\n%s", err, tail(logs.String(), 5000))
			}
			rec.check(t)
			if !logs.contains("publish failed") {
				t.Logf("no publish failed: the kill came between windows")
			}
			checkOrder(t, s, batch, readByGet(t, js, name), p.ids, &logs)
		})
	}
}

// readByGet reads a stream's message ids message by message, each
// request retried while the cluster settles after a kill.
func readByGet(t *testing.T, js jetstream.JetStream, name string) []string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	retry := func(what string, fn func(ctx context.Context) error) {
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			err := fn(ctx)
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	var st jetstream.Stream
	var info *jetstream.StreamInfo
	retry("stream info", func(ctx context.Context) (err error) {
		if st, err = js.Stream(ctx, name); err != nil {
			return err
		}
		info, err = st.Info(ctx)
		return err
	})
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		retry(fmt.Sprintf("message %d", seq), func(ctx context.Context) error {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				return err
			}
			ids = append(ids, m.Header.Get(wire.HeaderMsgID))
			return nil
		})
	}
	return ids
}

// TestIntegrationOrderServerRestart kills a nats-server process (SIGKILL)
// while a lane publishes, and starts it again on the same store.
func TestIntegrationOrderServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, batch := range []bool{batched, oneByOne} {
		t.Run(modeName(batch), func(t *testing.T) {
			procs := startServers(t, 1)
			nc, err := Connect(t.Context(), procs[0].url, ConnectOptions{Name: t.Name()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			const name, prefix = "ORDER", "order"
			js, _ := jetstream.New(nc)
			if batch == oneByOne {
				if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"},
					Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
					t.Fatal(err)
				}
			}
			var logs logBuffer
			s, err := New(t.Context(), nc, Options{Prefix: prefix, Stream: StreamConfig{Name: name},
				AckTimeout: time.Second, MaxInflight: 2048, Logger: logs.logger()})
			if err != nil {
				t.Fatal(err)
			}
			if s.batched.Load() != batch {
				t.Fatalf("the sink publishes %s, want %s", modeName(s.batched.Load()), modeName(batch))
			}
			var rec ackRecorder
			lane, err := s.OpenLane(t.Context(), "b", rec.acked)
			if err != nil {
				t.Fatal(err)
			}
			const n = 30000
			p := publishInBackground(t.Context(), lane, n)
			waitAcked(t, &rec, 5000, &logs)
			procs[0].kill()
			t.Logf("killed the server at %d acked", rec.last())
			time.Sleep(500 * time.Millisecond)
			procs[0].start(t)
			if err := <-p.done; err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			if err := lane.Close(ctx); err != nil {
				t.Fatalf("Close: %v\n%s", err, tail(logs.String(), 5000))
			}
			rec.check(t)
			checkOrder(t, s, batch, streamIDs(t, nc, name), p.ids, &logs)
		})
	}
}
