package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// promtool returns the path of promtool (Debian's prometheus package; the
// test preparation installs it), or skips the test, except under CI=true,
// where it fails.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed: CI must check deploy/prometheus (scripts/install-packages.sh installs Debian's prometheus)")
		}
		t.Skip("promtool is not installed (Debian's prometheus package; scripts/install-packages.sh)")
	}
	return p
}

// TestAlertRules: deploy/prometheus/alerts.yml passes `promtool check
// rules`, and its unit tests, alerts_test.yml, pass `promtool test rules`.
func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "../../deploy/prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// describedMetrics are the names of the metrics trackerd's collector
// describes.
func describedMetrics() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() { (&metrics{}).Describe(ch); close(ch) }()
	var names []string
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := re.FindStringSubmatch(d.String()); m != nil {
			names = append(names, m[1])
		}
	}
	return names
}

// trackerdNames returns the trackerd_ metric names a PromQL text uses, a
// histogram's _bucket, _sum and _count series under the histogram's name.
func trackerdNames(expr string) []string {
	var out []string
	for _, n := range regexp.MustCompile(`\btrackerd_[a-z_]+`).FindAllString(expr, -1) {
		n = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// TestGrafanaDashboard: deploy/grafana/trackerd-dashboard.json parses as a
// dashboard whose every panel queries Prometheus through the datasource
// variable, and names only metrics trackerd exports (e2e's
// TestDeployFilesMatchMetrics checks them against a running trackerd).
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("../../deploy/grafana/trackerd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without a title, uid or panels")
	}
	known := describedMetrics()
	used := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, %d queries; want ${datasource} and a query", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, q := range p.Targets {
			names := trackerdNames(q.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no trackerd metric", p.Title, q.Expr)
			}
			for _, n := range names {
				used++
				if !slices.Contains(known, n) {
					t.Errorf("panel %q: %s is not a trackerd metric", p.Title, n)
				}
			}
		}
	}
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Name)
	}
	if !slices.Equal(vars, []string{"datasource", "job", "bind"}) {
		t.Errorf("variables %v, want datasource, job, bind", vars)
	}
	t.Logf("%d panels, %d metric uses", len(dash.Panels), used)
}

// TestAlertRulesNameTrackerdMetrics: every trackerd metric the alerts use
// is one trackerd exports.
func TestAlertRulesNameTrackerdMetrics(t *testing.T) {
	data, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	known := describedMetrics()
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			for _, n := range trackerdNames(r.Expr) {
				if !slices.Contains(known, n) {
					t.Errorf("alert %s: %s is not a trackerd metric", r.Alert, n)
				}
			}
		}
	}
	for _, want := range []string{"TrackerdBindNotStreaming", "TrackerdLagGrowing", "TrackerdSlotWALRetained", "TrackerdDuplicatesOnFirstPublish"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml lacks %s", want)
		}
	}
}

// TestREADMEMetricsTable: the README's metrics table (Operating trackerd,
// Metrics) lists exactly the metrics trackerd's collector describes, each
// with the labels it has.
func TestREADMEMetricsTable(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "\n### Metrics\n")
	if !ok {
		t.Fatal("README.md has no ### Metrics section")
	}
	table, _, _ = strings.Cut(table, "\n### ")
	listed := map[string]string{} // name -> labels as the README writes them
	for _, m := range regexp.MustCompile("(?m)^\\| `(trackerd_[a-z_]+)` \\|([^|]*)\\|").FindAllStringSubmatch(table, -1) {
		listed[m[1]] = strings.TrimSpace(strings.ReplaceAll(m[2], "`", ""))
	}
	ch := make(chan *prometheus.Desc, 64)
	go func() { (&metrics{}).Describe(ch); close(ch) }()
	re := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	described := 0
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		described++
		labels, ok := listed[m[1]]
		if !ok {
			t.Errorf("README's metrics table lacks %s", m[1])
			continue
		}
		if want := strings.ReplaceAll(m[2], ",", ", "); labels != want {
			t.Errorf("README: %s has labels %q, want %q", m[1], labels, want)
		}
		delete(listed, m[1])
	}
	for name := range listed {
		t.Errorf("README's metrics table lists %s, which trackerd does not export", name)
	}
	if described < 30 {
		t.Errorf("only %d metrics described", described)
	}
}
