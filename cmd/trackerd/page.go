package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

// The status page: plain HTML rendered here from the status document, with
// its style inline and nothing fetched from elsewhere, so it works offline
// and behind any proxy. A few lines of inline JavaScript fetch the page
// again every 2 s and swap its content in place; without JavaScript a
// <noscript> refresh reloads it every 5 s.

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Funcs(pageFuncs(time.Now())).Parse(pageHTML))

// pageData is what page.html renders.
type pageData struct {
	Doc       statusDoc
	Title     string
	Streaming int
}

// mountStatus adds the status page (/) and /status.json to mux.
func mountStatus(mux *http.ServeMux, d *daemon) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		doc := d.status(r.Context(), time.Now())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := renderPage(w, doc); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		doc := d.status(r.Context(), time.Now())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(doc)
	})
}

// renderPage writes the status page of doc, with times relative to doc.Time.
func renderPage(w io.Writer, doc statusDoc) error {
	t, err := pageTemplate.Clone()
	if err != nil {
		return err
	}
	data := pageData{Doc: doc}
	for _, b := range doc.Binds {
		if b.State == tracker.StateStreaming {
			data.Streaming++
		}
	}
	switch {
	case len(doc.Binds) == 0:
		data.Title = "trackerd: no bind"
	case doc.OK:
		data.Title = "trackerd: every bind streaming"
	default:
		data.Title = fmt.Sprintf("trackerd: %d of %d streaming", data.Streaming, len(doc.Binds))
	}
	return t.Funcs(pageFuncs(doc.Time)).Execute(w, data)
}

// pageFuncs are the page's formatting functions, with times relative to now.
func pageFuncs(now time.Time) template.FuncMap {
	return template.FuncMap{
		"ago": func(v any) template.HTML {
			t, ok := timeOf(v)
			if !ok {
				return "–"
			}
			return timeTag(t, ago(now, t))
		},
		"at": func(v any) template.HTML {
			t, _ := timeOf(v)
			return timeTag(t, t.UTC().Format("15:04:05 UTC"))
		},
		"since": func(t time.Time) string { return roughDuration(now.Sub(t)) },
		"lagBytes": func(v *int64) string {
			if v == nil {
				return "–"
			}
			return formatBytes(*v)
		},
		"lagSeconds": func(v *float64) string {
			if v == nil {
				return "–"
			}
			return formatSeconds(*v)
		},
		"seconds": formatSeconds,
		"eta": func(v *float64) string {
			if v == nil {
				return "–"
			}
			return roughDuration(time.Duration(*v * float64(time.Second)))
		},
		"deref": func(v *int64) int64 {
			if v == nil {
				return 0
			}
			return *v
		},
		"shortPosition": shortPosition,
		"rate":          formatRate,
		"bytes":         formatBytes,
		"count": func(v any) string {
			switch n := v.(type) {
			case uint64:
				return groupDigits(strconv.FormatUint(n, 10))
			case int64:
				return groupDigits(strconv.FormatInt(n, 10))
			case *int64:
				if n == nil {
					return "–"
				}
				return groupDigits(strconv.FormatInt(*n, 10))
			case int:
				return groupDigits(strconv.Itoa(n))
			}
			return fmt.Sprint(v)
		},
	}
}

func timeOf(v any) (time.Time, bool) {
	switch t := v.(type) {
	case time.Time:
		return t, !t.IsZero()
	case *time.Time:
		if t != nil && !t.IsZero() {
			return *t, true
		}
	}
	return time.Time{}, false
}

// timeTag is a <time> element showing text, with the absolute time in its
// title.
func timeTag(t time.Time, text string) template.HTML {
	abs := t.UTC().Format(time.RFC3339)
	return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s</time>`,
		template.HTMLEscapeString(abs), template.HTMLEscapeString(t.UTC().Format("2006-01-02 15:04:05.000 UTC")),
		template.HTMLEscapeString(text)))
}

// ago says how long before now t was: "12 s ago", "3 min ago".
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		return "in " + roughDuration(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return roughDuration(d) + " ago"
}

// roughDuration writes d in its two largest units: "12 s", "3 min 5 s",
// "2 h 10 min", "3 d 4 h".
func roughDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		return twoUnits(s/60, "min", s%60, "s")
	case s < 86400:
		return twoUnits(s/3600, "h", s%3600/60, "min")
	}
	return twoUnits(s/86400, "d", s%86400/3600, "h")
}

func twoUnits(a int64, ua string, b int64, ub string) string {
	if b == 0 {
		return fmt.Sprintf("%d %s", a, ua)
	}
	return fmt.Sprintf("%d %s %d %s", a, ua, b, ub)
}

// formatBytes writes n bytes with a binary unit: "512 B", "1.5 KiB".
func formatBytes(n int64) string {
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 && v > -1024 || u == "TiB" {
			if v < 10 && v > -10 {
				return fmt.Sprintf("%.1f %s", v, u)
			}
			return fmt.Sprintf("%.0f %s", v, u)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// formatSeconds writes a duration in seconds: "4 ms", "1.25 s", "125 s".
func formatSeconds(s float64) string {
	switch {
	case s == 0:
		return "0 s"
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	case s < 100:
		return fmt.Sprintf("%.1f s", s)
	}
	return fmt.Sprintf("%.0f s", s)
}

// formatRate writes events per second: "0", "0.35", "12.3", "4,500".
func formatRate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 1:
		return fmt.Sprintf("%.2f", r)
	case r < 100:
		return fmt.Sprintf("%.1f", r)
	}
	return groupDigits(strconv.FormatFloat(r, 'f', 0, 64))
}

// groupDigits puts a comma between groups of three digits.
func groupDigits(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
