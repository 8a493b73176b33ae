package load

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Class is a failure class. Each class is counted separately.
type Class int

// Failure classes.
const (
	ConnectRefused Class = iota // connection refused (or unix socket path missing)
	ConnectTimeout              // connect did not complete within -timeout
	Reset                       // connection reset by peer / broken pipe
	EOF                         // peer closed before the full echo arrived
	Timeout                     // read or write did not complete within -timeout
	Corrupt                     // echo arrived but differs from what was sent
	Other                       // anything else
	numClasses
)

var classNames = [numClasses]string{
	ConnectRefused: "connect_refused",
	ConnectTimeout: "connect_timeout",
	Reset:          "reset",
	EOF:            "eof",
	Timeout:        "timeout",
	Corrupt:        "corrupt",
	Other:          "other",
}

var classLabels = [numClasses]string{
	ConnectRefused: "connect refused",
	ConnectTimeout: "connect timeout",
	Reset:          "reset by peer",
	EOF:            "EOF before full echo",
	Timeout:        "read/write timeout",
	Corrupt:        "corrupted payload",
	Other:          "other",
}

// String returns the stable machine-readable name of the class (as used in
// the JSON report).
func (c Class) String() string {
	if c < 0 || c >= numClasses {
		return "unknown"
	}
	return classNames[c]
}

// Label returns a human-readable name of the class.
func (c Class) Label() string {
	if c < 0 || c >= numClasses {
		return "unknown"
	}
	return classLabels[c]
}

// Phase says which step of an exchange failed.
type Phase string

// Phases of an exchange.
const (
	PhaseConnect Phase = "connect"
	PhaseWrite   Phase = "write"
	PhaseRead    Phase = "read"
	PhaseVerify  Phase = "verify"
	PhaseClose   Phase = "close"
)

// PhaseError wraps an error with the phase in which it happened.
type PhaseError struct {
	Phase Phase
	Err   error
}

func (e *PhaseError) Error() string { return string(e.Phase) + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *PhaseError) Unwrap() error { return e.Err }

func phaseErr(p Phase, err error) error {
	if err == nil {
		return nil
	}
	return &PhaseError{Phase: p, Err: err}
}

// Classify maps an error returned by a dial or an exchange to its failure
// class.
func Classify(err error) Class {
	if err == nil {
		return Other
	}
	var ce *CorruptError
	if errors.As(err, &ce) {
		return Corrupt
	}
	var pe *PhaseError
	connect := errors.As(err, &pe) && pe.Phase == PhaseConnect
	if connect {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
			return ConnectRefused
		case isTimeout(err):
			return ConnectTimeout
		}
	}
	switch {
	case isTimeout(err):
		return Timeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return Reset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return EOF
	}
	return Other
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
