package dashboard

import (
	"fmt"
	"html/template"
)

// barRow is one bar of a chart: Bytes against the chart's largest
// figure, or one part of a stacked bar.
type barRow struct {
	Label string
	Bytes int64
	Class string // the CSS class that colours it
	// Pct is its width, and Off where it starts, in percent of the
	// chart's width.
	Pct, Off float64
}

// bars scales each row against top.
func bars(top int64, rows []barRow) []barRow {
	for i := range rows {
		if top > 0 {
			rows[i].Pct = 100 * float64(rows[i].Bytes) / float64(top)
		}
	}
	return rows
}

// stack lays rows end to end, as the parts of their sum.
func stack(rows []barRow) []barRow {
	var sum int64
	for _, r := range rows {
		sum += r.Bytes
	}
	off := 0.0
	for i := range rows {
		if sum > 0 {
			rows[i].Pct = 100 * float64(rows[i].Bytes) / float64(sum)
		}
		rows[i].Off = off
		off += rows[i].Pct
	}
	return rows
}

// bar is a horizontal bar of pct percent, in inline SVG.
func bar(class string, pct float64) template.HTML {
	return template.HTML(fmt.Sprintf(`<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img"><rect class="track" width="100" height="10"/><rect class="%s" width="%.2f" height="10"/></svg>`,
		template.HTMLEscapeString(class), min(max(pct, 0), 100)))
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", v) }

func ratio(v float64) string { return fmt.Sprintf("%.2f", v) }

func iops(v float64) string { return fmt.Sprintf("%.0f", v) }

// bps formats a rate in bytes per second.
func bps(v float64) string {
	u := []string{"B/s", "KiB/s", "MiB/s", "GiB/s"}
	i := 0
	for v >= 1024 && i < len(u)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", v, u[i])
	}
	return fmt.Sprintf("%.1f %s", v, u[i])
}
