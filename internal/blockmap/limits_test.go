package blockmap

import (
	"errors"
	"testing"
)

// TestHeadBlockCap: a head whose size needs more than MaxBlocks entries is
// refused as corrupt by the decoder, whatever the block size, so no
// stored head can size a map larger than the cap.
func TestHeadBlockCap(t *testing.T) {
	for shift := uint8(MinBlockShift); shift <= MaxBlockShift; shift++ {
		max := uint64(MaxBlocks) << shift
		for _, tc := range []struct {
			size uint64
			ok   bool
		}{{max, true}, {max + 1, false}, {MaxSize, false}} {
			h := &Head{ID: ID{1}, Size: tc.size, BlockShift: shift}
			_, err := DecodeHead(EncodeHead(h))
			if tc.ok && err != nil {
				t.Errorf("block 2^%d, size %d: %v", shift, tc.size, err)
			}
			if !tc.ok && !errors.Is(err, ErrCorrupt) {
				t.Errorf("block 2^%d, size %d (%d blocks): decoded, err %v", shift, tc.size, h.Blocks(), err)
			}
		}
		if got := MaxSizeFor(shift); got != max {
			t.Errorf("MaxSizeFor(%d) = %d, want %d", shift, got, max)
		}
	}
}

// TestDecodeHeadSegmentCountNotTrusted: a head claiming 2^32-1 segments
// in a few bytes is refused without allocating them.
func TestDecodeHeadSegmentCountNotTrusted(t *testing.T) {
	b := EncodeHead(&Head{ID: ID{1}, Size: 1 << 30, BlockShift: DefaultShift})
	body := append([]byte(nil), b[:len(b)-4]...)
	copy(body[headFixed-4:], []byte{0xff, 0xff, 0xff, 0xff})
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := DecodeHead(seal(append([]byte(nil), body...))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decoded: %v", err)
		}
	})
	if allocs > 10 {
		t.Fatalf("%v allocations", allocs)
	}
}
