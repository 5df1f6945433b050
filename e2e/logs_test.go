package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// twoBinds returns the BINDS of a PostgreSQL and a MariaDB bind, and
// functions that insert a row into each.
func twoBinds(t *testing.T) (bindsJSON string, pg *pgBind, my *myBind, insertPG, insertMy func(id int)) {
	t.Helper()
	pg = newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	my = newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY"})
	var m map[string]any
	json.Unmarshal([]byte(pg.bindsJSON(t, "t")), &m)
	var mm map[string]any
	json.Unmarshal([]byte(my.bindsJSON("t")), &mm)
	m[my.key] = mm[my.key]
	data, _ := json.Marshal(m)
	admin := pgAdmin(t)
	mdb := mysqlAdmin(t)
	insertPG = func(id int) { pgExec(t, admin, fmt.Sprintf("INSERT INTO %q.t VALUES (%d)", pg.schema, id)) }
	insertMy = func(id int) { myExec(t, mdb, fmt.Sprintf("INSERT INTO `%s`.t VALUES (%d)", my.dbs[0], id)) }
	return string(data), pg, my, insertPG, insertMy
}

var (
	msgRE  = regexp.MustCompile(`msg=("(?:[^"\\]|\\.)*"|\S+)`)
	attrRE = func(k string) *regexp.Regexp { return regexp.MustCompile(`\b` + k + `=("(?:[^"\\]|\\.)*"|\S+)`) }
)

// startupRepeats returns the messages logged more than once, for the same
// bind and component, among lines: two lines are the same message when
// their text up to its first ':' or ',' is, without a "mysql: " prefix
// ("no checkpoint: ..." and "mysql: no checkpoint, ..." are one). The
// state report "creating the replication slot" repeats by design.
func startupRepeats(lines []string) []string {
	bindRE, compRE := attrRE("bind"), attrRE("component")
	seen := map[string]int{}
	var out []string
	for _, l := range lines {
		m := msgRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		msg, _ := strconv.Unquote(m[1])
		if msg == "" {
			msg = m[1]
		}
		msg = strings.TrimPrefix(strings.ToLower(msg), "mysql: ")
		if i := strings.IndexAny(msg, ":,"); i >= 0 {
			msg = msg[:i]
		}
		if msg == "creating the replication slot" || msg == "progress" {
			continue // repeated on purpose while a slot waits, or every PROGRESS_INTERVAL
		}
		key := msg
		for _, re := range []*regexp.Regexp{bindRE, compRE} {
			if a := re.FindStringSubmatch(l); a != nil {
				key += " " + a[0]
			}
		}
		if seen[key]++; seen[key] == 2 {
			out = append(out, key)
		}
	}
	return out
}

// TestLogsAtStartAndProgress: `trackerd run` logs one start-up line (the
// version, the binds without passwords, the NATS target and the stream),
// no line twice while it starts, with NATS_URL and with the embedded
// server (operator review row 14), then one progress line per bind every
// PROGRESS_INTERVAL with its events and position, a MySQL position as a
// group (rows 15 and 16); PROGRESS_INTERVAL=0 logs none.
func TestLogsAtStartAndProgress(t *testing.T) {
	bs := newBus(t)
	bindsJSON, pg, my, insertPG, insertMy := twoBinds(t)
	env := bs.env(t)
	env["TRACKER_BINDS"] = bindsJSON
	env["TRACKER_PROGRESS_INTERVAL"] = "1s"
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+pg.key, time.Minute)
	p.waitLog(`msg=streaming bind=`+my.key, time.Minute)
	startup := p.lines()
	insertPG(1)
	insertMy(1)
	bs.waitCount(t, 4, time.Minute)
	progress := regexp.MustCompile(`msg=progress bind=(\S+) state=streaming events=(\d+) events_total=(\d+) interval=\d+s position`)
	eventually(t, 30*time.Second, "progress lines with both binds' events", func() bool {
		total := map[string]int{}
		for _, l := range p.lines() {
			if m := progress.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[3])
				total[m[1]] = max(total[m[1]], n)
			}
		}
		return total[pg.key] == 2 && total[my.key] == 2
	})
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	out := p.out.String()

	var starts []string
	for _, l := range startup {
		if strings.Contains(l, `msg="trackerd starting"`) {
			starts = append(starts, l)
		}
	}
	if len(starts) != 1 {
		t.Fatalf("%d start-up lines, want 1:\n%s", len(starts), out)
	}
	for _, want := range []string{"version=", "binds." + pg.key + "=postgres", "binds." + my.key + "=mysql://root@", "nats=" + bs.url, "stream=" + bs.stream, "subjects=" + bs.prefix + ".>"} {
		if !strings.Contains(starts[0], want) {
			t.Errorf("the start-up line lacks %s: %s", want, starts[0])
		}
	}
	if rep := startupRepeats(startup); len(rep) > 0 {
		t.Errorf("logged twice while starting: %v\n%s", rep, strings.Join(startup, "\n"))
	}
	if n := strings.Count(strings.Join(startup, "\n"), `msg="connected to NATS"`); n != 1 {
		t.Errorf(`"connected to NATS" logged %d times`, n)
	}

	// Progress: the events of each interval add up; MariaDB's position is
	// a group, PostgreSQL's an LSN.
	sums := map[string]int{}
	for _, l := range p.lines() {
		if m := progress.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[2])
			sums[m[1]] += n
			if m[1] == my.key && !regexp.MustCompile(`position\.gtid=\S+ position\.file=\S+ position\.pos=\d+`).MatchString(l) {
				t.Errorf("MariaDB progress without the position as a group: %s", l)
			}
			if m[1] == pg.key && !regexp.MustCompile(`position=[0-9A-F]+/[0-9A-F]+ `).MatchString(l) {
				t.Errorf("PostgreSQL progress without its position: %s", l)
			}
		}
	}
	if sums[pg.key] != 2 || sums[my.key] != 2 {
		t.Errorf("events over the progress lines: %v, want 2 each", sums)
	}
	if regexp.MustCompile(`\b(pos|from|position|checkpoint)="\{`).MatchString(out) {
		t.Errorf("a position logged as JSON in a string:\n%s", out)
	}

	// With the embedded server and no progress line.
	env = bs.env(t)
	delete(env, "TRACKER_NATS_URL")
	env["TRACKER_EMBEDDED_NATS_ADDR"] = "127.0.0.1:0"
	env["TRACKER_BINDS"] = bindsJSON
	env["TRACKER_PROGRESS_INTERVAL"] = "0"
	p = start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+pg.key, time.Minute)
	p.waitLog(`msg=streaming bind=`+my.key, time.Minute)
	time.Sleep(1500 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run with the embedded server: exit %d", code)
	}
	lines := p.lines()
	if rep := startupRepeats(lines); len(rep) > 0 {
		t.Errorf("logged twice with the embedded server: %v\n%s", rep, p.out.String())
	}
	for _, want := range []string{`msg="embedded NATS server started"`, `nats="embedded server (NATS_URL is not set)"`, `msg="NATS_URL is not set: events go to the embedded NATS server, on this host only"`} {
		if n := strings.Count(p.out.String(), want); n != 1 {
			t.Errorf("%s: %d lines, want 1", want, n)
		}
	}
	if strings.Contains(p.out.String(), "msg=progress") {
		t.Errorf("PROGRESS_INTERVAL=0 logged progress")
	}
}

// TestLogsJSON: in JSON logs durations are seconds and positions objects
// (operator review row 15).
func TestLogsJSON(t *testing.T) {
	bs := newBus(t)
	my := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = my.bindsJSON("t")
	env["TRACKER_LOG_FORMAT"] = "json"
	env["TRACKER_PROGRESS_INTERVAL"] = "500ms"
	p := start(t, env, "run")
	p.waitLog(`"msg":"progress"`, time.Minute)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	found := map[string]bool{}
	for _, l := range p.lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %s", l)
		}
		switch m["msg"] {
		case "created stream":
			found["stream"] = m["duplicate_window"] == 600.0
		case "streaming":
			from, ok := m["from"].(map[string]any)
			found["streaming"] = ok && from["file"] != nil && from["pos"] != nil
		case "progress":
			pos, ok := m["position"].(map[string]any)
			_, isNum := m["interval"].(float64)
			found["progress"] = ok && pos["file"] != nil && isNum
		}
	}
	for _, k := range []string{"stream", "streaming", "progress"} {
		if !found[k] {
			t.Errorf("%s line: durations not in seconds or position not an object:\n%s", k, p.out.String())
		}
	}
}

// TestCheckBesideRunningDaemon: `trackerd check` while the daemon runs
// passes: the slot and the server_id in use are the running trackerd's,
// which holds the binds' leases, and check says so (operator review row
// 5); no "ok" line says "warning".
func TestCheckBesideRunningDaemon(t *testing.T) {
	bs := newBus(t)
	bindsJSON, pg, my, _, _ := twoBinds(t)
	env := bs.env(t)
	env["TRACKER_BINDS"] = bindsJSON
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+pg.key, time.Minute)
	p.waitLog(`msg=streaming bind=`+my.key, time.Minute)
	// The MariaDB reader registers once it reads.
	time.Sleep(time.Second)
	code, out := runCmd(t, env, "check")
	t.Logf("check:\n%s", out)
	pid := p.cmd.Process.Pid
	for _, re := range []string{
		fmt.Sprintf(`(?m)^ok    %s\s+slot not in use: slot %s is in use by PID \d+: the running trackerd that holds the bind's lease \(\S+, pid %d\)$`, pg.key, pg.slot, pid),
		fmt.Sprintf(`(?m)^ok    %s\s+reader server_id: server_id %d is in use by the running trackerd that holds the bind's lease \(\S+, pid %d\)$`, my.key, my.serverID, pid),
		`(?m)^all checks passed$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("check output does not match %s", re)
		}
	}
	if code != 0 || regexp.MustCompile(`(?mi)^ok.*warning`).MatchString(out) {
		t.Fatalf("check beside the running trackerd: exit %d", code)
	}
	p.signal(syscall.SIGTERM)
	p.exitCode(30 * time.Second)
}

// TestInterruptWhileWaitingForNATS: SIGINT while trackerd waits for NATS
// at start is a clean stop: exit 0, and no internal key or "context
// canceled" in what it says (operator review row 8).
func TestInterruptWhileWaitingForNATS(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	env := bs.env(t)
	env["TRACKER_NATS_URL"] = fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	p := start(t, env, "run")
	p.waitLog(`NATS is not reachable`, time.Minute)
	p.waitLog(`checkpoint store unavailable: retrying`, time.Minute)
	p.signal(syscall.SIGINT)
	code := p.exitCode(30 * time.Second)
	out := p.out.String()
	if code != 0 || strings.Contains(out, ".lease") || strings.Contains(out, "context canceled") || !strings.Contains(out, "stopped cleanly") {
		t.Fatalf("SIGINT while waiting for NATS: exit %d, output:\n%s", code, out)
	}
	t.Logf("output:\n%s", out)
}
