//go:build !linux

package daemon

import (
	"context"
	"net"
	"time"
)

// echo copies what c sends back to c through a pooled buffer; the
// buffer-free raw-fd path is Linux-only (echo_linux.go).
func (e *Echo) echo(ctx context.Context, c net.Conn, idle, wt time.Duration) error {
	return e.echoBuffered(ctx, c, idle, wt)
}
