package load

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Wire format of one message (all integers big-endian):
//
//	offset size field
//	0      4    magic "ECLD"
//	4      4    total message length in bytes, header included
//	8      8    connection id (run id in the high 32 bits)
//	16     8    sequence number within the connection (from 1)
//	24     4    CRC-32C of bytes [0,24) and of the payload
//	28     4    reserved, zero
//	32     n    payload, pseudo-random bytes derived from (conn id, seq)
//
// The client knows exactly what it sent, so the echo is compared byte for
// byte against the sent message; the header and checksum are used to name
// what went wrong (foreign data, reordering/duplication, truncation, payload
// corruption).
const (
	// HeaderSize is the size of the message header in bytes.
	HeaderSize = 32
	// Magic marks the start of every message.
	Magic uint32 = 0x45434c44 // "ECLD"
	// MaxMessageSize bounds -size.
	MaxMessageSize = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the decoded message header.
type Header struct {
	Magic  uint32
	Len    uint32
	ConnID uint64
	Seq    uint64
	CRC    uint32
}

// EncodeMessage fills buf (whose length is the message size, at least
// HeaderSize) with message seq of connection connID.
func EncodeMessage(buf []byte, connID, seq uint64) {
	if len(buf) < HeaderSize {
		panic(fmt.Sprintf("load: message buffer of %d bytes is shorter than the %d-byte header", len(buf), HeaderSize))
	}
	binary.BigEndian.PutUint32(buf[0:4], Magic)
	binary.BigEndian.PutUint32(buf[4:8], uint32(len(buf)))
	binary.BigEndian.PutUint64(buf[8:16], connID)
	binary.BigEndian.PutUint64(buf[16:24], seq)
	fillPayload(buf[HeaderSize:], connID, seq)
	binary.BigEndian.PutUint32(buf[24:28], checksum(buf))
	binary.BigEndian.PutUint32(buf[28:32], 0)
}

// DecodeHeader decodes the header at the start of b. It reports false when b
// is shorter than a header.
func DecodeHeader(b []byte) (Header, bool) {
	if len(b) < HeaderSize {
		return Header{}, false
	}
	return Header{
		Magic:  binary.BigEndian.Uint32(b[0:4]),
		Len:    binary.BigEndian.Uint32(b[4:8]),
		ConnID: binary.BigEndian.Uint64(b[8:16]),
		Seq:    binary.BigEndian.Uint64(b[16:24]),
		CRC:    binary.BigEndian.Uint32(b[24:28]),
	}, true
}

// checksum is the CRC-32C of the first 24 header bytes and the payload.
func checksum(msg []byte) uint32 {
	c := crc32.Update(0, castagnoli, msg[:24])
	return crc32.Update(c, castagnoli, msg[HeaderSize:])
}

// fillPayload writes a deterministic pseudo-random byte sequence
// (splitmix64) seeded by the connection id and sequence number, so that
// payloads of different messages differ.
func fillPayload(p []byte, connID, seq uint64) {
	x := connID*0x9e3779b97f4a7c15 ^ seq*0xbf58476d1ce4e5b9 ^ 0x94d049bb133111eb
	next := func() uint64 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		return z ^ (z >> 31)
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, next())
		p = p[8:]
	}
	if len(p) > 0 {
		var tail [8]byte
		binary.LittleEndian.PutUint64(tail[:], next())
		copy(p, tail[:])
	}
}

// CorruptError reports an echo that does not match what was sent.
type CorruptError struct {
	Reason string // short description of what differs
	Offset int    // first differing byte offset within the message
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupted echo at byte %d: %s", e.Offset, e.Reason)
}

// VerifyEcho compares the echo got against the message want that was sent.
// It returns nil when they are identical and a *CorruptError describing the
// difference otherwise.
func VerifyEcho(want, got []byte) error {
	if bytes.Equal(want, got) {
		return nil
	}
	off := firstDiff(want, got)
	if off < 0 {
		return nil
	}
	return &CorruptError{Reason: diagnose(want, got, off), Offset: off}
}

// firstDiff returns the index of the first differing byte, or -1.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}

// diagnose names the difference between the sent and the echoed message.
func diagnose(want, got []byte, off int) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, sent %d", len(got), len(want))
	}
	wh, _ := DecodeHeader(want)
	gh, ok := DecodeHeader(got)
	switch {
	case !ok:
		return "short message"
	case gh.Magic != Magic:
		return fmt.Sprintf("foreign or misaligned data (magic %#08x)", gh.Magic)
	case gh.ConnID != wh.ConnID:
		return fmt.Sprintf("foreign message: connection id %#x, sent on %#x", gh.ConnID, wh.ConnID)
	case gh.Seq != wh.Seq:
		return fmt.Sprintf("reordered or duplicated message: sequence %d, expected %d", gh.Seq, wh.Seq)
	case gh.Len != wh.Len:
		return fmt.Sprintf("header length field %d, sent %d", gh.Len, wh.Len)
	case off < HeaderSize:
		return "header bytes differ"
	case checksum(got) != gh.CRC:
		return fmt.Sprintf("payload checksum mismatch (crc32c %#08x, header says %#08x)", checksum(got), gh.CRC)
	default:
		return "payload differs"
	}
}
