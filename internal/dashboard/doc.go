// Package dashboard is the read-only web dashboard that 'archip serve'
// serves under /ui/ on its admin API (daemon.Daemon.UseDashboard, whose
// access rules it has): the volumes, snapshots and images of the store
// with their lineage, their space, the leases and who holds them, and
// the daemon's live I/O, read from its own metrics registry, and the
// store's running gc and moves, read from their records (package
// progress) through daemon.Daemon.Operations.
//
// Pages are rendered on the server (html/template); everything they use
// is embedded in the binary. One script polls /ui/io.json, whose rates
// the server computes from two samples of the registry at least a
// second apart, and updates the page.
//
// The work of a page is bounded: listings are paginated (one catalog
// page, the heads and lease records of its entries, the records of the
// parents not on it); a volume's page reads its lineage's maps, as
// 'archip volume info' does; the store-wide figures, which read every
// map and list every object as 'archip store stats' does, are computed
// by one request at a time and kept for Config.StatsTTL.
package dashboard
