package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stalledDrain starts trackerd on a nats-server of the test's own, writes a
// row and waits for its events, then freezes nats-server (SIGSTOP) and
// writes another: trackerd publishes its events and waits for their
// acknowledgements, so a drain begun now lasts until the server is thawed
// (the returned function). CHECKPOINT_INTERVAL is an hour: the only
// checkpoint that can cover the second row is the one written while
// stopping. It returns the bind's checkpoint before the freeze.
func stalledDrain(t *testing.T) (p *proc, bs *bus, thaw func(), before string) {
	t.Helper()
	ns := startNATS(t)
	name := uniq("sig")
	bs = &bus{url: ns.url(), stream: strings.ToUpper(name), prefix: name, bucket: name + "_cp"}
	nc, err := natsgo.Connect(bs.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bs.nc = nc
	bs.js, _ = jetstream.New(nc)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	p = startPG(t, bs, b, map[string]string{"TRACKER_CHECKPOINT_INTERVAL": "1h"}, "t")
	db := pgAdmin(t)
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.t VALUES (1)`, b.schema))
	bs.waitCount(t, 2, 30*time.Second)
	before = bindCheckpoint(t, bs)

	ns.cmd.Process.Signal(syscall.SIGSTOP)
	frozen := true
	thaw = func() {
		if frozen {
			ns.cmd.Process.Signal(syscall.SIGCONT)
			frozen = false
		}
	}
	t.Cleanup(thaw)
	pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.t VALUES (2)`, b.schema))
	time.Sleep(time.Second) // trackerd reads and publishes the row's events
	return p, bs, thaw, before
}

// TestDoubleSignalStillDrains: coreutils `timeout` signals trackerd and
// then its process group, so trackerd gets SIGTERM twice in a row
// (operator review row 18). A second SIGTERM soon after the first must not
// skip the drain: trackerd exits 0, having written its final checkpoint.
func TestDoubleSignalStillDrains(t *testing.T) {
	for _, gap := range []time.Duration{0, 50 * time.Millisecond} {
		t.Run(fmt.Sprintf("%v apart", gap), func(t *testing.T) {
			p, bs, thaw, before := stalledDrain(t)
			p.signal(syscall.SIGTERM)
			time.Sleep(gap)
			p.signal(syscall.SIGTERM)
			time.Sleep(500 * time.Millisecond)
			select {
			case <-p.done:
				t.Fatalf("trackerd exited (%v) during the drain after two SIGTERMs %v apart:\n%s", p.err, gap, p.out.String())
			default:
			}
			thaw()
			if code := p.exitCode(60 * time.Second); code != 0 {
				t.Fatalf("exit code %d, want 0:\n%s", code, p.out.String())
			}
			out := p.out.String()
			if !strings.Contains(out, "stopped cleanly") {
				t.Fatalf("trackerd did not log that it stopped cleanly:\n%s", out)
			}
			if gap > 0 && !strings.Contains(out, "still draining") {
				// Back to back, the kernel may deliver the two as one.
				t.Errorf("the second signal is not acknowledged on stderr:\n%s", out)
			}
			if bs.count(t) != 4 {
				t.Fatalf("%d events in the stream, want 4", bs.count(t))
			}
			if after := bindCheckpoint(t, bs); after == "" || after == before {
				t.Fatalf("checkpoint %q after stopping, %q before: the final checkpoint was not written", after, before)
			}
		})
	}
}

// TestSignalForcesExit: a third signal, or a second one well after the
// first, exits at once with status 1, without waiting for the drain.
func TestSignalForcesExit(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(p *proc)
	}{
		{"third signal", func(p *proc) {
			for range 3 {
				p.signal(syscall.SIGINT)
				time.Sleep(50 * time.Millisecond)
			}
		}},
		{"second signal 1.5s later", func(p *proc) {
			p.signal(syscall.SIGTERM)
			time.Sleep(1500 * time.Millisecond)
			p.signal(syscall.SIGTERM)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _, _, _ := stalledDrain(t)
			tc.send(p)
			if code := p.exitCode(5 * time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, p.out.String())
			}
			if !strings.Contains(p.out.String(), "exiting without waiting") {
				t.Fatalf("output lacks the reason:\n%s", p.out.String())
			}
		})
	}
}

// bindCheckpoint returns the value of the bus's one bind checkpoint (its
// lease aside), "" when there is none.
func bindCheckpoint(t testing.TB, bs *bus) string {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	kv, err := bs.js.KeyValue(ctx, bs.bucket)
	if err != nil {
		return ""
	}
	keys, _ := kv.Keys(ctx)
	var out []string
	for _, k := range keys {
		if strings.HasSuffix(k, ".lease") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatalf("checkpoint %s: %v", k, err)
		}
		out = append(out, string(e.Value()))
	}
	if len(out) > 1 {
		t.Fatalf("bucket %s holds %d checkpoints, want one", bs.bucket, len(out))
	}
	return strings.Join(out, "")
}
