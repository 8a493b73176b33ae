package daemon

import (
	"testing"
	"time"
)

// gateTimeout bounds every wait on a gate that should return.
const gateTimeout = 10 * time.Second

// returns runs f in a goroutine and delivers its result on the channel.
func returns(f func() bool) <-chan bool {
	ch := make(chan bool, 1)
	go func() { ch <- f() }()
	return ch
}

func recvGate(t *testing.T, ch <-chan bool, what string) bool {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(gateTimeout):
		t.Fatalf("timed out waiting for %s", what)
		return false
	}
}

// blocked fails if ch already holds a result. It cannot prove that a
// goroutine blocks; the results the test receives later do.
func blocked(t *testing.T, ch <-chan bool, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s returned %v, want it to wait", what, v)
	default:
	}
}

func TestGate(t *testing.T) {
	var none *gate
	if newGate(0) != nil || !none.wait(nil) || !none.take(nil) {
		t.Fatal("a nil gate must not limit")
	}
	none.release()

	g := newGate(2)
	never := make(chan struct{})
	for i := range 3 {
		if !g.wait(never) {
			t.Fatalf("wait %d on a free gate = false", i)
		}
	}
	for i := range 2 {
		if !g.take(never) {
			t.Fatalf("take %d on a free gate = false", i)
		}
	}

	// Full: wait and take block until a release or done.
	waiting := returns(func() bool { return g.wait(never) })
	taking := returns(func() bool { return g.take(never) })
	stop := make(chan struct{})
	stopped := returns(func() bool { return g.take(stop) })
	blocked(t, waiting, "wait on a full gate")
	blocked(t, taking, "take on a full gate")
	blocked(t, stopped, "take on a full gate")
	close(stop)
	if recvGate(t, stopped, "take to see done") {
		t.Fatal("take returned true after done, with the gate full")
	}

	g.release()
	if !recvGate(t, taking, "take after a release") {
		t.Fatal("take after a release = false")
	}
	// wait took nothing, so it returns on the release whatever take did,
	// or at the next release if take got the slot first.
	select {
	case ok := <-waiting:
		if !ok {
			t.Fatal("wait after a release = false")
		}
	default:
		g.release()
		if !recvGate(t, waiting, "wait after a second release") {
			t.Fatal("wait after a release = false")
		}
		if !g.take(never) {
			t.Fatal("take of the slot wait left free = false")
		}
	}

	g.release()
	g.release()
	defer func() {
		if recover() == nil {
			t.Error("release of more than was taken did not panic")
		}
	}()
	g.release()
}
