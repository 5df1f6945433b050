#!/usr/bin/env bash
# readme-command.sh NAME: print the command README.md gives for NAME — the
# lines of the first fenced code block after the line
# `<!-- readme-command: NAME -->` — so that what runs is exactly what the
# README says:
#
#   test    .ci/run runs it (prepare the servers, run every test)
#   run     the quick start's "Run trackerd"   } e2e/readme_test.go runs
#   write   the quick start's second terminal  } them as written
#
# Exit 1, saying why, when README.md has no such block.
set -euo pipefail
[ $# = 1 ] || { echo "usage: readme-command.sh NAME" >&2; exit 2; }
cd "$(dirname "$0")/.."
marker="<!-- readme-command: $1 -->"
awk -v marker="$marker" '
  $0 == marker { state = 1; next }
  state == 1 && /^```/ { state = 2; next }
  state == 1 && NF { print "readme-command: README.md: \"" marker "\" is not followed by a code block (line " NR ")" > "/dev/stderr"; exit 1 }
  state == 2 && /^```/ { state = 3; exit }
  state == 2 { print }
  END { if (state != 3) { if (state == 0) print "readme-command: README.md has no line \"" marker "\"" > "/dev/stderr"; exit 1 } }
' README.md
