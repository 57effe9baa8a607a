package blockmap

import "testing"

// TestParseName: ParseName reads back what the builders write, and
// takes nothing else for a block map object.
func TestParseName(t *testing.T) {
	id := ID{0xab, 1, 2, 3}
	var sum [32]byte
	sum[0], sum[31] = 0xfe, 7
	priv := PrivateEntry(id, 0x1f, 0x2a)
	for _, tc := range []struct {
		name string
		want Name
	}{
		{ContentName(sum), Name{Kind: ContentObject, Hash: sum}},
		{HeadName(id), Name{Kind: HeadObject, Volume: id}},
		{SegmentName(id, 3, 9), Name{Kind: SegmentObject, Volume: id}},
		{priv.ObjectName(), Name{Kind: PrivateObject, Volume: id, Entry: priv}},
		{LogName(id, 5, 0x2a), Name{Kind: LogObject, Volume: id, Log: LogName(id, 5, 0x2a)}},
		{LogSegmentName(id, 5, 0x2a, 0x1000), Name{Kind: LogObject, Volume: id, Log: LogName(id, 5, 0x2a)}},
		{LogName(id, 5, 0x2a) + "/01000", Name{}}, // not canonical
		{LogName(id, 5, 0x2a) + "/", Name{}},
		{priv.ObjectName() + "/10", Name{}},    // a private block has no segments
		{VolumePrefix(id) + "l/05-2a", Name{}}, // not canonical
		{VolumePrefix(id) + "other", Name{Kind: VolumeObject, Volume: id}},
		{"blk/00ff", Name{}},                                 // not a whole hash
		{"blk/" + string(make([]byte, 64)), Name{}},          // not hex
		{"vol/nothex/head", Name{}},                          // not an id
		{VolumePrefix(id) + "d/1f-02a", Name{}},              // not canonical
		{VolumePrefix(id) + "d/1f", Name{}},                  // no sequence
		{VolumePrefix(id)[:len(VolumePrefix(id))-1], Name{}}, // no slash after the id
		{"cat/name/x", Name{}},
		{"lease/" + id.String(), Name{}},
		{"gc/lock", Name{}},
	} {
		got := ParseName(tc.name)
		if got.Kind != tc.want.Kind || got.Volume != tc.want.Volume || got.Hash != tc.want.Hash || !got.Entry.Equal(tc.want.Entry) || got.Log != tc.want.Log {
			t.Errorf("ParseName(%q) = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
