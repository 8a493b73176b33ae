package load

import (
	"math/rand/v2"
	"sync/atomic"
)

// idSource hands out connection ids that are unique within a run and,
// through a random run id in the high 32 bits, unlikely to collide with
// another echoload instance talking to the same server.
type idSource struct {
	run  uint64
	next atomic.Uint64
}

func newIDSource() *idSource { return &idSource{run: uint64(rand.Uint32()) << 32} }

func (s *idSource) id() uint64 { return s.run | (s.next.Add(1) & 0xffffffff) }
