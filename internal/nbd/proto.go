package nbd

import (
	"encoding/binary"
	"fmt"
)

// Protocol constants, from the NBD protocol specification
// (NetworkBlockDevice/nbd doc/proto.md).
const (
	magicNBD      = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt      = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply = 0x3e889045565a9
	magicRequest  = 0x25609513
	magicSimple   = 0x67446698
	magicStruct   = 0x668e33ef

	// Handshake flags (server) and client flags.
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	// Transmission flags.
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
	tflagSendCache       = 1 << 10
	tflagSendFastZero    = 1 << 11

	// Options.
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10

	// Option replies.
	repAck            = 1
	repServer         = 2
	repInfo           = 3
	repMetaContext    = 4
	repErr            = 1 << 31
	repErrUnsup       = repErr + 1
	repErrPolicy      = repErr + 2
	repErrInvalid     = repErr + 3
	repErrTLSReqd     = repErr + 5
	repErrUnknown     = repErr + 6
	repErrShutdown    = repErr + 7
	repErrBlockSzReqd = repErr + 8
	repErrTooBig      = repErr + 9

	// NBD_INFO types.
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	// Commands.
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	// Command flags.
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4

	// Structured reply chunk types and flags.
	replyFlagDone        = 1 << 0
	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeBlockStatus = 5
	replyTypeError       = 1<<15 + 1

	// base:allocation status flags.
	stateHole = 1 << 0
	stateZero = 1 << 1

	// metaBaseAllocation is the one metadata context served, and its id.
	metaBaseAllocation   = "base:allocation"
	metaBaseAllocationID = 1
)

// Errno values a reply may carry (the protocol's own numbering).
const (
	EPERM     = 1
	EIO       = 5
	ENOMEM    = 12
	EINVAL    = 22
	ENOSPC    = 28
	EOVERFLOW = 75
	ENOTSUP   = 95
	ESHUTDOWN = 108
)

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

const requestSize = 28

// errBadMagic is a protocol violation that ends the connection.
type protocolError string

func (e protocolError) Error() string { return "nbd: protocol violation: " + string(e) }

// parseRequest decodes a request header.
func parseRequest(b *[requestSize]byte) (request, error) {
	if m := binary.BigEndian.Uint32(b[0:]); m != magicRequest {
		return request{}, protocolError(fmt.Sprintf("request magic %#x", m))
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// allowedFlags lists the command flags each command accepts.
var allowedFlags = map[uint16]uint16{
	cmdRead:        cmdFlagDF,
	cmdWrite:       cmdFlagFUA,
	cmdDisc:        0,
	cmdFlush:       0,
	cmdTrim:        cmdFlagFUA,
	cmdCache:       0,
	cmdWriteZeroes: cmdFlagFUA | cmdFlagNoHole | cmdFlagFastZero,
	cmdBlockStatus: cmdFlagReqOne,
}

func cmdName(t uint16) string {
	switch t {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return fmt.Sprintf("command(%d)", t)
}
