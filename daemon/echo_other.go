//go:build !linux

package daemon

import (
	"net"
	"time"
)

// echo copies what c sends back to c through a pooled buffer; the
// buffer-free raw-fd path is Linux-only (echo_linux.go).
func (e *Echo) echo(c net.Conn, idle, wt time.Duration) error {
	return e.echoBuffered(c, idle, wt)
}
