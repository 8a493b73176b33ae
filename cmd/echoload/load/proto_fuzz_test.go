package load

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzVerifyEcho: whatever the server sends back, verification never
// panics, accepts exactly the identical bytes, and names the first
// differing byte otherwise.
func FuzzVerifyEcho(f *testing.F) {
	msg := make([]byte, 64)
	EncodeMessage(msg, 7, 3)
	f.Add(msg, 64, byte(0))
	f.Add(msg, 10, byte(1))
	f.Add(msg, 40, byte(0x80))
	f.Add([]byte("not a message at all"), 0, byte(0))
	f.Fuzz(func(t *testing.T, got []byte, flipAt int, flip byte) {
		want := make([]byte, 64)
		EncodeMessage(want, 7, 3)
		if flipAt >= 0 && flipAt < len(got) {
			got = bytes.Clone(got)
			got[flipAt] ^= flip
		}
		err := VerifyEcho(want, got)
		if bytes.Equal(want, got) != (err == nil) {
			t.Fatalf("VerifyEcho = %v for identical=%v", err, bytes.Equal(want, got))
		}
		var ce *CorruptError
		if err != nil && (!errors.As(err, &ce) || ce.Offset < 0 || ce.Offset > max(len(want), len(got))) {
			t.Fatalf("VerifyEcho error %v: want a *CorruptError with a sane offset", err)
		}
		DecodeHeader(got) // must not panic
	})
}
