package changefeed

// dedup remembers the last n accepted (source, id) pairs.
type dedup struct {
	seen map[string]struct{}
	ring []string
	next int
}

func newDedup(n int) *dedup {
	if n <= 0 {
		return nil
	}
	return &dedup{seen: make(map[string]struct{}, n), ring: make([]string, n)}
}

func dedupKey(m *Message) string { return m.Source + "\x00" + m.ID }

// has reports whether m was accepted recently; a nil dedup has nothing.
func (d *dedup) has(m *Message) bool {
	if d == nil {
		return false
	}
	_, ok := d.seen[dedupKey(m)]
	return ok
}

// add remembers m, forgetting the oldest entry when full.
func (d *dedup) add(m *Message) {
	if d == nil {
		return
	}
	k := dedupKey(m)
	if _, ok := d.seen[k]; ok {
		return
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.seen, old)
	}
	d.ring[d.next] = k
	d.seen[k] = struct{}{}
	d.next = (d.next + 1) % len(d.ring)
}
