package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the configuration key table in ../README.md")

const (
	readmeBegin = "<!-- BEGIN CONFIG KEYS (generated from config.Markdown; TestREADMEConfigKeys keeps it current) -->"
	readmeEnd   = "<!-- END CONFIG KEYS -->"
)

// TestREADMEConfigKeys keeps the README's key table equal to the key table
// the code uses. Run `go test ./config -run READMEConfigKeys -update-readme`
// after changing a key.
func TestREADMEConfigKeys(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i, j := strings.Index(s, readmeBegin), strings.Index(s, readmeEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q ... %q", readmeBegin, readmeEnd)
	}
	want := readmeBegin + "\n" + Markdown() + "\n" + readmeEnd
	if got := s[i : j+len(readmeEnd)]; got != want {
		if *updateREADME {
			if err := os.WriteFile("../README.md", []byte(s[:i]+want+s[j+len(readmeEnd):]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatal("README.md's configuration key table is out of date: run go test ./config -run READMEConfigKeys -update-readme")
	}
}
