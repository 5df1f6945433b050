package mysql

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/trackerd/trackerd/tracker"
)

// position is where a bind resumes: the GTID state through the last
// transaction handed over (MySQL executed set "uuid:1-100", MariaDB
// per-domain position "0-1-1234", as the server's BINLOG_GTID_POS reports it
// for the same point), the binlog file and the offset just after that
// transaction's last event ("published through"), and the XA transactions
// prepared before that point and not yet committed or rolled back. It is
// encoded as compact JSON:
//
//	{"gtid":"0-1-1234","file":"mariadb-bin.000003","pos":5678,
//	 "xa":[{"xid":"X'6131',X'',1","key":"gtid-0-1-1200","gtid":"0-1-1200","file":"mariadb-bin.000003","pos":4000}]}
//
// A stream resumes at the start of the oldest prepared XA transaction with
// tracked changes (see resumeAt), so that one is handed over again after a
// restart, and skips what it had already handed over (what starts before
// file/pos) but for those.
type position struct {
	GTID string       `json:"gtid,omitempty"`
	File string       `json:"file"`
	Pos  uint32       `json:"pos"`
	XA   []xaPrepared `json:"xa,omitempty"`
}

// xaPrepared is an XA transaction whose XA PREPARE the stream has passed and
// whose XA COMMIT or XA ROLLBACK it has not.
type xaPrepared struct {
	// XID is the XA transaction id in the server's serialized form,
	// X'<gtrid hex>',X'<bqual hex>',<formatID>, as the binlog's XA COMMIT
	// and XA ROLLBACK statements write it.
	XID string `json:"xid"`
	// Key is the transaction's key (see gtid.txKey): that of its XA PREPARE
	// group.
	Key string `json:"key"`
	// GTID is the XA PREPARE group's GTID, empty without GTIDs.
	GTID string `json:"gtid,omitempty"`
	// File and Pos are where the XA PREPARE group starts.
	File string `json:"file"`
	Pos  uint32 `json:"pos"`
	// Empty is set when the transaction had no tracked change: nothing of
	// it needs handing over again.
	Empty bool `json:"empty,omitempty"`
}

// txID is the transaction id of changes of the XA transaction.
func (x *xaPrepared) txID() string {
	if x.GTID != "" {
		return x.GTID
	}
	return x.File + ":" + strconv.FormatUint(uint64(x.Pos), 10)
}

// filePos is the binlog offset of p, without its GTID state and XA list.
func (p position) filePos() position { return position{File: p.File, Pos: p.Pos} }

// resumeAt is where a stream from p starts reading by file and offset: the
// start of its oldest prepared XA transaction with tracked changes, else
// file/pos.
func (p position) resumeAt() position {
	at := p.filePos()
	for _, x := range p.XA {
		if x.Empty {
			continue
		}
		if xp := (position{File: x.File, Pos: x.Pos}); before(xp, at) {
			at = xp
		}
	}
	return at
}

// xaIndex returns the index in p.XA of the prepared transaction xid, or -1.
func (p position) xaIndex(xid string) int {
	for i := range p.XA {
		if p.XA[i].XID == xid {
			return i
		}
	}
	return -1
}

// xaStartingAt returns the index in p.XA of the prepared transaction whose
// XA PREPARE group starts at file:start, or has GTID g (MySQL GTIDs, which
// are unique; MariaDB's need not be), or -1.
func (p position) xaStartingAt(g gtid, file string, start uint32) int {
	for i := range p.XA {
		x := &p.XA[i]
		if g.valid && !g.mariadb && x.GTID != "" {
			if x.GTID == g.String() {
				return i
			}
			continue
		}
		if x.File == file && x.Pos == start {
			return i
		}
	}
	return -1
}

// withoutXA returns p.XA without entry i, in a new slice.
func (p position) withoutXA(i int) []xaPrepared {
	if len(p.XA) == 1 {
		return nil
	}
	out := make([]xaPrepared, 0, len(p.XA)-1)
	out = append(out, p.XA[:i]...)
	return append(out, p.XA[i+1:]...)
}

// appendJSON appends p as compact JSON, without reflection.
func (p position) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if p.GTID != "" {
		dst = append(dst, `"gtid":`...)
		dst = tracker.AppendJSONString(dst, p.GTID)
		dst = append(dst, ',')
	}
	dst = append(dst, `"file":`...)
	dst = tracker.AppendJSONString(dst, p.File)
	dst = append(dst, `,"pos":`...)
	dst = strconv.AppendUint(dst, uint64(p.Pos), 10)
	if len(p.XA) > 0 {
		dst = append(dst, `,"xa":[`...)
		for i := range p.XA {
			x := &p.XA[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"xid":`...)
			dst = tracker.AppendJSONString(dst, x.XID)
			dst = append(dst, `,"key":`...)
			dst = tracker.AppendJSONString(dst, x.Key)
			if x.GTID != "" {
				dst = append(dst, `,"gtid":`...)
				dst = tracker.AppendJSONString(dst, x.GTID)
			}
			dst = append(dst, `,"file":`...)
			dst = tracker.AppendJSONString(dst, x.File)
			dst = append(dst, `,"pos":`...)
			dst = strconv.AppendUint(dst, uint64(x.Pos), 10)
			if x.Empty {
				dst = append(dst, `,"empty":true`...)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

func (p position) String() string { return string(p.appendJSON(nil)) }

// parsePosition decodes a position string written by appendJSON.
func parsePosition(s string) (position, error) {
	var p position
	d := json.NewDecoder(strings.NewReader(s))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		return position{}, fmt.Errorf("bad position %q: %w", s, err)
	}
	if p.File == "" && p.GTID == "" {
		return position{}, fmt.Errorf("bad position %q: neither a GTID set nor a binlog file", s)
	}
	for _, x := range p.XA {
		if x.XID == "" || x.Key == "" || x.File == "" {
			return position{}, fmt.Errorf("bad position %q: an XA transaction without its xid, key or binlog file", s)
		}
	}
	return p, nil
}

// gtid is one transaction's global id.
type gtid struct {
	valid   bool
	mariadb bool
	// MariaDB: domain-server-sequence.
	domain, server uint32
	seq            uint64
	// MySQL: source UUID (canonical lower-case text), optional tag, number.
	sid string
	tag string
	gno int64
}

// String renders the GTID as the server does: "0-1-5" or "uuid:5" (or
// "uuid:tag:5").
func (g gtid) String() string {
	if !g.valid {
		return ""
	}
	if g.mariadb {
		return strconv.FormatUint(uint64(g.domain), 10) + "-" + strconv.FormatUint(uint64(g.server), 10) + "-" + strconv.FormatUint(g.seq, 10)
	}
	if g.tag != "" {
		return g.sid + ":" + g.tag + ":" + strconv.FormatInt(g.gno, 10)
	}
	return g.sid + ":" + strconv.FormatInt(g.gno, 10)
}

// txKey is the transaction's key for event ids: gtid-<domain>-<server>-<seq>
// (MariaDB) or gtid-<uuid>-<gno> (MySQL; gtid-<uuid>-<tag>-<gno> when
// tagged).
func (g gtid) txKey() string {
	if g.mariadb {
		return "gtid-" + strconv.FormatUint(uint64(g.domain), 10) + "-" + strconv.FormatUint(uint64(g.server), 10) + "-" + strconv.FormatUint(g.seq, 10)
	}
	if g.tag != "" {
		return "gtid-" + g.sid + "-" + g.tag + "-" + strconv.FormatInt(g.gno, 10)
	}
	return "gtid-" + g.sid + "-" + strconv.FormatInt(g.gno, 10)
}

// gtidState is the GTID state through the last committed transaction.
type gtidState interface {
	// add records a committed transaction.
	add(g gtid)
	// contains reports whether g is already covered.
	contains(g gtid) bool
	// repeats reports whether g is not above the state: a MariaDB GTID whose
	// sequence number is at or below its domain's last one (possible
	// without gtid_strict_mode), a MySQL GTID already in the set.
	repeats(g gtid) bool
	String() string
}

// newGTIDState parses a state string of the flavor.
func newGTIDState(mariadb bool, s string) (gtidState, error) {
	if mariadb {
		return parseMariaDBPos(s)
	}
	return parseMySQLSet(s)
}

// mariadbPos is a MariaDB GTID position: the last GTID per replication
// domain, sorted by domain.
type mariadbPos struct {
	gtids []gtid
	str   string
	dirty bool
}

func parseMariaDBPos(s string) (*mariadbPos, error) {
	p := &mariadbPos{dirty: true}
	s = strings.TrimSpace(s)
	if s == "" {
		return p, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		f := strings.Split(part, "-")
		if len(f) != 3 {
			return nil, fmt.Errorf("bad MariaDB GTID %q: want domain-server-sequence", part)
		}
		d, err1 := strconv.ParseUint(f[0], 10, 32)
		sv, err2 := strconv.ParseUint(f[1], 10, 32)
		seq, err3 := strconv.ParseUint(f[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("bad MariaDB GTID %q: %w", part, err)
		}
		p.add(gtid{valid: true, mariadb: true, domain: uint32(d), server: uint32(sv), seq: seq})
	}
	return p, nil
}

func (p *mariadbPos) add(g gtid) {
	i, found := slices.BinarySearchFunc(p.gtids, g.domain, func(e gtid, d uint32) int {
		switch {
		case e.domain < d:
			return -1
		case e.domain > d:
			return 1
		}
		return 0
	})
	if found {
		p.gtids[i] = g
	} else {
		p.gtids = slices.Insert(p.gtids, i, g)
	}
	p.dirty = true
}

// contains reports whether g is at or before the position of its domain,
// judged only within the same originating server (sequence numbers of
// different servers in one domain need not be ordered without
// gtid_strict_mode).
func (p *mariadbPos) contains(g gtid) bool {
	for _, e := range p.gtids {
		if e.domain == g.domain {
			return e.server == g.server && g.seq <= e.seq
		}
	}
	return false
}

func (p *mariadbPos) repeats(g gtid) bool {
	for _, e := range p.gtids {
		if e.domain == g.domain {
			return g.seq <= e.seq
		}
	}
	return false
}

func (p *mariadbPos) String() string {
	if p.dirty {
		var b strings.Builder
		for i, g := range p.gtids {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(g.String())
		}
		p.str = b.String()
		p.dirty = false
	}
	return p.str
}

// mysqlSet is a MySQL executed GTID set, sorted by source id and tag.
type mysqlSet struct {
	sids  []sidSet
	str   string
	dirty bool
}

type sidSet struct {
	sid, tag  string
	intervals []interval // sorted, disjoint, [start, stop)
}

type interval struct{ start, stop int64 }

func parseMySQLSet(s string) (*mysqlSet, error) {
	set := &mysqlSet{dirty: true}
	s = strings.Join(strings.Fields(s), "")
	if s == "" {
		return set, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		f := strings.Split(part, ":")
		if len(f) < 2 {
			return nil, fmt.Errorf("bad MySQL GTID set %q: want uuid:interval", part)
		}
		sid := strings.ToLower(f[0])
		if !validUUID(sid) {
			return nil, fmt.Errorf("bad MySQL GTID set %q: %q is not a UUID", part, f[0])
		}
		tag := ""
		needInterval := true
		for _, iv := range f[1:] {
			if iv == "" {
				return nil, fmt.Errorf("bad MySQL GTID set %q", part)
			}
			if c := iv[0]; c < '0' || c > '9' {
				if needInterval && tag != "" {
					return nil, fmt.Errorf("bad MySQL GTID set %q: tag %q has no interval", part, tag)
				}
				tag = strings.ToLower(iv)
				needInterval = true
				continue
			}
			needInterval = false
			lo, hi, ok := strings.Cut(iv, "-")
			start, err := strconv.ParseInt(lo, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad MySQL GTID interval %q: %w", iv, err)
			}
			stop := start
			if ok {
				if stop, err = strconv.ParseInt(hi, 10, 64); err != nil {
					return nil, fmt.Errorf("bad MySQL GTID interval %q: %w", iv, err)
				}
			}
			if start < 1 || stop < start {
				return nil, fmt.Errorf("bad MySQL GTID interval %q", iv)
			}
			set.addInterval(sid, tag, interval{start, stop + 1})
		}
		if needInterval {
			return nil, fmt.Errorf("bad MySQL GTID set %q: no interval", part)
		}
	}
	return set, nil
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

func (s *mysqlSet) find(sid, tag string) (int, bool) {
	return slices.BinarySearchFunc(s.sids, [2]string{sid, tag}, func(e sidSet, k [2]string) int {
		if c := strings.Compare(e.sid, k[0]); c != 0 {
			return c
		}
		return strings.Compare(e.tag, k[1])
	})
}

func (s *mysqlSet) addInterval(sid, tag string, iv interval) {
	i, found := s.find(sid, tag)
	if !found {
		s.sids = slices.Insert(s.sids, i, sidSet{sid: sid, tag: tag})
	}
	ss := &s.sids[i]
	// Fast path: extends the last interval (transactions in order).
	if n := len(ss.intervals); n > 0 && ss.intervals[n-1].stop == iv.start {
		ss.intervals[n-1].stop = iv.stop
		s.dirty = true
		return
	}
	ss.intervals = append(ss.intervals, iv)
	slices.SortFunc(ss.intervals, func(a, b interval) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	merged := ss.intervals[:1]
	for _, x := range ss.intervals[1:] {
		last := &merged[len(merged)-1]
		if x.start <= last.stop {
			last.stop = max(last.stop, x.stop)
			continue
		}
		merged = append(merged, x)
	}
	ss.intervals = merged
	s.dirty = true
}

func (s *mysqlSet) add(g gtid) {
	s.addInterval(g.sid, g.tag, interval{g.gno, g.gno + 1})
}

// remove takes g out of the set: resuming from the set asks the server
// for g again.
func (s *mysqlSet) remove(g gtid) {
	i, found := s.find(g.sid, g.tag)
	if !found {
		return
	}
	ss := &s.sids[i]
	for j, iv := range ss.intervals {
		if g.gno < iv.start || g.gno >= iv.stop {
			continue
		}
		var parts []interval
		if iv.start < g.gno {
			parts = append(parts, interval{iv.start, g.gno})
		}
		if g.gno+1 < iv.stop {
			parts = append(parts, interval{g.gno + 1, iv.stop})
		}
		ss.intervals = append(ss.intervals[:j], append(parts, ss.intervals[j+1:]...)...)
		s.dirty = true
		break
	}
	if len(ss.intervals) == 0 {
		s.sids = append(s.sids[:i], s.sids[i+1:]...)
	}
}

func (s *mysqlSet) contains(g gtid) bool {
	i, found := s.find(g.sid, g.tag)
	if !found {
		return false
	}
	for _, iv := range s.sids[i].intervals {
		if g.gno >= iv.start && g.gno < iv.stop {
			return true
		}
	}
	return false
}

func (s *mysqlSet) repeats(g gtid) bool { return s.contains(g) }

// missing returns the first GTID of o that s lacks.
func (s *mysqlSet) missing(o *mysqlSet) (string, bool) {
	for _, os := range o.sids {
		i, found := s.find(os.sid, os.tag)
		for _, iv := range os.intervals {
			covered := false
			if found {
				for _, have := range s.sids[i].intervals {
					if have.start <= iv.start && have.stop >= iv.stop {
						covered = true
						break
					}
				}
			}
			if !covered {
				g := gtid{valid: true, sid: os.sid, tag: os.tag, gno: iv.start}
				return g.String(), true
			}
		}
	}
	return "", false
}

func (s *mysqlSet) String() string {
	if !s.dirty {
		return s.str
	}
	var b strings.Builder
	prevSid := ""
	for i, ss := range s.sids {
		if ss.sid != prevSid {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(ss.sid)
			prevSid = ss.sid
		}
		if ss.tag != "" {
			b.WriteByte(':')
			b.WriteString(ss.tag)
		}
		for _, iv := range ss.intervals {
			b.WriteByte(':')
			b.WriteString(strconv.FormatInt(iv.start, 10))
			if iv.stop-1 != iv.start {
				b.WriteByte('-')
				b.WriteString(strconv.FormatInt(iv.stop-1, 10))
			}
		}
	}
	s.str = b.String()
	s.dirty = false
	return s.str
}

// uuidString formats 16 bytes as a canonical lower-case UUID.
func uuidString(b []byte) string {
	if len(b) != 16 {
		return ""
	}
	var u [16]byte
	copy(u[:], b)
	out := appendUUID(nil, u)
	return string(out[1 : len(out)-1])
}

// resumeGTIDSet is the GTID set a stream from p asks the server to resume
// after: p's GTID state, on MySQL without the GTIDs of its prepared XA
// transactions with tracked changes, so that the server sends those again.
func resumeGTIDSet(mariadb bool, p position) (string, error) {
	if mariadb || len(p.XA) == 0 {
		return p.GTID, nil
	}
	set, err := parseMySQLSet(p.GTID)
	if err != nil {
		return "", err
	}
	for _, x := range p.XA {
		if x.Empty || x.GTID == "" {
			continue
		}
		one, err := parseMySQLSet(x.GTID)
		if err != nil {
			return "", err
		}
		for _, ss := range one.sids {
			for _, iv := range ss.intervals {
				for gno := iv.start; gno < iv.stop; gno++ {
					set.remove(gtid{valid: true, sid: ss.sid, tag: ss.tag, gno: gno})
				}
			}
		}
	}
	return set.String(), nil
}
