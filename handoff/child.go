//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/cloudflare/tableflip"
)

// parentLink is the new generation's end of the hand-over with the
// generation that exec'd it: the channel (protocol version 2) or, from a
// release before it, the environment variable and status file of version
// 1 (legacy.go).
type parentLink struct {
	version int
	ch      *channel // version 2
	status  string   // version 1: the status file the parent reads
	offer   offer
}

// openParentLink reads what the previous generation passed, and greets it.
// It returns nil, nil in a first generation. The legacy variable is
// removed from the environment in every case, so no process this one
// starts inherits it.
func openParentLink(upg *tableflip.Upgrader) (*parentLink, error) {
	legacy, hasLegacy := takeLegacyEnv()
	if !upg.HasParent() {
		return nil, nil // a stale variable, not from a live parent
	}
	f, err := upg.File(channelKey)
	if err != nil {
		return nil, fmt.Errorf("handoff: channel from the previous generation: %w", err)
	}
	if f == nil {
		if hasLegacy {
			return openLegacyLink(legacy)
		}
		// Exec'd by tableflip, but not by an echod generation: a program
		// of its own using tableflip. Serve as a first generation would,
		// with what tableflip passed.
		return nil, nil
	}
	ch, err := channelFromFile(f)
	if err != nil {
		return nil, err
	}
	// The offer was queued before the exec: it is there, or the parent
	// did not send one.
	m, fds, ctrunc, err := ch.recv(false, time.Time{})
	closeFDs(fds)
	if err == nil && (ctrunc || len(fds) > 0) {
		err = fmt.Errorf("%w: file descriptors with the offer", ErrProtocol)
	}
	if errors.Is(err, errNoMessage) {
		err = fmt.Errorf("%w: no offer from the previous generation", ErrProtocol)
	}
	if err == nil && m.Type != msgOffer {
		err = fmt.Errorf("%w: expected an offer, got %s", ErrProtocol, m.Type)
	}
	var o offer
	if err == nil {
		err = decodeBody(m, &o)
	}
	if err == nil && o.Generation < 2 {
		err = fmt.Errorf("%w: offer for generation %d", ErrProtocol, o.Generation)
	}
	l := &parentLink{version: protoVersion, ch: ch, offer: o}
	if err != nil {
		l.fail(err.Error())
		ch.Close()
		return nil, err
	}
	if err := ch.send(msgHello, hello{PID: os.Getpid(), Generation: o.Generation}); err != nil {
		ch.Close()
		return nil, err
	}
	return l, nil
}

// ready tells the parent this generation takes over. It comes before
// tableflip's readiness byte: if it fails, the generation must not
// commit.
func (l *parentLink) ready(stored []string, adopts bool) error {
	if l.version == 1 {
		return writeStatusFile(l.status, "ok "+strconv.Itoa(os.Getpid()))
	}
	return l.ch.send(msgReady, ready{Stored: stored, Adopts: adopts, Staged: adopts})
}

// fail tells the parent why this generation will not become ready. Best
// effort: the parent learns of the exit from tableflip anyway.
func (l *parentLink) fail(reason string) {
	if l.version == 1 {
		_ = writeStatusFile(l.status, "error "+oneLine(reason))
		return
	}
	_ = l.ch.send(msgFailed, failed{Reason: oneLine(reason)})
}

// close closes the channel; it may be called more than once.
func (l *parentLink) close() {
	if l.ch != nil {
		l.ch.Close()
	}
}
