package srckit

import (
	"math"
	"strconv"
	"testing"
)

func TestSafeInts(t *testing.T) {
	for _, tc := range []struct {
		v    int64
		want string
	}{
		{0, "0"}, {-1, "-1"}, {42, "42"},
		{MaxSafeInt, "9007199254740991"}, {-MaxSafeInt, "-9007199254740991"},
		{MaxSafeInt + 1, `"9007199254740992"`}, {-MaxSafeInt - 1, `"-9007199254740992"`},
		{math.MaxInt64, `"9223372036854775807"`}, {math.MinInt64, `"-9223372036854775808"`},
	} {
		if got := string(AppendInt(nil, tc.v)); got != tc.want {
			t.Errorf("AppendInt(%d) = %s, want %s", tc.v, got, tc.want)
		}
		if got := SafeIntText([]byte(strconv.FormatInt(tc.v, 10))); got != (tc.want[0] != '"') {
			t.Errorf("SafeIntText(%d) = %v", tc.v, got)
		}
	}
	for _, tc := range []struct {
		v    uint64
		want string
	}{{0, "0"}, {MaxSafeInt, "9007199254740991"}, {MaxSafeInt + 1, `"9007199254740992"`}, {math.MaxUint64, `"18446744073709551615"`}} {
		if got := string(AppendUint(nil, tc.v)); got != tc.want {
			t.Errorf("AppendUint(%d) = %s, want %s", tc.v, got, tc.want)
		}
	}
	for _, v := range []string{"", "-", "01", "-01", "1.5", "1e3", " 1", "+1", "NaN", "99999999999999999999"} {
		if SafeIntText([]byte(v)) {
			t.Errorf("SafeIntText(%q) = true", v)
		}
	}
}

// FuzzSafeInts checks that the text rule and the binary one agree.
func FuzzSafeInts(f *testing.F) {
	for _, v := range []int64{0, 1, -1, MaxSafeInt, MaxSafeInt + 1, -MaxSafeInt, -MaxSafeInt - 1, math.MaxInt64, math.MinInt64} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v int64) {
		number := AppendInt(nil, v)[0] != '"'
		if SafeIntText([]byte(strconv.FormatInt(v, 10))) != number {
			t.Fatalf("%d: SafeIntText and AppendInt disagree", v)
		}
		if v >= 0 && (AppendUint(nil, uint64(v))[0] != '"') != number {
			t.Fatalf("%d: AppendUint and AppendInt disagree", v)
		}
	})
}
