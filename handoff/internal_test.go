package handoff

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSetLoggerAndRemoveLaterAreSynchronised: SetLogger and the fd store
// bookkeeping may run while the upgrade goroutine logs (go test -race
// catches an unsynchronised write).
func TestSetLoggerAndRemoveLaterAreSynchronised(t *testing.T) {
	g := &Generation{log: slog.New(slog.DiscardHandler)}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 200 {
				if i%2 == 0 {
					g.SetLogger(slog.New(slog.DiscardHandler))
					g.removeLater("x")
				} else {
					g.logger().Info("event")
				}
			}
		})
	}
	wg.Wait()
	if len(g.toRemove) != 400 {
		t.Fatalf("%d names recorded, want 400", len(g.toRemove))
	}
}

func TestMessageRoundTrip(t *testing.T) {
	b, err := encodeMessage(msgOffer, offer{Generation: 3, ParentPID: 7, Systemd: []string{"tcp"}, Stored: []string{"echod-listen-x"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	var o offer
	if err := decodeBody(m, &o); err != nil {
		t.Fatal(err)
	}
	if o.Generation != 3 || o.ParentPID != 7 || o.Systemd[0] != "tcp" || o.Stored[0] != "echod-listen-x" || m.Type != msgOffer {
		t.Fatalf("round trip: %+v %+v", m, o)
	}
}

func TestMessageRejected(t *testing.T) {
	good, _ := encodeMessage(msgHello, hello{PID: 1, Generation: 2})
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short":        []byte("EHN"),
		"magic":        append([]byte("XXXX"), good[4:]...),
		"version":      append(append([]byte("EHND"), 1), good[5:]...),
		"future":       append(append([]byte("EHND"), 3), good[5:]...),
		"type":         append(append([]byte("EHND"), protoVersion, 99), good[6:]...),
		"body":         append(append([]byte(nil), good[:6]...), "{nope"...),
		"body missing": good[:6],
	} {
		if _, err := decodeMessage(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: decodeMessage(%q) = %v, want ErrProtocol", name, b, err)
		}
	}
}

// TestChannelTruncation: a packet larger than a message may be is an
// error (MSG_TRUNC), never a silently shortened message; fds travel with
// a message and arrive close-on-exec.
func TestChannelTruncation(t *testing.T) {
	a, bFile, err := newChannelPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := channelFromFile(bFile)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	huge := append([]byte(protoMagic), protoVersion, byte(msgFailed))
	huge = append(huge, bytes.Repeat([]byte(" "), maxMessage+10)...)
	if _, _, err := a.c.WriteMsgUnix(huge, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := b.recv(true, time.Now().Add(10*time.Second)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized packet: %v, want ErrProtocol", err)
	}
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.send(msgFailed, failed{Reason: "why"}, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	m, files, _, err := b.recv(true, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer closeFiles(files)
	var fl failed
	if err := decodeBody(m, &fl); err != nil || fl.Reason != "why" || len(files) != 1 {
		t.Fatalf("got %+v %v with %d files", fl, err, len(files))
	}
	flags, err := unix.FcntlInt(files[0].Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received fd flags %#x (%v), want close-on-exec", flags, err)
	}
	if _, _, _, err := b.recv(false, time.Time{}); !errors.Is(err, errNoMessage) {
		t.Fatalf("empty queue: %v, want errNoMessage", err)
	}
	a.Close()
	if _, _, _, err := b.recv(true, time.Now().Add(10*time.Second)); !errors.Is(err, errEOF) {
		t.Fatalf("after the peer closed: %v, want errEOF", err)
	}
}

// FuzzDecodeMessage: whatever a packet holds, decoding never panics, and
// what decodes re-encodes to the same frame.
func FuzzDecodeMessage(f *testing.F) {
	for _, t := range []msgType{msgOffer, msgHello, msgReady, msgFailed} {
		b, _ := encodeMessage(t, map[string]any{"generation": 2, "pid": 9, "reason": "x", "stored": []string{"a"}})
		f.Add(b)
	}
	f.Add([]byte("EHND\x02\x01null"))
	f.Add([]byte("EHND\x02\x07{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if !json.Valid(m.Body) || m.Version != protoVersion {
			t.Fatalf("accepted %q", b)
		}
		for _, v := range []any{&offer{}, &hello{}, &ready{}, &failed{}} {
			_ = decodeBody(m, v)
		}
	})
}
