package control

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// maxRequest is the longest request line, newline excluded.
	maxRequest = 4 << 10
	// maxReply is the longest answer line a client accepts, newline
	// excluded; the server cuts longer texts.
	maxReply = 64 << 10
	// lineTimeout bounds the time from accepting a connection to the end
	// of its request line.
	lineTimeout = 5 * time.Second
	// writeTimeout bounds writing an answer to a client that does not read.
	writeTimeout = 5 * time.Second
	// retryDelay is the pause before a client sends a request again after
	// a "retry" answer.
	retryDelay = 10 * time.Millisecond
)

// Kind is the first word of an answer.
type Kind uint8

const (
	// OK: the command was carried out; the text is its result.
	OK Kind = iota + 1
	// Error: the command failed or was refused; the text is the reason.
	Error
	// Retry: this generation cannot serve the request (it was just
	// replaced, or is not ready yet); the client asks again on a new
	// connection. The text says why.
	Retry
)

// String returns the kind's word on the wire: "ok", "error" or "retry".
func (k Kind) String() string {
	switch k {
	case OK:
		return "ok"
	case Error:
		return "error"
	case Retry:
		return "retry"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= OK && k <= Retry }

// Reply is a [Handler]'s answer to a command.
type Reply struct {
	Kind Kind
	// Text is the result (OK) or the reason (Error, Retry). The server
	// sends it as one line: control characters, newlines included, become
	// spaces, invalid UTF-8 becomes U+FFFD, and a text longer than 64 KiB
	// is cut.
	Text string
}

// String returns the answer line as the server sends it, without the
// newline.
func (r Reply) String() string {
	text := cleanText(r.Text)
	if text == "" {
		return r.Kind.String()
	}
	return r.Kind.String() + " " + text
}

// UnknownCommand is the answer to a command the handler does not know, as
// the protocol requires: "error unknown command "cmd" (want a, b or c)".
// known lists the commands the handler does know, for the message.
func UnknownCommand(cmd string, known ...string) Reply {
	text := fmt.Sprintf("unknown command %q", cmd)
	switch len(known) {
	case 0:
	case 1:
		text += " (want " + known[0] + ")"
	default:
		text += " (want " + strings.Join(known[:len(known)-1], ", ") + " or " + known[len(known)-1] + ")"
	}
	return Reply{Kind: Error, Text: text}
}

// ReplyError is the error [Request] returns when the daemon answered
// "error". Its message is the daemon's reason as it came (made one line of
// printable text), without a prefix: the daemon's reason says what failed.
type ReplyError struct {
	Reason string
}

func (e *ReplyError) Error() string {
	if e.Reason == "" {
		return "the daemon answered error without a reason"
	}
	return e.Reason
}

// The reasons a request line is refused; each is sent as "error <reason>".
var (
	errTooLong   = fmt.Errorf("request too long (over %d bytes)", maxRequest)
	errNotUTF8   = errors.New("request is not valid UTF-8")
	errControl   = errors.New("request contains control characters")
	errEmpty     = errors.New("empty request")
	errNoNewline = errors.New("request not ended by a newline")
)

// parseRequest checks a request line (without its newline) and returns the
// command: the line without the white space around it. The command is
// non-empty, at most maxRequest bytes, valid UTF-8 and free of control
// characters.
func parseRequest(line []byte) (string, error) {
	if len(line) > maxRequest {
		return "", errTooLong
	}
	if !utf8.Valid(line) {
		return "", errNotUTF8
	}
	cmd := strings.TrimSpace(string(line))
	if cmd == "" {
		return "", errEmpty
	}
	if strings.IndexFunc(cmd, unicode.IsControl) >= 0 {
		return "", errControl
	}
	return cmd, nil
}

// parseReply parses an answer line (with or without its newline). Like the
// version 1 client it trims white space around the line and the text; the
// text is cleaned as the server cleans it, so what a client prints is one
// line without control characters whoever answered.
func parseReply(line string) (Reply, error) {
	line = strings.TrimSpace(line)
	word, text, _ := strings.Cut(line, " ")
	var k Kind
	switch word {
	case "ok":
		k = OK
	case "error":
		k = Error
	case "retry":
		k = Retry
	default:
		return Reply{}, fmt.Errorf("unexpected answer %q", truncate(line, 200))
	}
	return Reply{Kind: k, Text: cleanText(text)}, nil
}

// cleanText makes text fit on one answer line: valid UTF-8, control
// characters replaced by spaces, no white space around it, at most
// maxReply-len("error ") bytes.
func cleanText(text string) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	text = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, text)
	return strings.TrimSpace(truncate(text, maxReply-len("error ")))
}

// truncate cuts s to at most n bytes, at a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
