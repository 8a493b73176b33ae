//go:build linux

package handoff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The hand-over protocol between two generations.
//
// Version 2 (this release). For each upgrade the parent creates a
// SOCK_SEQPACKET socketpair, the channel, and passes one end to the new
// process among the files tableflip passes at exec, under the name
// [channelKey]. Every message is one packet:
//
//	magic "EHND" | version (1 byte) | type (1 byte) | JSON body
//
// and may carry file descriptors (SCM_RIGHTS; at most [maxFDsPerMessage]).
// A receiver checks MSG_TRUNC and MSG_CTRUNC on every packet: a truncated
// packet or control message is a protocol error, never a silent loss.
// Unknown JSON fields are ignored, so a later release may add fields; an
// unknown message type or a version the receiver does not speak is an
// error.
//
// The exchange:
//
//	parent → child  offer   queued before the exec: the generation number
//	                        of the child, the parent's pid, the
//	                        listening sockets passed (their tableflip keys,
//	                        names, origins, fd store names), and what the
//	                        program carries to the next generation
//	                        (Options.Carry: counters, for example)
//	child → parent  hello   as soon as the child read the offer: its pid
//	                        and the version it speaks (the parent's; a child
//	                        that cannot speak it fails with a reason)
//	child → parent  ready   the child took its listeners and will serve;
//	                        sent just before tableflip's readiness byte,
//	                        which is the commit point
//	child → parent  failed  the child gives up, with its reason, and exits
//
// A child that adopts live connections says so in its ready message;
// before it commits, the parent hands them over (see migrate.go): conns,
// accept, done. A child that also says "staged" (a later addition to
// version 2: a release without it ignores the field and gets the plain
// hand-over) gets copies before the commit and each connection's state
// after it (staged.go): conns (staged), accept, done, then resume and
// end.
//
// The parent reads the channel once tableflip's Upgrade has returned: a
// version 2 child always queued its hello (and ready or failed) before
// the outcome tableflip reports, so what the parent reads then is
// complete. Success is tableflip's: once the readiness byte was sent the
// child serves, whatever else happened, so an upgrade tableflip completed
// is never reported as failed.
//
// Version 1 (the release before): the parent passed its state in the
// ECHOD_HANDOFF environment variable and the child wrote "ok <pid>" or
// "error <reason>" to a status file named there. A version 2 child still
// accepts a version 1 parent (see legacy.go), so a running version 1
// daemon can be upgraded in place; a version 2 parent never sets the
// variable, and a version 1 child (a rollback) cannot find the sockets
// that systemd passed or the state it needs: the upgrade fails, the
// parent keeps serving and says why.
const (
	protoVersion = 2
	protoMagic   = "EHND"
	headerLen    = len(protoMagic) + 2
	// maxMessage bounds a packet's size (header and body).
	maxMessage = 64 << 10
	// maxFDsPerMessage is the kernel's SCM_MAX_FD.
	maxFDsPerMessage = 253
	// channelKey names the child's end of the channel among the files
	// tableflip passes.
	channelKey = "echod-handoff-channel"
)

// msgType is the type byte of a message.
type msgType byte

const (
	msgOffer  msgType = 1
	msgHello  msgType = 2
	msgReady  msgType = 3
	msgFailed msgType = 4
)

func (t msgType) String() string {
	switch t {
	case msgOffer:
		return "offer"
	case msgHello:
		return "hello"
	case msgReady:
		return "ready"
	case msgFailed:
		return "failed"
	case msgConns:
		return "conns"
	case msgAccept:
		return "accept"
	case msgDone:
		return "done"
	case msgResume:
		return "resume"
	case msgEnd:
		return "end"
	}
	return fmt.Sprintf("type %d", byte(t))
}

// ErrProtocol is wrapped by every error about a malformed or unexpected
// message on the channel.
var ErrProtocol = errors.New("handoff: protocol error")

// offer is what the parent tells the child before it runs.
type offer struct {
	Generation int `json:"generation"` // the child's number
	ParentPID  int `json:"parent_pid"`
	// Systemd names the socket-activated listeners passed, in order: the
	// i-th is the file tableflip passes as systemdKey(i).
	Systemd []string `json:"systemd,omitempty"`
	// Stored names the listeners kept in systemd's fd store, each passed
	// as "store:<name>".
	Stored []string `json:"stored,omitempty"`
	// Carry is what the parent's Options.Carry returned for this upgrade
	// (base64 in the JSON), read by the child with Generation.Carried: a
	// later addition to version 2, which a release without it ignores.
	Carry []byte `json:"carry,omitempty"`
}

// hello is the child's first message.
type hello struct {
	PID        int `json:"pid"`
	Generation int `json:"generation"`
}

// ready says the child takes over; Stored lists the fd store names it
// keeps (the parent's others are removed by the child after the commit);
// Adopts says it takes live connections (migrate.go) after the commit.
type ready struct {
	Stored []string `json:"stored,omitempty"`
	Adopts bool     `json:"adopts,omitempty"`
	// Staged says it takes the staged hand-over (staged.go); a release
	// without it gets the plain one.
	Staged bool `json:"staged,omitempty"`
}

// failed carries the child's reason.
type failed struct {
	Reason string `json:"reason"`
}

// message is one decoded packet.
type message struct {
	Version byte
	Type    msgType
	Body    json.RawMessage
}

// encodeMessage frames body as a message of type t.
func encodeMessage(t msgType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("handoff: encode %s: %w", t, err)
	}
	out := make([]byte, 0, headerLen+len(b))
	out = append(out, protoMagic...)
	out = append(out, protoVersion, byte(t))
	out = append(out, b...)
	if len(out) > maxMessage {
		return nil, fmt.Errorf("handoff: %s message of %d bytes exceeds %d", t, len(out), maxMessage)
	}
	return out, nil
}

// decodeMessage parses one packet. It checks the frame only; the body is
// decoded by the receiver for the type it expects.
func decodeMessage(b []byte) (message, error) {
	if len(b) < headerLen || !bytes.Equal(b[:len(protoMagic)], []byte(protoMagic)) {
		return message{}, fmt.Errorf("%w: not a hand-over message (%d bytes)", ErrProtocol, len(b))
	}
	m := message{Version: b[len(protoMagic)], Type: msgType(b[len(protoMagic)+1]), Body: b[headerLen:]}
	if m.Version != protoVersion {
		return message{}, fmt.Errorf("%w: protocol version %d, this release speaks %d", ErrProtocol, m.Version, protoVersion)
	}
	switch m.Type {
	case msgOffer, msgHello, msgReady, msgFailed, msgConns, msgAccept, msgDone, msgResume, msgEnd:
	default:
		return message{}, fmt.Errorf("%w: unknown message %s", ErrProtocol, m.Type)
	}
	if !json.Valid(m.Body) {
		return message{}, fmt.Errorf("%w: %s: body is not JSON", ErrProtocol, m.Type)
	}
	return m, nil
}

// decodeBody decodes m's body into v.
func decodeBody(m message, v any) error {
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrProtocol, m.Type, err)
	}
	return nil
}

// channel is one end of the hand-over socketpair.
type channel struct {
	c *net.UnixConn
	// interrupted makes a waiting recv return errInterrupted (see
	// interrupt); recv sets its own deadline, so a deadline alone could be
	// undone by a recv that starts just after it was set.
	interrupted atomic.Bool
}

// errInterrupted: interrupt was called.
var errInterrupted = errors.New("handoff: receive interrupted")

// interrupt makes a recv in progress, or starting now, return
// errInterrupted, until resume.
func (ch *channel) interrupt() {
	ch.interrupted.Store(true)
	_ = ch.c.SetReadDeadline(time.Now())
}

// resume undoes interrupt.
func (ch *channel) resume() {
	ch.interrupted.Store(false)
	_ = ch.c.SetReadDeadline(time.Time{})
}

// newChannelPair returns the parent's end and, as a file for tableflip to
// pass, the child's end. Both are close-on-exec; tableflip passes its own
// duplicate.
func newChannelPair() (*channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: channel: socketpair: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "handoff-channel")
	ch, err := channelFromFile(os.NewFile(uintptr(fds[0]), "handoff-channel"))
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return ch, child, nil
}

// channelFromFile wraps f (which it closes) as a channel.
func channelFromFile(f *os.File) (*channel, error) {
	defer f.Close()
	typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("handoff: channel: %w", err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("%w: channel is socket type %d, want SOCK_SEQPACKET", ErrProtocol, typ)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%w: channel is a %T", ErrProtocol, c)
	}
	return &channel{c: uc}, nil
}

// send writes one message, with fds attached if any.
func (ch *channel) send(t msgType, body any, fds ...int) error {
	if len(fds) > maxFDsPerMessage {
		return fmt.Errorf("handoff: %s: %d fds exceed %d per message", t, len(fds), maxFDsPerMessage)
	}
	b, err := encodeMessage(t, body)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := ch.c.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return fmt.Errorf("handoff: send %s: %w", t, err)
	}
	if _, _, err := ch.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("handoff: send %s: %w", t, err)
	}
	return nil
}

// errNoMessage: nothing queued (a non-blocking receive).
var errNoMessage = errors.New("handoff: no message")

// recv reads one message. With wait false it returns errNoMessage at
// once when nothing is queued; with wait true it waits until deadline
// (zero: no deadline). errEOF means the other end closed. Received fds
// are returned as they are, close-on-exec, the caller's to close (no
// *os.File, whose registration with the runtime poller would cost two
// system calls each for nothing); ctrunc reports MSG_CTRUNC: the kernel
// could not pass them all (the receiver's fd limit) and the fds are the
// first of those sent. A caller that expects no fds treats it as the
// error it is.
func (ch *channel) recv(wait bool, deadline time.Time) (m message, fds []int, ctrunc bool, err error) {
	if err := ch.c.SetReadDeadline(deadline); err != nil {
		return message{}, nil, false, fmt.Errorf("handoff: receive: %w", err)
	}
	if wait && ch.interrupted.Load() {
		return message{}, nil, false, errInterrupted
	}
	rc, err := ch.c.SyscallConn()
	if err != nil {
		return message{}, nil, false, fmt.Errorf("handoff: receive: %w", err)
	}
	buf := make([]byte, maxMessage+1)
	oob := make([]byte, unix.CmsgSpace(maxFDsPerMessage*4))
	var n, oobn, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		if rerr == unix.EAGAIN || rerr == unix.EINTR {
			if !wait {
				rerr = errNoMessage
				return true
			}
			return false // wait for readability
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errNoMessage):
			return message{}, nil, false, errNoMessage
		case errors.As(err, &ne) && ne.Timeout():
			if ch.interrupted.Load() {
				return message{}, nil, false, errInterrupted
			}
			return message{}, nil, false, fmt.Errorf("handoff: receive: %w", err)
		case errors.Is(err, io.EOF), errors.Is(err, unix.ECONNRESET):
			return message{}, nil, false, errEOF
		}
		return message{}, nil, false, fmt.Errorf("handoff: receive: %w", err)
	}
	fds, ferr := parseRights(oob[:oobn])
	if n == 0 && oobn == 0 {
		return message{}, nil, false, errEOF
	}
	if flags&unix.MSG_TRUNC != 0 || ferr != nil {
		closeFDs(fds)
		return message{}, nil, false, fmt.Errorf("%w: truncated message (flags %#x) %v", ErrProtocol, flags, ferr)
	}
	m, err = decodeMessage(buf[:n])
	if err != nil {
		closeFDs(fds)
		return message{}, nil, false, err
	}
	return m, fds, flags&unix.MSG_CTRUNC != 0, nil
}

// errEOF: the other end closed the channel.
var errEOF = errors.New("handoff: channel closed by the other generation")

// parseRights returns the fds received in oob's SCM_RIGHTS messages.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	var errs []error
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, errors.Join(errs...)
}

// closeFDs closes received fds nobody took.
func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func (ch *channel) Close() error { return ch.c.Close() }
