package nbd

import (
	"context"
	"encoding/binary"
	"strings"
	"sync/atomic"
	"testing"
)

// countingExports counts the calls to Open.
type countingExports struct {
	memExports
	opens *atomic.Int64
}

func (e countingExports) Open(ctx context.Context, name string) (Export, func(), error) {
	e.opens.Add(1)
	return e.memExports.Open(ctx, name)
}

// metaQuery encodes a LIST/SET_META_CONTEXT request.
func metaQuery(name string, queries ...string) []byte {
	q := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	q = append(q, name...)
	q = binary.BigEndian.AppendUint32(q, uint32(len(queries)))
	for _, s := range queries {
		q = binary.BigEndian.AppendUint32(q, uint32(len(s)))
		q = append(q, s...)
	}
	return q
}

// TestExportNameTooLong: a name over the protocol's 4096 bytes is
// refused as too big, without looking it up.
func TestExportNameTooLong(t *testing.T) {
	s, exps := newTestServer(t)
	var opens atomic.Int64
	s.Exports = countingExports{exps, &opens}
	c := dial(t, s)
	c.hello()
	name := strings.Repeat("n", 4097)
	c.option(optGo, goData(name))
	if typ, msg := c.optReply(); typ != repErrTooBig || len(msg) > 4096 {
		t.Fatalf("GO with a 4097-byte name: reply %#x, %d bytes", typ, len(msg))
	}
	c.option(optStructuredReply, nil)
	c.optReply()
	c.option(optSetMetaContext, metaQuery(name, metaBaseAllocation))
	if typ, _ := c.optReply(); typ != repErrTooBig {
		t.Fatalf("SET_META_CONTEXT with a 4097-byte name: reply %#x", typ)
	}
	if n := opens.Load(); n != 0 {
		t.Fatalf("%d lookups of a name over 4096 bytes", n)
	}
}

// TestInfoRequestsOnce: each NBD_INFO type asked for is answered once,
// however many times it is asked (a 64 KiB GO asking for the name 32,000
// times made 32,000 replies).
func TestInfoRequestsOnce(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.hello()
	d := binary.BigEndian.AppendUint32(nil, 2)
	d = append(d, "rw"...)
	d = binary.BigEndian.AppendUint16(d, 3000)
	for i := 0; i < 1000; i++ {
		for _, typ := range []uint16{infoName, infoDescription, infoBlockSize} {
			d = binary.BigEndian.AppendUint16(d, typ)
		}
	}
	c.option(optInfo, d)
	seen := map[uint16]int{}
	for {
		typ, data := c.optReply()
		if typ == repAck {
			break
		}
		if typ != repInfo {
			t.Fatalf("INFO: reply %#x", typ)
		}
		seen[binary.BigEndian.Uint16(data)]++
	}
	for _, typ := range []uint16{infoExport, infoName, infoDescription, infoBlockSize} {
		if seen[typ] != 1 {
			t.Errorf("NBD_INFO type %d sent %d times, want once", typ, seen[typ])
		}
	}
}

// TestMetaContextQueries: a request for more metadata contexts than the
// server bounds is refused as too big; base:allocation asked for several
// times is answered once.
func TestMetaContextQueries(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.hello()
	c.option(optStructuredReply, nil)
	c.optReply()
	many := make([]string, maxMetaQueries+1)
	for i := range many {
		many[i] = metaBaseAllocation
	}
	c.option(optSetMetaContext, metaQuery("rw", many...))
	if typ, _ := c.optReply(); typ != repErrTooBig {
		t.Fatalf("SET_META_CONTEXT with %d queries: reply %#x", len(many), typ)
	}
	for _, opt := range []uint32{optListMetaContext, optSetMetaContext} {
		c.option(opt, metaQuery("rw", metaBaseAllocation, "base:", metaBaseAllocation))
		n := 0
		for typ, _ := c.optReply(); typ != repAck; typ, _ = c.optReply() {
			if typ != repMetaContext {
				t.Fatalf("option %d: reply %#x", opt, typ)
			}
			n++
		}
		if n != 1 {
			t.Fatalf("option %d: base:allocation sent %d times, want once", opt, n)
		}
	}
}

// bigExport is a memExport that says it is 1 TiB and records the
// lengths BlockStatus is asked for.
type bigExport struct {
	*memExport
	asked atomic.Int64
}

func (b *bigExport) Size() int64 { return 1 << 40 }
func (b *bigExport) BlockStatus(ctx context.Context, off, n int64) ([]Extent, error) {
	b.asked.Store(n)
	ext := make([]Extent, 0, n/(64<<10))
	for i := int64(0); i < n; i += 64 << 10 {
		ext = append(ext, Extent{Length: min(64<<10, n-i), Hole: i%(128<<10) == 0})
	}
	return ext, nil
}

// TestBlockStatusBounded: BLOCK_STATUS asks the export about at most
// maxStatusLength bytes, so that neither the export's answer nor the
// reply grows with a client's request (4 GiB of 64 KiB blocks made a
// 512 KiB reply, and a few hundred of them in flight).
func TestBlockStatusBounded(t *testing.T) {
	s, exps := newTestServer(t)
	big := &bigExport{memExport: exps["rw"]}
	s.Exports = extraExports{exps, map[string]Export{"big": big}}
	c := dial(t, s)
	c.open("big")
	c.request(cmdBlockStatus, 0, 1, 0, 1<<32-1, nil)
	e, data := c.reply(1)
	if e != 0 {
		t.Fatalf("block status: errno %d", e)
	}
	if n := big.asked.Load(); n > maxStatusLength {
		t.Fatalf("the export was asked about %d bytes, over %d", n, maxStatusLength)
	}
	if len(data) > 4+8*maxStatusLength/(64<<10) {
		t.Fatalf("a %d-byte reply", len(data))
	}
	var sum int64
	for d := data[4:]; len(d) >= 8; d = d[8:] {
		sum += int64(binary.BigEndian.Uint32(d))
	}
	if sum == 0 || sum > maxStatusLength {
		t.Fatalf("the reply describes %d bytes", sum)
	}
}
