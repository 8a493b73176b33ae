package load

import (
	"bytes"
	"strings"
	"testing"
)

func msg(connID, seq uint64, size int) []byte {
	b := make([]byte, size)
	EncodeMessage(b, connID, seq)
	return b
}

func TestEncodeDecode(t *testing.T) {
	m := msg(0xabc, 7, 100)
	h, ok := DecodeHeader(m)
	if !ok || h.Magic != Magic || h.ConnID != 0xabc || h.Seq != 7 || h.Len != 100 || h.CRC != checksum(m) {
		t.Fatalf("header = %+v, ok=%v", h, ok)
	}
	if !bytes.Equal(m, msg(0xabc, 7, 100)) {
		t.Fatal("encoding is not deterministic")
	}
	if bytes.Equal(m[HeaderSize:], msg(0xabc, 8, 100)[HeaderSize:]) {
		t.Fatal("payloads of different sequence numbers are identical")
	}
	if bytes.Equal(m[HeaderSize:], msg(0xabd, 7, 100)[HeaderSize:]) {
		t.Fatal("payloads of different connections are identical")
	}
}

func TestVerifyEcho(t *testing.T) {
	const size = 96
	want := msg(1, 5, size)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, want...)) }
	tests := []struct {
		name   string
		got    []byte
		reason string // substring of the diagnosis; "" = no error
		offset int
	}{
		{"identical", mutate(func(b []byte) []byte { return b }), "", 0},
		{"payload byte flipped", mutate(func(b []byte) []byte { b[50] ^= 0x80; return b }), "checksum mismatch", 50},
		{"payload byte flipped, checksum forged", mutate(func(b []byte) []byte {
			b[50] ^= 0x80
			c := checksum(b) // a consistent but different checksum
			b[24], b[25], b[26], b[27] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
			return b
		}), "header bytes differ", 24},
		{"truncated", want[:size-10], "length 86, sent 96", 86},
		{"extra bytes", append(append([]byte{}, want...), 0), "length 97", 96},
		{"foreign bytes", bytes.Repeat([]byte{'x'}, size), "foreign or misaligned", 0},
		{"other connection", msg(2, 5, size), "foreign message", 15},
		{"reordered", msg(1, 4, size), "reordered or duplicated", 23},
		{"zero payload", mutate(func(b []byte) []byte { clear(b[HeaderSize:]); return b }), "checksum mismatch", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyEcho(want, tt.got)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("VerifyEcho = %v, want nil", err)
				}
				return
			}
			ce, ok := err.(*CorruptError)
			if !ok {
				t.Fatalf("VerifyEcho = %v (%T), want *CorruptError", err, err)
			}
			if !strings.Contains(ce.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", ce.Reason, tt.reason)
			}
			if tt.offset >= 0 && ce.Offset != tt.offset {
				t.Errorf("offset = %d, want %d", ce.Offset, tt.offset)
			}
			if Classify(phaseErr(PhaseVerify, err)) != Corrupt {
				t.Errorf("Classify = %v, want corrupt", Classify(err))
			}
		})
	}
}
