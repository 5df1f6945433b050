package config

import "strings"

// suggest returns the candidate closest to name (case-insensitive edit
// distance), or "" when none is close enough to be a likely typo: at most
// 2 edits, 3 for names of 12 bytes or more.
func suggest(name string, candidates []string) string {
	limit := 2
	if len(name) >= 12 {
		limit = 3
	}
	return suggestWithin(name, candidates, limit)
}

// suggestWithin is suggest with an edit limit.
func suggestWithin(name string, candidates []string, limit int) string {
	n := strings.ToUpper(name)
	best, bestDist := "", 0
	for _, c := range candidates {
		d := editDistance(n, strings.ToUpper(c))
		if best == "" || d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" || bestDist > limit || bestDist >= len(n) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b)) // long keys are never typos of ours
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
