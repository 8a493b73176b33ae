//go:build !linux

package daemon

import (
	"errors"
	"net"
	"os"
)

// canDup tells whether dupConn works here: Detach is Linux-only.
const canDup = false

func dupConn(net.Conn) (*os.File, error) { return nil, errors.ErrUnsupported }
