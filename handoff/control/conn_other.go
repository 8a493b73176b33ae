//go:build !linux

package control

import (
	"errors"
	"net"
)

// errNoPeerCred: without SO_PEERCRED the server cannot tell who connected,
// so it serves nobody.
var errNoPeerCred = errors.New("control: peer credentials are only checked on Linux")

func peerCred(net.Conn) (uid, pid int, err error) { return 0, 0, errNoPeerCred }

// watchConn: see conn_linux.go. Here end of file counts as a hang-up.
func watchConn(c net.Conn, budget int, hook func(discarded int, eof bool)) (hungUp bool) {
	return watchBuffered(c, budget, hook)
}
