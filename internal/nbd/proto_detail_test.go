package nbd

import (
	"bytes"
	"encoding/binary"
	"net"
	"os/exec"
	"strings"
	"testing"
)

// goFlags sends GO for name and returns the transmission flags.
func (c *client) goFlags(name string) uint16 {
	c.t.Helper()
	c.option(optGo, goData(name))
	var flags uint16
	for {
		typ, data := c.optReply()
		switch {
		case typ == repAck:
			return flags
		case typ != repInfo:
			c.t.Fatalf("GO %s: reply %#x %q", name, typ, data)
		case binary.BigEndian.Uint16(data) == infoExport:
			flags = binary.BigEndian.Uint16(data[10:])
		}
	}
}

// TestSendDFOnlyWithStructuredReplies: NBD_FLAG_SEND_DF is advertised
// only to a client that negotiated structured replies, and DF from one
// that did not is refused.
func TestSendDFOnlyWithStructuredReplies(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.hello()
	if f := c.goFlags("rw"); f&tflagSendDF != 0 {
		t.Fatalf("SEND_DF advertised without structured replies: flags %#x", f)
	}
	c.request(cmdRead, cmdFlagDF, 1, 0, 512, nil)
	if e, _ := c.reply(1); e != EINVAL {
		t.Fatalf("READ with DF without structured replies: errno %d, want EINVAL", e)
	}
	if f := dial(t, s).open("rw"); f&tflagSendDF == 0 {
		t.Fatalf("SEND_DF not advertised with structured replies: flags %#x", f)
	}
	c3 := dial(t, s)
	c3.hello()
	c3.option(optExportName, []byte("rw"))
	if f := binary.BigEndian.Uint16(c3.read(10)[8:]); f&tflagSendDF != 0 {
		t.Fatalf("SEND_DF advertised on EXPORT_NAME without structured replies: flags %#x", f)
	}
}

// TestUnknownExportErrorFits: the error for an unknown export stays
// within the specification's 4096 bytes for a string, whatever the name.
func TestUnknownExportErrorFits(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.hello()
	for _, name := range []string{strings.Repeat("a", 4096), strings.Repeat("\x01", 4096), strings.Repeat("é", 2048)} {
		c.option(optGo, goData(name))
		typ, msg := c.optReply()
		if typ != repErrUnknown {
			t.Fatalf("GO to an unknown %d-byte name: reply %#x", len(name), typ)
		}
		if len(msg) > 4096 || !bytes.Contains(msg, []byte("no such export")) {
			t.Fatalf("error for an unknown %d-byte name: %d bytes %.80q...", len(name), len(msg), msg)
		}
	}
}

// TestUnknownExportNbdinfo: libnbd sees ENOENT for an unknown
// 4096-byte name, not "option error string too long".
func TestUnknownExportNbdinfo(t *testing.T) {
	if _, err := exec.LookPath("nbdinfo"); err != nil {
		t.Skip("nbdinfo not installed")
	}
	s, _ := newTestServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { l.Close() })
	name := strings.Repeat("a", 4096)
	out, err := exec.Command("nbdinfo", "nbd://"+l.Addr().String()+"/"+name).CombinedOutput()
	out = bytes.ReplaceAll(out, []byte(name), []byte("NAME"))
	if err == nil {
		t.Fatalf("nbdinfo succeeded on an unknown export:\n%s", out)
	}
	if bytes.Contains(out, []byte("too long")) || !bytes.Contains(out, []byte("No such file")) {
		t.Fatalf("nbdinfo on an unknown 4096-byte export name:\n%s", out)
	}
}

// TestTrimPastEnd: TRIM (like READ) past the end is EINVAL; only writes
// and WRITE_ZEROES get ENOSPC.
func TestTrimPastEnd(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.open("rw")
	for i, tc := range []struct {
		typ  uint16
		off  uint64
		n    uint32
		want uint32
	}{
		{cmdTrim, 1 << 20, 1, EINVAL},
		{cmdTrim, 1<<20 - 1, 2, EINVAL},
		{cmdTrim, 1<<64 - 1, 2, EINVAL},
		{cmdCache, 1 << 20, 1, EINVAL},
		{cmdBlockStatus, 1 << 20, 1, EINVAL},
		{cmdWriteZeroes, 1 << 20, 1, ENOSPC},
	} {
		c.request(tc.typ, 0, uint64(i+1), tc.off, tc.n, nil)
		if e, _ := c.reply(uint64(i + 1)); e != tc.want {
			t.Errorf("%s at %d+%d: errno %d, want %d", cmdName(tc.typ), tc.off, tc.n, e, tc.want)
		}
	}
}
