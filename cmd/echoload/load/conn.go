package load

import (
	"fmt"
	"io"
	"net"
	"time"
)

// largeMessage is the size above which the write of a message runs
// concurrently with the read of its echo, so that neither side's socket
// buffers can fill up and deadlock the exchange.
const largeMessage = 64 << 10

// dial connects to t within timeout. Errors are wrapped in a PhaseError with
// PhaseConnect.
func dial(t Target, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial(t.Network, t.Address)
	if err != nil {
		return nil, phaseErr(PhaseConnect, err)
	}
	return c, nil
}

// echoConn is one client connection that exchanges verified messages.
type echoConn struct {
	c       net.Conn
	id      uint64
	seq     uint64
	timeout time.Duration
	msg     []byte // message being sent
	buf     []byte // echo being received
}

func newEchoConn(c net.Conn, id uint64, size int, timeout time.Duration) *echoConn {
	return &echoConn{c: c, id: id, timeout: timeout, msg: make([]byte, size), buf: make([]byte, size)}
}

// roundTrip sends the next message and reads and verifies its echo. Each of
// the write and the read is bounded by the timeout.
func (e *echoConn) roundTrip() error {
	e.seq++
	EncodeMessage(e.msg, e.id, e.seq)
	if len(e.msg) <= largeMessage {
		if err := e.write(); err != nil {
			return err
		}
		if err := e.read(); err != nil {
			return err
		}
	} else {
		werr := make(chan error, 1)
		go func() { werr <- e.write() }()
		rerr := e.read()
		if rerr != nil {
			// Unblock the writer promptly; its error is secondary.
			_ = e.c.SetWriteDeadline(time.Now())
			<-werr
			return rerr
		}
		if err := <-werr; err != nil {
			return err
		}
	}
	return phaseErr(PhaseVerify, VerifyEcho(e.msg, e.buf))
}

func (e *echoConn) write() error {
	if err := e.c.SetWriteDeadline(time.Now().Add(e.timeout)); err != nil {
		return phaseErr(PhaseWrite, err)
	}
	_, err := e.c.Write(e.msg)
	return phaseErr(PhaseWrite, err)
}

func (e *echoConn) read() error {
	if err := e.c.SetReadDeadline(time.Now().Add(e.timeout)); err != nil {
		return phaseErr(PhaseRead, err)
	}
	n, err := io.ReadFull(e.c, e.buf)
	if err != nil {
		return phaseErr(PhaseRead, fmt.Errorf("after %d of %d bytes: %w", n, len(e.buf), err))
	}
	return nil
}

func (e *echoConn) Close() error { return e.c.Close() }
