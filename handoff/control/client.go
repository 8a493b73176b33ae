package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Request sends cmd to the control socket at path and returns the text of
// the daemon's "ok" answer. An "error" answer is returned as a
// [*ReplyError] holding the daemon's reason. A "retry" answer (the
// generation that took the request was just replaced, or is not ready yet)
// is retried on a new connection after 10 ms, which reaches the generation
// now accepting, until ctx ends; the error then wraps ctx.Err() and says
// why the daemon asked to retry. Other errors (no daemon listening, a
// connection closed without an answer) are wrapped with the socket's path.
//
// Request hangs up when ctx ends, which cancels the request on the server.
// cmd must be a valid request line without its newline.
func Request(ctx context.Context, path, cmd string) (string, error) {
	req, err := parseRequest([]byte(cmd))
	if err != nil {
		return "", fmt.Errorf("control: request %q: %w", truncate(cmd, 200), err)
	}
	retry := "" // why the daemon last asked to retry
	for {
		r, err := requestOnce(ctx, path, req)
		if err != nil {
			if retry != "" && ctx.Err() != nil {
				// Ended while retrying: the reason to retry says more
				// than a dial or read cut by the deadline.
				return "", fmt.Errorf("control %s: %s: %w", path, retry, ctx.Err())
			}
			return "", err
		}
		switch r.Kind {
		case OK:
			return r.Text, nil
		case Error:
			return "", &ReplyError{Reason: r.Text}
		}
		retry = r.Text
		if retry == "" {
			retry = "the daemon asked to retry"
		}
		t := time.NewTimer(retryDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("control %s: %s: %w", path, retry, ctx.Err())
		case <-t.C:
		}
	}
}

// requestOnce sends req on a new connection and reads the answer.
func requestOnce(ctx context.Context, path, req string) (Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Reply{}, fmt.Errorf("control: %w (is the daemon running, with its control socket at %s?)", err, path)
	}
	defer c.Close()
	// Ends the write or read below when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	_, werr := io.WriteString(c, req+"\n")
	// Even when the write failed, the daemon may have answered (and
	// closed) before reading: its answer says more than a broken pipe.
	br := bufio.NewReader(io.LimitReader(c, maxReply+1))
	line, err := br.ReadString('\n')
	if err != nil && werr != nil && ctx.Err() == nil {
		return Reply{}, fmt.Errorf("control %s: send request: %w", path, werr)
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return Reply{}, fmt.Errorf("control %s: no answer: %w", path, ctx.Err())
		case len(line) > maxReply:
			return Reply{}, fmt.Errorf("control %s: answer longer than %d bytes", path, maxReply)
		case errors.Is(err, io.EOF):
			return Reply{}, fmt.Errorf("control %s: no answer: the daemon closed the connection", path)
		}
		return Reply{}, fmt.Errorf("control %s: no answer: %w", path, err)
	}
	r, err := parseReply(line)
	if err != nil {
		return Reply{}, fmt.Errorf("control %s: %w", path, err)
	}
	return r, nil
}

// Command is Request as a command-line client needs it (ExecReload=,
// ExecStop=): for "stop", whose answer is "pid=N" (the process that exits
// last), it also waits until that process has exited, so a synchronous
// stop returns when every generation is gone.
func Command(ctx context.Context, path, cmd string) (string, error) {
	ans, err := Request(ctx, path, cmd)
	if err != nil || cmd != "stop" {
		return ans, err
	}
	var pid int
	if _, err := fmt.Sscanf(ans, "pid=%d", &pid); err != nil || pid <= 0 {
		return "", fmt.Errorf("control %s: stop: unexpected answer %q", path, ans)
	}
	if err := WaitExit(ctx, pid); err != nil {
		return "", fmt.Errorf("control %s: stop: %w", path, err)
	}
	return ans, nil
}
