package binds

import (
	"fmt"
	"testing"

	"github.com/trackerd/trackerd/config"
)

// TestDocumentedPoolDefaults keeps the pool defaults the key table
// documents (config.Keys, the README) equal to the ones DefaultPool
// applies, which config.Default leaves to this package.
func TestDocumentedPoolDefaults(t *testing.T) {
	pg, my := DefaultPool(Postgres), DefaultPool(MySQL)
	if pg.Recycle != 0 || pg.MaxOverflow != my.MaxOverflow || pg.Timeout != my.Timeout {
		t.Fatalf("DefaultPool: PostgreSQL %+v, MySQL %+v: only size and recycle differ, PostgreSQL recycles never", pg, my)
	}
	want := map[string]string{
		"POOL_SIZE":    fmt.Sprintf("%d, %d for MySQL/MariaDB", pg.Size, my.Size),
		"MAX_OVERFLOW": fmt.Sprint(pg.MaxOverflow),
		"POOL_TIMEOUT": fmt.Sprint(pg.Timeout.Seconds()),
		"POOL_RECYCLE": fmt.Sprintf("unset, %v for MySQL/MariaDB", my.Recycle.Seconds()),
	}
	for _, k := range config.Keys() {
		if w, ok := want[k.Name]; ok {
			if k.Default != w {
				t.Errorf("%s: documented default %q, DefaultPool applies %q", k.Name, k.Default, w)
			}
			delete(want, k.Name)
		}
	}
	for k := range want {
		t.Errorf("no key %s", k)
	}
}
