package volume

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestHandoverHops: handovers one after another among writers that log
// (a daemon), movers (Copying, no log: open and close), writers without a
// log that write (volume write), and crashes (a writer abandoned, the
// next one taking over): after each, every flushed write is there, the
// later over the earlier, in every order of kept logs and own logs.
func TestHandoverHops(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			for _, seg := range []bool{false, true} {
				var s objstore.Store = objstore.NewMem()
				if seg {
					s = wrapSeg(s)
				}
				rng := rand.New(rand.NewPCG(seed, 7))
				id := newClone(t, s, 8)
				r, err := Open(ctx, s, id, OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				want := make([]byte, r.Size())
				if err := r.ReadAt(ctx, want, 0); err != nil {
					t.Fatal(err)
				}
				crashed := false
				for hop := range 40 {
					what := ""
					switch k := rng.IntN(10); {
					case k < 5:
						w := openLogged(t, s, id, OpenOptions{Handover: !crashed, NewEpoch: crashed})
						what = "writer"
						for range 1 + rng.IntN(6) {
							n := 1 + rng.IntN(3*bs/2)
							off := rng.IntN(len(want) - n)
							p := pattern(n, byte(rng.IntN(250)+1))
							if err := w.WriteAt(ctx, p, int64(off), false); err != nil {
								t.Fatal(err)
							}
							copy(want[off:], p)
							if rng.IntN(3) == 0 {
								if err := w.Flush(ctx); err != nil {
									t.Fatal(err)
								}
							}
						}
						if err := w.Flush(ctx); err != nil {
							t.Fatal(err)
						}
						crashed = rng.IntN(4) == 0
						if !crashed {
							w.Discard(ctx)
						} else {
							what += " (crashed)"
						}
					case k < 8:
						w, err := Open(ctx, s, id, OpenOptions{Writable: true, Copying: true, Handover: !crashed, NewEpoch: crashed})
						if err != nil {
							t.Fatal(err)
						}
						what = "mover"
						if err := w.Close(ctx); err != nil {
							t.Fatal(err)
						}
						crashed = false
					default:
						w, err := Open(ctx, s, id, OpenOptions{Writable: true, Copying: true, Handover: !crashed, NewEpoch: crashed})
						if err != nil {
							t.Fatal(err)
						}
						what = "volume write"
						n := 1 + rng.IntN(2*bs)
						off := rng.IntN(len(want) - n)
						p := pattern(n, byte(rng.IntN(250)+1))
						if err := w.WriteAt(ctx, p, int64(off), false); err != nil {
							t.Fatal(err)
						}
						if rng.IntN(2) == 0 {
							copy(want[off:], p)
							if err := w.Close(ctx); err != nil {
								t.Fatal(err)
							}
						} else {
							what += " (discarded)"
							w.Discard(ctx)
						}
						crashed = false
					}
					r, err := Open(ctx, s, id, OpenOptions{})
					if err != nil {
						t.Fatal(err)
					}
					wantContents(t, r, want, fmt.Sprintf("seg %v hop %d (%s, %d logs)", seg, hop, what, len(r.Head().Logs)))
				}
			}
		})
	}
}
