package daemon

import "sync"

// gate bounds the connections served at once across all accept loops.
//
// An accept loop waits at the gate until a slot is free, without taking
// it, then accepts, then takes a slot. No loop holds a slot while it waits
// in Accept, so an idle listener cannot starve the others. Loops that
// passed the gate together may accept more connections than there are free
// slots; each such loop keeps its connection unserved in take until a slot
// frees, so at most limit connections are served at once and at most one
// more per listener is held accepted.
//
// A nil *gate is no limit: every method returns at once.
type gate struct {
	limit int

	mu    sync.Mutex
	used  int
	freed chan struct{} // closed by the next release; nil while nobody waits
}

// newGate returns a gate of limit slots, or nil for limit <= 0.
func newGate(limit int) *gate {
	if limit <= 0 {
		return nil
	}
	return &gate{limit: limit}
}

// wait blocks until a slot is free or done is closed, and reports whether
// a slot was free. It takes nothing.
func (g *gate) wait(done <-chan struct{}) bool { return g.await(done, false) }

// take blocks until it takes a slot or done is closed, and reports whether
// it took one. A slot taken must be given back with release.
func (g *gate) take(done <-chan struct{}) bool { return g.await(done, true) }

// tryTake takes a slot if one is free, without waiting, and reports
// whether it took one.
func (g *gate) tryTake() bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.used < g.limit {
		g.used++
		return true
	}
	return false
}

// free returns how many slots are free now (-1: no limit).
func (g *gate) free() int {
	if g == nil {
		return -1
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit - g.used
}

func (g *gate) await(done <-chan struct{}, take bool) bool {
	if g == nil {
		return true
	}
	for {
		g.mu.Lock()
		if g.used < g.limit {
			if take {
				g.used++
			}
			g.mu.Unlock()
			return true
		}
		if g.freed == nil {
			g.freed = make(chan struct{})
		}
		freed := g.freed
		g.mu.Unlock()
		select {
		case <-freed:
		case <-done:
			return false
		}
	}
}

// release gives back a slot taken with take and wakes every waiter; those
// that find the slot gone again wait for the next release.
func (g *gate) release() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.used <= 0 {
		panic("daemon: gate released more than taken")
	}
	g.used--
	if g.freed != nil {
		close(g.freed)
		g.freed = nil
	}
}
