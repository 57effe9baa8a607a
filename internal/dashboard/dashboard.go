package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/progress"
	"github.com/archipelago-go/archip/internal/units"
)

//go:embed web
var webFS embed.FS

// Config is what the dashboard shows and how.
type Config struct {
	Manager *manage.Manager // its Leases set (daemon.Run sets them)
	Daemon  *daemon.Daemon
	// Metrics is the daemon's registry, for live I/O; nil: none.
	Metrics *daemon.Metrics
	Node    string // this daemon's node id
	Store   string // the store's URL, as shown
	// PageSize is how many catalog entries a listing shows (default 50).
	PageSize int
	// StatsTTL is how long the store-wide figures are kept (default 10s).
	StatsTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Dashboard serves the pages.
type Dashboard struct {
	c    Config
	tmpl map[string]*template.Template
	mux  *http.ServeMux

	statsSem chan struct{} // one slot, held while the figures are computed (and stats read or set)
	stats    *storeFigures

	io ioSampler
}

// New returns the dashboard of c: mount it on /ui/.
func New(c Config) *Dashboard {
	if c.PageSize <= 0 {
		c.PageSize = 50
	}
	if c.StatsTTL <= 0 {
		c.StatsTTL = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	d := &Dashboard{c: c, tmpl: map[string]*template.Template{}, mux: http.NewServeMux(), statsSem: make(chan struct{}, 1)}
	d.io.now = c.Now
	if c.Metrics != nil {
		d.io.gather = c.Metrics.Registry().Gather
	}
	funcs := template.FuncMap{"size": units.FormatSize, "bar": bar, "pct": pct, "ratio": ratio, "iops": iops, "bps": bps, "since": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return c.Now().Sub(t).Round(time.Second).String()
	}}
	for _, p := range []string{"volumes", "volume", "space", "leases", "activity"} {
		d.tmpl[p] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/busiest.html", "web/"+p+".html"))
	}
	static, _ := fs.Sub(webFS, "web/static")
	d.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	d.mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/volumes", http.StatusFound) })
	d.mux.HandleFunc("GET /ui/volumes", d.volumes)
	d.mux.HandleFunc("GET /ui/volume", d.volume)
	d.mux.HandleFunc("GET /ui/space", d.space)
	d.mux.HandleFunc("GET /ui/leases", d.leases)
	d.mux.HandleFunc("GET /ui/activity", d.activity)
	d.mux.HandleFunc("GET /ui/io.json", d.ioJSON)
	return d
}

func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.mux.ServeHTTP(w, r) }

// page is what every page's layout shows.
type page struct {
	Title, Nav string
	Node       string
	Store      string
	Metrics    bool
	Error      string
	Data       any
}

func (d *Dashboard) render(w http.ResponseWriter, name, title string, data any, err error) {
	p := page{Title: title, Nav: name, Node: d.c.Node, Store: d.c.Store, Metrics: d.c.Metrics != nil, Data: data}
	code := http.StatusOK
	if err != nil {
		p.Error = err.Error()
		code = http.StatusInternalServerError
		if errors.Is(err, catalog.ErrNotFound) {
			code = http.StatusNotFound
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'")
	w.WriteHeader(code)
	if err := d.tmpl[name].Execute(w, p); err != nil {
		fmt.Fprintf(w, "<p>dashboard: %s</p>", template.HTMLEscapeString(err.Error()))
	}
}

// row is one catalog entry of a listing.
type row struct {
	manage.Entry
	From     string // the parent's (clone) or origin's (snapshot) name
	Role     string // on this node
	Clients  int
	Lease    leaseView
	IO       *volumeIO // nil: no rate yet
	Children []*row
}

// leaseView is a lease record as shown.
type leaseView struct {
	State   string // none, released, held, expired, broken, corrupt; "" for what has no lease
	Holder  string
	Addr    string
	Term    uint64
	Expires string // left, when held
	Mine    bool
}

func (d *Dashboard) readLease(ctx context.Context, id blockmap.ID) leaseView {
	lm := d.c.Manager.Leases
	if lm == nil {
		return leaseView{State: "unknown"}
	}
	rec, ver, err := lm.Read(ctx, id.String())
	switch {
	case errors.Is(err, objstore.ErrCorrupt):
		return leaseView{State: "corrupt"}
	case err != nil:
		return leaseView{State: "unreadable"}
	}
	v := leaseView{Holder: rec.Owner, Addr: rec.Addr, Term: rec.Term, Mine: rec.Owner != "" && rec.Owner == d.c.Node}
	left := rec.Expires.Sub(d.c.Now())
	switch {
	case ver == 0:
		v.State = "none"
	case rec.Broken:
		v.State = "broken"
	case rec.Owner == "":
		v.State = "released"
	case left > 0:
		v.State, v.Expires = "held", left.Round(100*time.Millisecond).String()
	default:
		v.State = "expired"
	}
	return v
}

// listPage reads one page of the catalog with what a listing shows.
func (d *Dashboard) listPage(r *http.Request, leases bool) ([]*row, string, error) {
	ctx := r.Context()
	q := r.URL.Query()
	entries, next, err := d.c.Manager.ListPage(ctx, catalog.ListOptions{Prefix: q.Get("prefix"), After: q.Get("after"), Limit: d.c.PageSize})
	if err != nil {
		return nil, "", err
	}
	open := map[blockmap.ID]daemon.VolumeStatus{}
	if d.c.Daemon != nil {
		for _, st := range d.c.Daemon.Status() {
			open[st.ID] = st
		}
	}
	rows := make([]*row, len(entries))
	names := map[blockmap.ID]string{}
	for i, e := range entries {
		rows[i] = &row{Entry: e}
		names[e.ID] = e.Name
		if st, ok := open[e.ID]; ok {
			rows[i].Role, rows[i].Clients = st.Role, st.Clients
		}
	}
	var g errgroup.Group
	g.SetLimit(16)
	for _, rw := range rows {
		from := rw.Parent
		if from.IsZero() {
			from = rw.Origin
		}
		g.Go(func() error {
			if !from.IsZero() {
				if n, ok := names[from]; ok {
					rw.From = n
				} else if rec, err := d.c.Manager.Catalog.ByID(ctx, from); err == nil {
					rw.From = rec.Name
				} else {
					rw.From = "(removed)"
				}
			}
			if leases && rw.Kind == catalog.KindVolume {
				rw.Lease = d.readLease(ctx, rw.ID)
			}
			return nil
		})
	}
	g.Wait()
	return rows, next, nil
}

// tree nests the rows of a page under their parents (clones under the
// snapshot or image they were made from, snapshots under their volume)
// where both are on the page, and returns the roots.
func tree(rows []*row) []*row {
	byID := map[blockmap.ID]*row{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	var roots []*row
	for _, r := range rows {
		from := r.Parent
		if from.IsZero() {
			from = r.Origin
		}
		if p, ok := byID[from]; ok && !from.IsZero() {
			p.Children = append(p.Children, r)
		} else {
			roots = append(roots, r)
		}
	}
	return roots
}

type volumesData struct {
	Rows, Tree  []*row
	Prefix      string
	Next, After string
	Busiest     []volumeIO
}

func (d *Dashboard) volumes(w http.ResponseWriter, r *http.Request) {
	rows, next, err := d.listPage(r, true)
	vd := volumesData{Rows: rows, Next: next, After: r.URL.Query().Get("after"), Prefix: r.URL.Query().Get("prefix")}
	if err == nil {
		flat := append([]*row(nil), rows...)
		vd.Tree = tree(flat)
		rates := d.io.sample()
		for _, rw := range rows {
			if v, ok := rates.byName[rw.Name]; ok {
				rw.IO = &v
			} else if rates.Interval > 0 {
				rw.IO = &volumeIO{}
			}
		}
		vd.Busiest = rates.top(10)
	}
	d.render(w, "volumes", "Volumes", vd, err)
}

type volumeData struct {
	*manage.Info
	Ancestors   []string // root first
	Descendants []*node  // what was made from it, and from those...
	Truncated   bool     // more descendants than Limit
	Limit       int
	Lease       leaseView
	Role        string
	Clients     int
	Bars        []barRow
	IO          *volumeIO
}

// maxAncestors bounds the lineage a volume's page follows up, and
// maxDescendants how many records it shows below.
const (
	maxAncestors   = 32
	maxDescendants = 100
)

// node is a record in a lineage tree.
type node struct {
	Name     string
	Kind     catalog.Kind
	Children []*node
}

// descendants reads the records made from id, depth first, up to
// *budget of them.
func (d *Dashboard) descendants(ctx context.Context, id blockmap.ID, budget *int) ([]*node, bool, error) {
	recs, err := d.c.Manager.Catalog.Children(ctx, id)
	if err != nil {
		return nil, false, err
	}
	var out []*node
	for _, r := range recs {
		if *budget <= 0 {
			return out, true, nil
		}
		*budget--
		n := &node{Name: r.Name, Kind: r.Kind}
		var more bool
		n.Children, more, err = d.descendants(ctx, r.ID, budget)
		if err != nil {
			return nil, false, err
		}
		out = append(out, n)
		if more {
			return out, true, nil
		}
	}
	return out, false, nil
}

func (d *Dashboard) volume(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.URL.Query().Get("name")
	in, err := d.c.Manager.Info(ctx, name)
	if err != nil {
		d.render(w, "volume", name, volumeData{Info: &manage.Info{Entry: manage.Entry{Record: catalog.Record{Name: name}}}}, err)
		return
	}
	vd := volumeData{Info: in, Limit: maxDescendants}
	rec := in.Record
	for range maxAncestors {
		id := rec.Parent
		if id.IsZero() {
			id = rec.Origin
		}
		if id.IsZero() {
			break
		}
		p, err := d.c.Manager.Catalog.ByID(ctx, id)
		if err != nil {
			vd.Ancestors = append([]string{"(removed)"}, vd.Ancestors...)
			break
		}
		vd.Ancestors = append([]string{p.Name}, vd.Ancestors...)
		rec = *p
	}
	budget := maxDescendants
	if vd.Descendants, vd.Truncated, err = d.descendants(ctx, in.ID, &budget); err != nil {
		d.render(w, "volume", name, vd, err)
		return
	}
	if in.Kind == catalog.KindVolume {
		vd.Lease = d.readLease(ctx, in.ID)
	}
	if d.c.Daemon != nil {
		for _, st := range d.c.Daemon.Status() {
			if st.ID == in.ID {
				vd.Role, vd.Clients = st.Role, st.Clients
			}
		}
	}
	vd.Bars = bars(in.Size, []barRow{
		{Label: "size", Bytes: in.Size, Class: "size"},
		{Label: "allocated", Bytes: in.AllocatedBytes, Class: "alloc"},
		{Label: "private", Bytes: in.PrivateBytes, Class: "private"},
		{Label: "shared", Bytes: in.SharedBytes, Class: "shared"},
		{Label: "content", Bytes: in.ContentBytes, Class: "content"},
		{Label: "exclusive", Bytes: in.ExclusiveBytes, Class: "excl"},
	})
	if v, ok := d.io.sample().byName[name]; ok {
		vd.IO = &v
	}
	d.render(w, "volume", name, vd, nil)
}

// storeFigures are the store-wide figures, as computed at At.
type storeFigures struct {
	At    time.Time
	Took  time.Duration
	Stats *manage.StoreStats
	Pools []poolFigures
	Err   error
}

type poolFigures struct {
	Name    string
	Default bool
	Objects int64
	Bytes   int64
}

// figures returns the store-wide figures, computing them if those kept
// are older than StatsTTL; one request at a time computes them, and one
// that waits for them gives up when ctx ends.
func (d *Dashboard) figures(ctx context.Context) *storeFigures {
	select {
	case d.statsSem <- struct{}{}:
		defer func() { <-d.statsSem }()
	case <-ctx.Done():
		return &storeFigures{At: d.c.Now(), Err: fmt.Errorf("dashboard: waiting for the space figures: %w", ctx.Err())}
	}
	now := d.c.Now()
	if f := d.stats; f != nil && now.Sub(f.At) < d.c.StatsTTL {
		return f
	}
	f := &storeFigures{At: now}
	f.Stats, f.Err = d.c.Manager.Stats(ctx)
	if f.Err == nil {
		if r, ok := pools.Of(d.c.Manager.Store); ok {
			for i, p := range r.Pools() {
				pf := poolFigures{Name: p.Name, Default: i == 0}
				err := p.Store.List(ctx, "", func(in objstore.Info) error {
					pf.Objects++
					pf.Bytes += in.Size
					return nil
				})
				if err != nil {
					f.Err = fmt.Errorf("dashboard: listing pool %s: %w", p.Name, err)
					break
				}
				f.Pools = append(f.Pools, pf)
			}
		}
	}
	f.Took = d.c.Now().Sub(now)
	if f.Err == nil || ctx.Err() == nil {
		d.stats = f
	}
	return f
}

type spaceData struct {
	*storeFigures
	TTL        time.Duration
	Bars       []barRow
	Stored     []barRow
	PoolBars   []barRow
	DedupRatio float64
}

func (d *Dashboard) space(w http.ResponseWriter, r *http.Request) {
	f := d.figures(r.Context())
	sd := spaceData{storeFigures: f, TTL: d.c.StatsTTL}
	if f.Err != nil {
		d.render(w, "space", "Space", sd, f.Err)
		return
	}
	s := f.Stats
	sd.DedupRatio = s.DedupRatio
	top := max(s.ProvisionedBytes, s.LogicalBytes, s.StoredBytes+s.MetadataBytes)
	sd.Bars = bars(top, []barRow{
		{Label: "provisioned", Bytes: s.ProvisionedBytes, Class: "size"},
		{Label: "logical", Bytes: s.LogicalBytes, Class: "alloc"},
		{Label: "stored", Bytes: s.StoredBytes, Class: "stored"},
		{Label: "metadata", Bytes: s.MetadataBytes, Class: "meta"},
	})
	sd.Stored = stack([]barRow{
		{Label: "content", Bytes: s.ContentBytes, Class: "content"},
		{Label: "private", Bytes: s.PrivateBytes, Class: "private"},
		{Label: "write logs", Bytes: s.LogBytes, Class: "log"},
		{Label: "metadata", Bytes: s.MetadataBytes, Class: "meta"},
	})
	var ptop int64
	for _, p := range f.Pools {
		ptop = max(ptop, p.Bytes)
	}
	for _, p := range f.Pools {
		sd.PoolBars = append(sd.PoolBars, barRow{Label: p.Name, Bytes: p.Bytes, Class: "stored"})
	}
	sd.PoolBars = bars(ptop, sd.PoolBars)
	d.render(w, "space", "Space", sd, nil)
}

type leasesData struct {
	Rows        []*row
	Open        []daemon.VolumeStatus
	Next, After string
	Prefix      string
}

func (d *Dashboard) leases(w http.ResponseWriter, r *http.Request) {
	rows, next, err := d.listPage(r, true)
	ld := leasesData{Next: next, After: r.URL.Query().Get("after"), Prefix: r.URL.Query().Get("prefix")}
	for _, rw := range rows {
		if rw.Kind == catalog.KindVolume {
			ld.Rows = append(ld.Rows, rw)
		}
	}
	if d.c.Daemon != nil {
		ld.Open = d.c.Daemon.Status()
		sort.Slice(ld.Open, func(i, j int) bool { return ld.Open[i].Name < ld.Open[j].Name })
	}
	d.render(w, "leases", "Leases", ld, err)
}

type activityData struct {
	Counters []counter
	Busiest  []volumeIO
	Ops      []operation
	OpsErr   string
}

// operation is a running gc or move, from its record (package progress).
type operation struct {
	progress.Record
	Counts []string // "NAME: VALUE", sorted
}

// counter is one metric of the daemon, with its value for each set of
// labels.
type counter struct {
	Name, Help string
	Values     []string // "VALUE" or "LABEL=V: VALUE"
}

// activityMetrics are the daemon's counters the activity page shows.
var activityMetrics = []string{
	"archip_frontend_connections", "archip_volumes",
	"archip_lease_acquisitions_total", "archip_lease_takeovers_total", "archip_lease_lost_total",
	"archip_handoffs_total", "archip_handoff_errors_total",
	"archip_periodic_flushes_total", "archip_periodic_flush_errors_total",
}

func (d *Dashboard) activity(w http.ResponseWriter, r *http.Request) {
	var ad activityData
	if d.c.Daemon != nil {
		recs, _, err := d.c.Daemon.Operations(r.Context())
		if err != nil {
			ad.OpsErr = err.Error()
		}
		for _, rec := range recs {
			op := operation{Record: rec}
			for k, v := range rec.Counts {
				op.Counts = append(op.Counts, fmt.Sprintf("%s: %d", k, v))
			}
			sort.Strings(op.Counts)
			ad.Ops = append(ad.Ops, op)
		}
	}
	if d.c.Metrics != nil {
		mfs, err := d.c.Metrics.Registry().Gather()
		if err != nil {
			d.render(w, "activity", "Activity", ad, err)
			return
		}
		for _, want := range activityMetrics {
			for _, mf := range mfs {
				if mf.GetName() != want {
					continue
				}
				c := counter{Name: want, Help: mf.GetHelp()}
				for _, m := range mf.GetMetric() {
					v := strconv.FormatFloat(m.GetCounter().GetValue()+m.GetGauge().GetValue(), 'f', -1, 64)
					for _, l := range m.GetLabel() {
						v = fmt.Sprintf("%s=%s: %s", l.GetName(), l.GetValue(), v)
					}
					c.Values = append(c.Values, v)
				}
				ad.Counters = append(ad.Counters, c)
			}
		}
	}
	ad.Busiest = d.io.sample().top(10)
	d.render(w, "activity", "Activity", ad, nil)
}
