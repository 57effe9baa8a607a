package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// topNow and topSleep are the clock of archip top (tests replace them).
var (
	topNow   = time.Now
	topSleep = time.Sleep
)

type topOptions struct {
	interval time.Duration
	once     bool
	n        int
}

func newTopCommand(g *globals) *cobra.Command {
	o := &topOptions{}
	c := &cobra.Command{
		Use:   "top ADMIN [--once] [--json]",
		Short: "Show the busiest volumes of a daemon, from its metrics",
		Long: `Show the volumes an 'archip serve' daemon serves, busiest first (read plus
write IOPS), with their read and write rates: ADMIN is the daemon's admin
API (its --admin-listen address, HOST:PORT or an http:// URL), whose
/metrics it reads every --interval. The admin token, if the daemon has one,
comes from --admin-token-file or ARCHIP_ADMIN_TOKEN.

Rates are over the interval between two readings, so the first view comes
after one interval. --once prints one view and exits; --json prints each
view as one JSON object (with --once, one in all), for scripts.

Volumes beyond the daemon's --metrics-volumes bound are counted together
as "_other". The same figures are on the daemon's dashboard (/ui/).`,
		Args: exactArgs("ADMIN"),
		RunE: func(c *cobra.Command, args []string) error {
			return runTop(c.Context(), g, o, args[0])
		},
	}
	c.Flags().DurationVar(&o.interval, "interval", time.Second, "time between two readings of the metrics")
	c.Flags().BoolVar(&o.once, "once", false, "print one view (after one interval) and exit")
	c.Flags().IntVarP(&o.n, "lines", "n", 0, "show this many volumes (0: as many as the terminal has lines, or all when not a terminal)")
	return c
}

// topVolume is one volume's rates, per second.
type topVolume struct {
	Volume     string  `json:"volume"`
	ReadIOPS   float64 `json:"read_iops"`
	WriteIOPS  float64 `json:"write_iops"`
	ReadBytes  float64 `json:"read_bytes_per_second"`
	WriteBytes float64 `json:"write_bytes_per_second"`
}

// topReport is one view.
type topReport struct {
	Time     time.Time   `json:"time"`
	Interval float64     `json:"interval_seconds"`
	Volumes  []topVolume `json:"volumes"` // busiest first
}

// topCounters are the per-volume counters top reads, in topVolume's
// order.
var topCounters = map[string]int{
	"archip_volume_read_ops_total": 0, "archip_volume_write_ops_total": 1,
	"archip_volume_read_bytes_total": 2, "archip_volume_write_bytes_total": 3,
}

func runTop(ctx context.Context, g *globals, o *topOptions, admin string) error {
	if o.interval <= 0 {
		return usageError{fmt.Errorf("top: --interval %s: give a positive interval", o.interval)}
	}
	tok, err := g.adminToken()
	if err != nil {
		return err
	}
	url := strings.TrimSuffix(admin, "/")
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url += "/metrics"
	client := &http.Client{Timeout: 10 * time.Second}
	prev, at, err := scrapeVolumes(ctx, client, url, tok)
	if err != nil {
		return err
	}
	tty := false
	if f, ok := g.stdout.(*os.File); ok && !g.json && !o.once {
		tty = term.IsTerminal(int(f.Fd()))
	}
	for {
		topSleep(o.interval)
		if err := ctx.Err(); err != nil {
			return nil // interrupted
		}
		cur, now, err := scrapeVolumes(ctx, client, url, tok)
		if err != nil {
			return err
		}
		rep := topReport{Time: now, Interval: now.Sub(at).Seconds()}
		for name, c := range cur {
			p := prev[name] // zero for a volume new since the last reading
			var r [4]float64
			for i := range r {
				if c[i] >= p[i] && rep.Interval > 0 { // else the series was reset
					r[i] = (c[i] - p[i]) / rep.Interval
				}
			}
			rep.Volumes = append(rep.Volumes, topVolume{Volume: name, ReadIOPS: r[0], WriteIOPS: r[1], ReadBytes: r[2], WriteBytes: r[3]})
		}
		sort.Slice(rep.Volumes, func(i, j int) bool {
			a, b := rep.Volumes[i], rep.Volumes[j]
			if x, y := a.ReadIOPS+a.WriteIOPS, b.ReadIOPS+b.WriteIOPS; x != y {
				return x > y
			}
			if x, y := a.ReadBytes+a.WriteBytes, b.ReadBytes+b.WriteBytes; x != y {
				return x > y
			}
			return a.Volume < b.Volume
		})
		prev, at = cur, now
		if err := printTop(g, o, admin, rep, tty); err != nil {
			return err
		}
		if o.once {
			return nil
		}
	}
}

func printTop(g *globals, o *topOptions, admin string, rep topReport, tty bool) error {
	if g.json {
		if o.once {
			return g.printJSON(rep)
		}
		return json.NewEncoder(g.stdout).Encode(rep)
	}
	n := o.n
	if n <= 0 && tty {
		if _, h, err := term.GetSize(int(g.stdout.(*os.File).Fd())); err == nil {
			n = max(h-3, 1)
		}
	}
	vols := rep.Volumes
	if n > 0 && len(vols) > n {
		vols = vols[:n]
	}
	var tot topVolume
	for _, v := range rep.Volumes {
		tot.ReadIOPS += v.ReadIOPS
		tot.WriteIOPS += v.WriteIOPS
		tot.ReadBytes += v.ReadBytes
		tot.WriteBytes += v.WriteBytes
	}
	if tty {
		io.WriteString(g.stdout, "\x1b[H\x1b[2J")
	}
	fmt.Fprintf(g.stdout, "%s  %s  %d volumes  %.0f IOPS  read %s  write %s\n", admin, rep.Time.Format("15:04:05"),
		len(rep.Volumes), tot.ReadIOPS+tot.WriteIOPS, rate(tot.ReadBytes), rate(tot.WriteBytes))
	rows := [][]string{{"VOLUME", "IOPS", "READ IOPS", "WRITE IOPS", "READ", "WRITE"}}
	for _, v := range vols {
		rows = append(rows, []string{v.Volume, fmt.Sprintf("%.0f", v.ReadIOPS+v.WriteIOPS), fmt.Sprintf("%.0f", v.ReadIOPS),
			fmt.Sprintf("%.0f", v.WriteIOPS), rate(v.ReadBytes), rate(v.WriteBytes)})
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		fmt.Fprintf(&b, "%-*s", width[0], r[0]) // names left, figures right
		for i := 1; i < len(r); i++ {
			fmt.Fprintf(&b, "  %*s", width[i], r[i])
		}
		fmt.Fprintln(g.stdout, b.String())
	}
	if !tty && !o.once {
		fmt.Fprintln(g.stdout)
	}
	return nil
}

// rate formats bytes per second.
func rate(v float64) string {
	u := []string{"B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"}
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

// scrapeVolumes reads the per-volume counters of the daemon's /metrics
// (Prometheus' text format), by volume.
func scrapeVolumes(ctx context.Context, client *http.Client, url, token string) (map[string][4]float64, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, time.Time{}, usageError{fmt.Errorf("top: %w", err)}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("top: %w", err)
	}
	defer resp.Body.Close()
	at := topNow()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = " (give the daemons' admin token: --admin-token-file or ARCHIP_ADMIN_TOKEN)"
		}
		return nil, at, fmt.Errorf("top: %s: %s: %s%s", url, resp.Status, strings.TrimSpace(string(b)), hint)
	}
	out := map[string][4]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		brace := strings.IndexByte(line, '{')
		if brace < 0 {
			continue
		}
		k, ok := topCounters[line[:brace]]
		if !ok {
			continue
		}
		vol, rest, ok := volumeLabel(line[brace+1:])
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		c := out[vol]
		c[k] = v
		out[vol] = c
	}
	if err := sc.Err(); err != nil {
		return nil, at, fmt.Errorf("top: reading %s: %w", url, err)
	}
	return out, at, nil
}

// volumeLabel finds the volume label in the labels of a sample (after
// its '{'), and returns its value and what follows the '}'.
func volumeLabel(s string) (vol, rest string, ok bool) {
	found := false
	for {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return "", "", false
		}
		name := strings.TrimSpace(s[:eq])
		var b strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(s[i])
				}
				continue
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return "", "", false
		}
		if name == "volume" {
			vol, found = b.String(), true
		}
		s = s[i+1:]
		switch {
		case strings.HasPrefix(s, ","):
			s = s[1:]
			if strings.HasPrefix(s, "}") {
				return vol, s[1:], found
			}
		case strings.HasPrefix(s, "}"):
			return vol, s[1:], found
		default:
			return "", "", false
		}
	}
}
