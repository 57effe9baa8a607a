package volume

import (
	"fmt"
	"testing"
)

// TestScatterReview2PartlyFailedCheckpointIfLoggedThenWrite: scattered
// writes L1 (block 1) and L2 (block 2) are logged and flushed. A Snapshot
// (or a Resize to the same size, or a HashWith) checkpoints through
// checkpointIfLogged: block 1's checkpoint writes L1 in place and drops it from the index
// (dropGen moves), block 2's fails, and the call returns its error before
// the logs are restarted. Unlike a flush's checkpoint, nothing it leaves
// behind (logForce, headDirty, the checkpoint flag, dirty blocks) makes
// the next flush checkpoint or swap the head. A write X over L1's bytes
// goes in place; FUA finds dropStored != dropGen and falls back to Flush,
// whose quickCut does not look at dropGen (nor does a plain Flush): it
// syncs block 1's object and checks the head. The stored head's log still
// replays L1: a crash loses the acknowledged X.
//
// mode "logged": X is followed by a scattered write to block 3 (logged)
// and a Flush: quickCut refuses (v.mu.logged), flushCut needs no
// checkpoint, and persist still picks persistInPlace (no map change, no
// headDirty): so a fix only in quickCut does not do.
func TestScatterReview2PartlyFailedCheckpointIfLoggedThenWrite(t *testing.T) {
	for _, op := range []string{"snapshot", "resize", "hash"} {
		for _, mode := range []string{"fua", "flush", "logged"} {
			t.Run(fmt.Sprint(op, "/", mode), func(t *testing.T) {
				v, f, id, _ := scatterFaulty(t, 4)
				logTwoFailSecond(t, v, f)
				var err error
				switch op {
				case "snapshot":
					_, err = v.Snapshot(ctx)
				case "resize":
					err = v.Resize(ctx, uint64(v.Size()))
				case "hash":
					_, err = v.HashWith(ctx, HashOptions{})
				}
				if err == nil {
					t.Fatalf("the %s whose checkpoint failed succeeded", op)
				}
				if v.logged(1) {
					t.Skip("block 1 was not checkpointed before block 2 failed")
				}
				X := pattern(int(logScattered)+4096, 'X')
				switch mode {
				case "fua":
					writeDurably(t, v, X, 1*bs, true)
				case "flush":
					writeDurably(t, v, X, 1*bs, false)
				case "logged":
					if err := v.WriteAt(ctx, X, 1*bs, false); err != nil {
						t.Fatal(err)
					}
					if err := v.WriteAt(ctx, pattern(4096, 'Y'), 3*bs, false); err != nil {
						t.Fatal(err)
					}
					if !v.logged(3) {
						t.Fatal("the write to block 3 was not logged")
					}
					if err := v.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
				expectBytes(t, v, 1*bs, X, "the acknowledged write, read back by the writer")
				v.mu.Lock()
				t.Logf("dropGen %d dropStored %d", v.mu.dropGen, v.mu.dropStored)
				v.mu.Unlock()
				r, err := Open(ctx, f, id, OpenOptions{}) // a crash now
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close(ctx)
				expectBytes(t, r, 1*bs, X, "the acknowledged write after a crash")
			})
		}
	}
}
