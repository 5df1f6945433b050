package changefeed_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/tracker"
)

// genTxs returns n transactions over binds a and b, of 1 to maxSize
// changes each, over tables orders, items and users.
func genTxs(n, maxSize int, seed uint64) []txSpec {
	r := rand.New(rand.NewPCG(seed, 7))
	tables := []string{"orders", "items", "users"}
	out := make([]txSpec, n)
	for i := range out {
		s := txSpec{bind: []string{"a", "b"}[r.IntN(2)]}
		for range 1 + r.IntN(maxSize) {
			s.tables = append(s.tables, tables[r.IntN(len(tables))])
		}
		out[i] = s
	}
	return out
}

// wantIDs lists the event ids of the transactions, numbered from firstTx,
// in the phases given, by bind in publication order.
func wantIDs(specs []txSpec, firstTx int, phases ...tracker.Phase) map[string][]string {
	out := map[string][]string{}
	for i, s := range specs {
		key := fmt.Sprintf("lsn-%016X", firstTx+i)
		for _, ph := range phases {
			if ph == tracker.PhaseAfterCommit && s.rollback {
				continue
			}
			for j := range s.tables {
				out[s.bind] = append(out[s.bind], tracker.EventID(s.bind, tracker.Origin("scripted/"+s.bind), key, int64(j), ph))
			}
		}
	}
	return out
}

// byBind groups event ids by bind, in the order received.
func byBind(ms []changefeed.Message) map[string][]string {
	out := map[string][]string{}
	for _, m := range ms {
		out[m.Change.Bind] = append(out[m.Change.Bind], m.ID)
	}
	return out
}

func TestIntegrationSubscribe(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		f := b.feed(t)
		var orders, bAfter, items, rollbacks collector
		for _, s := range []struct {
			flt changefeed.Filter
			c   *collector
		}{
			{changefeed.Filter{Table: "orders", Op: tracker.OpInsert}, &orders},
			{changefeed.Filter{Phase: tracker.PhaseAfterCommit, Bind: "b"}, &bAfter},
			{changefeed.Filter{Pattern: b.prefix + ".before_commit.>", Table: "items"}, &items},
			{changefeed.Filter{Phase: tracker.PhaseRollback}, &rollbacks},
		} {
			sub, err := f.Subscribe(t.Context(), s.flt, s.c.handle)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { stop(t, sub) })
		}
		specs := []txSpec{
			{bind: "a", tables: []string{"orders", "items", "orders"}},
			{bind: "b", tables: []string{"orders"}},
			{bind: "a", tables: []string{"users", "orders"}, rollback: true},
		}
		b.publish(t, specs, 1)
		eventually(t, 10*time.Second, "the orders inserts", func() bool { return orders.len() >= 7 })
		eventually(t, 10*time.Second, "the rollback", func() bool { return rollbacks.len() >= 1 })
		time.Sleep(100 * time.Millisecond) // nothing more may come

		got := byBind(orders.messages())
		want := map[string][]string{
			"a": {oid("a", "lsn-0000000000000001/0/before_commit"), oid("a", "lsn-0000000000000001/2/before_commit"),
				oid("a", "lsn-0000000000000001/0/after_commit"), oid("a", "lsn-0000000000000001/2/after_commit"),
				oid("a", "lsn-0000000000000003/1/before_commit")},
			"b": {oid("b", "lsn-0000000000000002/0/before_commit"), oid("b", "lsn-0000000000000002/0/after_commit")},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("orders inserts:\n got %v\nwant %v", got, want)
		}
		if got := summary(bAfter.messages()); fmt.Sprint(got) != "[after_commit b orders 2000 0/1]" {
			t.Fatalf("bind b after_commit: %v", got)
		}
		if got := summary(items.messages()); fmt.Sprint(got) != "[before_commit a items 1001 1/0]" {
			t.Fatalf("raw pattern and table: %v", got)
		}
		rb := rollbacks.messages()
		if len(rb) != 1 || rb[0].Retract == nil || rb[0].Retract.TxKey != "lsn-0000000000000003" ||
			fmt.Sprint(rb[0].Retract.Ranges) != "[{0 1}]" || rb[0].Change.Bind != "a" {
			t.Fatalf("rollback: %+v", rb)
		}
		for _, m := range orders.messages() {
			if m.Stream != 0 || m.Delivered != 0 || len(m.Raw) == 0 || !strings.HasPrefix(m.Subject, b.prefix+".") || m.Source != "/trackerd/"+m.Change.Bind+"/"+tracker.Origin("scripted/"+m.Change.Bind) {
				t.Fatalf("core message: %+v", m)
			}
		}
	})
}

// TestIntegrationConsumeRestart stops a durable consumer in the middle of
// the stream and starts it again while trackerd goes on publishing: every
// event is handled at least once, in stream order, and nothing is left
// unacknowledged.
func TestIntegrationConsumeRestart(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		first := genTxs(150, 6, 1)
		b.publish(t, first, 1)
		total := int(b.count(t))

		f := b.feed(t)
		var run1 collector
		stopAt := total / 3
		var n atomic.Int64
		ctx1, stop1 := context.WithCancel(t.Context())
		defer stop1()
		sub1, err := f.Consume(ctx1, "restart", changefeed.Filter{}, func(ctx context.Context, m changefeed.Message) error {
			if n.Add(1) == int64(stopAt) {
				stop1() // stopped in the middle: the rest of its batch goes back
			}
			return run1.handle(ctx, m)
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-sub1.Closed():
		case <-time.After(30 * time.Second):
			t.Fatalf("first run did not stop; it handled %d", run1.len())
		}
		if err := sub1.Err(); err != nil {
			t.Fatal(err)
		}
		if got := run1.len(); got < stopAt || got >= total {
			t.Fatalf("first run handled %d events, want %d up to %d", got, stopAt, total)
		}
		// trackerd goes on while the consumer is down.
		second := genTxs(50, 6, 2)
		b.publish(t, second, 1000)
		total = int(b.count(t))

		var run2 collector
		sub2, err := f.Consume(t.Context(), "restart", changefeed.Filter{}, run2.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop(t, sub2)
		seen := func() map[string]int {
			ids := map[string]int{}
			for _, m := range append(run1.messages(), run2.messages()...) {
				ids[m.ID]++
			}
			return ids
		}
		eventually(t, 30*time.Second, fmt.Sprintf("%d distinct events", total), func() bool { return len(seen()) >= total })

		want := wantIDs(first, 1, tracker.PhaseBeforeCommit, tracker.PhaseAfterCommit)
		for k, v := range wantIDs(second, 1000, tracker.PhaseBeforeCommit, tracker.PhaseAfterCommit) {
			want[k] = append(want[k], v...)
		}
		ids := seen()
		for bind, list := range want {
			for _, id := range list {
				if ids[id] == 0 {
					t.Fatalf("bind %s: event %s missed", bind, id)
				}
			}
		}
		if len(ids) != total {
			t.Fatalf("%d distinct events handled, the stream holds %d", len(ids), total)
		}
		// The first run sees its events in stream order. (After a restart,
		// the events handed back come first, but a server may interleave
		// them with others: order across a restart is not promised.)
		ms := run1.messages()
		for i := 1; i < len(ms); i++ {
			if ms[i].Stream <= ms[i-1].Stream {
				t.Fatalf("first run: stream sequence %d after %d", ms[i].Stream, ms[i-1].Stream)
			}
		}
		t.Logf("first run handled %d events, second %d, %d duplicates", run1.len(), run2.len(), run1.len()+run2.len()-total)
		waitAcked(t, b, "restart")
	})
}

// waitAcked waits until the durable has nothing pending or unacknowledged.
func waitAcked(t *testing.T, b *bus, durable string) {
	t.Helper()
	js, _ := jetstream.New(b.nc)
	eventually(t, 10*time.Second, "every message acknowledged", func() bool {
		c, err := js.Consumer(t.Context(), b.stream, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	})
}

// TestIntegrationConsumeRetry: a failing handler holds the subscription on
// its event and gets it again, in order, without a redelivery by the
// server; ErrSkip gives up on an event for good.
func TestIntegrationConsumeRetry(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"orders", "items", "users", "orders"}}}, 1)
		f := b.feed(t)
		var (
			mu    sync.Mutex
			calls []string
		)
		failing := oid("a", "lsn-0000000000000001/1/before_commit")
		skipped := oid("a", "lsn-0000000000000001/2/after_commit")
		fails := 0
		var got collector
		sub, err := f.Consume(t.Context(), "retry", changefeed.Filter{}, func(ctx context.Context, m changefeed.Message) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, fmt.Sprintf("%s#%d", m.ID, m.Delivered))
			switch {
			case m.ID == failing && fails < 2:
				fails++
				return errors.New("database down")
			case m.ID == skipped:
				return fmt.Errorf("poison: %w", changefeed.ErrSkip)
			}
			return got.handle(ctx, m)
		}, changefeed.RetryBackoff(10*time.Millisecond, 20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "7 events handled", func() bool { return got.len() >= 7 })
		waitAcked(t, b, "retry")
		stop(t, sub)
		mu.Lock()
		defer mu.Unlock()
		want := []string{
			oid("a", "lsn-0000000000000001/0/before_commit#1"),
			oid("a", "lsn-0000000000000001/1/before_commit#1"), oid("a", "lsn-0000000000000001/1/before_commit#1"), oid("a", "lsn-0000000000000001/1/before_commit#1"),
			oid("a", "lsn-0000000000000001/2/before_commit#1"), oid("a", "lsn-0000000000000001/3/before_commit#1"),
			oid("a", "lsn-0000000000000001/0/after_commit#1"), oid("a", "lsn-0000000000000001/1/after_commit#1"),
			oid("a", "lsn-0000000000000001/2/after_commit#1"), oid("a", "lsn-0000000000000001/3/after_commit#1"),
		}
		if !slices.Equal(calls, want) {
			t.Fatalf("handler calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
		}
		// The skipped event is not redelivered to a new subscription.
		var again collector
		sub2, err := f.Consume(t.Context(), "retry", changefeed.Filter{}, again.handle)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		stop(t, sub2)
		if n := again.len(); n != 0 {
			t.Fatalf("%d events redelivered after a clean run: %v", n, summary(again.messages()))
		}
	})
}

// txKey names a transaction by bind and txkey.
func txKey(bind, key string) string { return bind + "/" + key }

// TestIntegrationConsumeTx reassembles exactly the committed transactions,
// across a stop and restart in the middle, and hands a large one over in
// parts.
func TestIntegrationConsumeTx(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		specs := genTxs(80, 7, 3)
		specs = append(specs, txSpec{bind: "a", tables: slices.Repeat([]string{"users"}, 25)}, // in parts of 10
			txSpec{bind: "b", tables: []string{"orders"}, rollback: true}) // never committed
		specs = append(specs, genTxs(40, 7, 4)...)
		b.publish(t, specs, 1)
		committed := map[string]txSpec{}
		for i, s := range specs {
			if !s.rollback {
				committed[txKey(s.bind, fmt.Sprintf("lsn-%016X", i+1))] = s
			}
		}

		f := b.feed(t)
		var run1, run2 collector
		var n atomic.Int64
		ctx1, stop1 := context.WithCancel(t.Context())
		defer stop1()
		// A stop in the middle of the large transaction, once its first part
		// is handled, leaves the rest incomplete for the second run: it
		// hands it over after TxTimeout.
		opts := []changefeed.ConsumeOption{changefeed.MaxTxChanges(10), changefeed.TxTimeout(2 * time.Second)}
		sub1, err := f.ConsumeTx(ctx1, "txs", changefeed.Filter{}, func(ctx context.Context, tx changefeed.Tx) error {
			if tx.Total == 25 && n.Add(1) == 1 {
				stop1() // in the middle of the large transaction
			}
			return run1.handleTx(ctx, tx)
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		<-sub1.Closed()
		if err := sub1.Err(); err != nil {
			t.Fatal(err)
		}
		sub2, err := f.ConsumeTx(t.Context(), "txs", changefeed.Filter{}, run2.handleTx, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer stop(t, sub2)
		whole := func() map[string]int {
			out := map[string]int{}
			for _, tx := range append(run1.transactions(), run2.transactions()...) {
				if !tx.Partial {
					out[txKey(tx.Bind, tx.TxKey)]++
				}
			}
			return out
		}
		eventually(t, 30*time.Second, "every transaction", func() bool { return len(whole()) >= len(committed)-1 })
		waitAcked(t, b, "txs")

		largeSeqs := map[int]int{}
		for _, tx := range append(run1.transactions(), run2.transactions()...) {
			k := txKey(tx.Bind, tx.TxKey)
			s, ok := committed[k]
			if !ok {
				t.Fatalf("transaction %s was never committed", k)
			}
			if tx.Total != len(s.tables) {
				t.Fatalf("transaction %s: total %d, want %d", k, tx.Total, len(s.tables))
			}
			if len(s.tables) > 10 {
				if !tx.Partial || len(tx.Changes) > 10 {
					t.Fatalf("large transaction: part %d of %d changes, partial %v", tx.Part, len(tx.Changes), tx.Partial)
				}
				for i, m := range tx.Changes {
					if i > 0 && m.Change.Seq <= tx.Changes[i-1].Change.Seq {
						t.Fatalf("large transaction part %d: txseq %d after %d", tx.Part, m.Change.Seq, tx.Changes[i-1].Change.Seq)
					}
					largeSeqs[m.Change.Seq]++
				}
				continue
			}
			if tx.Partial || len(tx.Changes) != len(s.tables) {
				t.Fatalf("transaction %s: %d changes (partial %v), want all %d", k, len(tx.Changes), tx.Partial, len(s.tables))
			}
			for i, m := range tx.Changes {
				if m.Change.Seq != i || m.Change.Table != s.tables[i] || m.Phase != tracker.PhaseAfterCommit || m.Change.TxKey != tx.TxKey {
					t.Fatalf("transaction %s change %d: %+v", k, i, m)
				}
			}
		}
		got := whole()
		for k, s := range committed {
			if len(s.tables) <= 10 && got[k] == 0 {
				t.Fatalf("transaction %s missed", k)
			}
		}
		if len(largeSeqs) != 25 {
			t.Fatalf("large transaction: %d of its 25 changes handed over", len(largeSeqs))
		}
		t.Logf("first run: %d transactions, second: %d", len(run1.transactions()), len(run2.transactions()))
	})
}

// TestIntegrationConsumeTxFilter: a filter on a table selects the
// transactions that touch it, whole.
func TestIntegrationConsumeTxFilter(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		specs := []txSpec{
			{bind: "a", tables: []string{"orders", "items"}},
			{bind: "a", tables: []string{"users"}},
			{bind: "b", tables: []string{"items", "items", "users"}},
			{bind: "b", tables: []string{"orders"}},
		}
		b.publish(t, specs, 1)
		var got collector
		sub, err := b.feed(t).ConsumeTx(t.Context(), "filtered", changefeed.Filter{Table: "items"}, got.handleTx)
		if err != nil {
			t.Fatal(err)
		}
		waitAcked(t, b, "filtered")
		stop(t, sub)
		var lines []string
		for _, tx := range got.transactions() {
			var tables []string
			for _, m := range tx.Changes {
				tables = append(tables, m.Change.Table)
			}
			lines = append(lines, fmt.Sprintf("%s %s %v", tx.Bind, tx.TxKey, tables))
		}
		slices.Sort(lines)
		want := []string{"a lsn-0000000000000001 [orders items]", "b lsn-0000000000000003 [items items users]"}
		if !slices.Equal(lines, want) {
			t.Fatalf("transactions:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
	})
}

// TestIntegrationFollow reads the stream from each kind of start position.
func TestIntegrationFollow(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"orders", "items"}}}, 1)
		time.Sleep(20 * time.Millisecond)
		mid := time.Now()
		time.Sleep(20 * time.Millisecond)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"users"}}}, 2)
		f := b.feed(t)
		follow := func(flt changefeed.Filter, n int, opts ...changefeed.ConsumeOption) []string {
			t.Helper()
			var c collector
			sub, err := f.Follow(t.Context(), flt, c.handle, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer stop(t, sub)
			eventually(t, 10*time.Second, fmt.Sprintf("%d events", n), func() bool { return c.len() >= n })
			time.Sleep(50 * time.Millisecond)
			var out []string
			for _, m := range c.messages() {
				out = append(out, fmt.Sprintf("%d %s", m.Stream, m.ID))
			}
			return out
		}
		all := follow(changefeed.Filter{}, 6, changefeed.FromStart())
		want := []string{"1 " + oid("a", "lsn-0000000000000001/0/before_commit"), "2 " + oid("a", "lsn-0000000000000001/1/before_commit"),
			"3 " + oid("a", "lsn-0000000000000001/0/after_commit"), "4 " + oid("a", "lsn-0000000000000001/1/after_commit"),
			"5 " + oid("a", "lsn-0000000000000002/0/before_commit"), "6 " + oid("a", "lsn-0000000000000002/0/after_commit")}
		if !slices.Equal(all, want) {
			t.Fatalf("FromStart: %v", all)
		}
		if got := follow(changefeed.Filter{}, 3, changefeed.FromSequence(4)); !slices.Equal(got, want[3:]) {
			t.Fatalf("FromSequence(4): %v", got)
		}
		if got := follow(changefeed.Filter{}, 2, changefeed.FromTime(mid)); !slices.Equal(got, want[4:]) {
			t.Fatalf("FromTime: %v", got)
		}
		if got := follow(changefeed.Filter{Phase: tracker.PhaseAfterCommit, Table: "items"}, 1, changefeed.FromStart()); !slices.Equal(got, want[3:4]) {
			t.Fatalf("filtered: %v", got)
		}
		// FromNew (the default): only what is published from now on.
		var c collector
		sub, err := f.Follow(t.Context(), changefeed.Filter{}, c.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop(t, sub)
		time.Sleep(200 * time.Millisecond)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"orders"}}}, 3)
		eventually(t, 10*time.Second, "2 new events", func() bool { return c.len() >= 2 })
		if got := c.messages(); got[0].Stream != 7 || got[1].Stream != 8 {
			t.Fatalf("FromNew: %v", summary(got))
		}
	})
}

// TestIntegrationFollowUntilEnd: with UntilEnd, Follow hands over what the
// stream holds from the start position up to its last message when Follow
// was called, then ends with no error — also when the filter's last match
// comes before the end, when nothing matches, and when events keep coming.
func TestIntegrationFollowUntilEnd(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"orders", "items"}}}, 1)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"users"}}}, 2) // stream sequences 1-6
		f := b.feed(t)
		read := func(flt changefeed.Filter, opts ...changefeed.ConsumeOption) []uint64 {
			t.Helper()
			var c collector
			sub, err := f.Follow(t.Context(), flt, c.handle, append(opts, changefeed.UntilEnd())...)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-sub.Closed():
			case <-time.After(10 * time.Second):
				sub.Stop()
				t.Fatalf("Follow(%+v, UntilEnd) did not end; it handed over %v", flt, summary(c.messages()))
			}
			if err := sub.Err(); err != nil {
				t.Fatalf("Follow(%+v, UntilEnd) ended with %v", flt, err)
			}
			var seqs []uint64
			for _, m := range c.messages() {
				seqs = append(seqs, m.Stream)
			}
			return seqs
		}
		for _, tc := range []struct {
			name string
			flt  changefeed.Filter
			opts []changefeed.ConsumeOption
			want []uint64
		}{
			{"everything", changefeed.Filter{}, []changefeed.ConsumeOption{changefeed.FromStart()}, []uint64{1, 2, 3, 4, 5, 6}},
			{"filtered by subject, last match before the end", changefeed.Filter{Table: "items"}, []changefeed.ConsumeOption{changefeed.FromStart()}, []uint64{2, 4}},
			// Pattern selects every subject: the phase is checked on the
			// decoded events, so the last message the consumer reads
			// (6, after_commit) is not handed over, and 5 is the last.
			{"filtered after decoding", changefeed.Filter{Pattern: b.prefix + ".>", Phase: tracker.PhaseBeforeCommit}, []changefeed.ConsumeOption{changefeed.FromStart()}, []uint64{1, 2, 5}},
			{"nothing matches", changefeed.Filter{Table: "nothing"}, []changefeed.ConsumeOption{changefeed.FromStart()}, nil},
			{"from a sequence", changefeed.Filter{}, []changefeed.ConsumeOption{changefeed.FromSequence(5)}, []uint64{5, 6}},
			{"from past the end", changefeed.Filter{}, []changefeed.ConsumeOption{changefeed.FromSequence(7)}, nil},
			{"from new", changefeed.Filter{}, nil, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if got := read(tc.flt, tc.opts...); !slices.Equal(got, tc.want) {
					t.Fatalf("handed over stream sequences %v, want %v", got, tc.want)
				}
			})
		}

		// Events stored after Follow began are not handed over: the
		// handler holds the first event until more are published.
		release := make(chan struct{})
		var mu sync.Mutex
		var seqs []uint64
		sub, err := f.Follow(t.Context(), changefeed.Filter{}, func(_ context.Context, m changefeed.Message) error {
			if m.Stream == 1 {
				<-release
			}
			mu.Lock()
			seqs = append(seqs, m.Stream)
			mu.Unlock()
			return nil
		}, changefeed.FromStart(), changefeed.UntilEnd())
		if err != nil {
			t.Fatal(err)
		}
		b.publish(t, []txSpec{{bind: "a", tables: []string{"orders"}}}, 3) // 7 and 8
		close(release)
		select {
		case <-sub.Closed():
		case <-time.After(10 * time.Second):
			t.Fatal("Follow(UntilEnd) did not end while events kept coming")
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 5, 6}) || sub.Err() != nil {
			t.Fatalf("handed over %v (err %v), want 1-6", seqs, sub.Err())
		}

		if _, err := f.Subscribe(t.Context(), changefeed.Filter{}, func(context.Context, changefeed.Message) error { return nil }, changefeed.UntilEnd()); err == nil ||
			!strings.Contains(err.Error(), "UntilEnd applies to Follow only") {
			t.Fatalf("Subscribe with UntilEnd: %v", err)
		}
	})
}

// TestIntegrationConnectionClosed: a subscription whose connection closes
// stops by itself, and Err says why.
func TestIntegrationConnectionClosed(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"orders"}}}, 1)
		nc := dial(t, url)
		f, err := changefeed.New(nc, changefeed.WithPrefix(b.prefix), changefeed.WithStream(b.stream))
		if err != nil {
			t.Fatal(err)
		}
		var c collector
		core, err := f.Subscribe(t.Context(), changefeed.Filter{}, c.handle)
		if err != nil {
			t.Fatal(err)
		}
		durable, err := f.Consume(t.Context(), "closing", changefeed.Filter{}, c.handle)
		if err != nil {
			t.Fatal(err)
		}
		follow, err := f.Follow(t.Context(), changefeed.Filter{}, c.handle, changefeed.FromStart())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the stored events", func() bool { return c.len() >= 4 })
		nc.Close()
		for name, s := range map[string]*changefeed.Subscription{"Subscribe": core, "Consume": durable, "Follow": follow} {
			select {
			case <-s.Closed():
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: still running after its connection closed", name)
			}
			if !errors.Is(s.Err(), changefeed.ErrClosed) {
				t.Errorf("%s: Err = %v, want ErrClosed", name, s.Err())
			}
		}
	})
}

// TestIntegrationDurableUpdate: an existing durable given another filter,
// ack wait or max ack pending is updated, and resumes where it stopped.
func TestIntegrationDurableUpdate(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := newBus(t, url)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"orders", "items"}}}, 1)
		f := b.feed(t)
		var first collector
		sub, err := f.Consume(t.Context(), "upd", changefeed.Filter{Table: "orders"}, first.handle)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the orders events", func() bool { return first.len() >= 2 })
		waitAcked(t, b, "upd")
		stop(t, sub)
		b.publish(t, []txSpec{{bind: "a", tables: []string{"users"}}}, 2)
		var second collector
		sub, err = f.Consume(t.Context(), "upd", changefeed.Filter{Phase: tracker.PhaseAfterCommit}, second.handle,
			changefeed.MaxAckPending(50), changefeed.AckWait(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		defer stop(t, sub)
		eventually(t, 10*time.Second, "the new after_commit event", func() bool { return second.len() >= 1 })
		js, _ := jetstream.New(b.nc)
		c, err := js.Consumer(t.Context(), b.stream, "upd")
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.CachedInfo().Config
		if cfg.FilterSubject != b.prefix+".after_commit.*.*.*.*" || cfg.MaxAckPending != 50 || cfg.AckWait != time.Minute {
			t.Fatalf("durable not updated: filter %s, max ack pending %d, ack wait %v", cfg.FilterSubject, cfg.MaxAckPending, cfg.AckWait)
		}
		time.Sleep(100 * time.Millisecond)
		if got := summary(second.messages()); fmt.Sprint(got) != "[after_commit a users 2000 0/1]" {
			t.Fatalf("after the update: %v", got)
		}
	})
}
