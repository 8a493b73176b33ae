package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/echod/echod/handoff"
	"github.com/echod/echod/handoff/control"
)

// runStatus is "echod status [-json]": the running generation's report
// (control request status-json), as a table or as JSON. A daemon of a
// release without status-json answers the one-line status instead.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("echod status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("control", defaultConfig().Control, "control socket of the running echod")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return map[bool]int{true: 0, false: 2}[errors.Is(err, flag.ErrHelp)]
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "echod status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "echod status: no control socket: give -control PATH")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ans, err := control.Command(ctx, *path, "status-json")
	if err != nil && strings.Contains(err.Error(), "unknown command") {
		// A release before status-json: its one-line status.
		line, lerr := control.Command(ctx, *path, "status")
		if lerr != nil {
			fmt.Fprintf(stderr, "echod status: %v\n", lerr)
			return 1
		}
		if *asJSON {
			fmt.Fprintf(stderr, "echod status: the running echod does not report JSON (an older release); its status: %s\n", line)
			return 1
		}
		fmt.Fprintln(stdout, line)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "echod status: %v\n", err)
		return 1
	}
	var rep handoff.StatusReport
	if err := json.Unmarshal([]byte(ans), &rep); err != nil {
		fmt.Fprintf(stderr, "echod status: bad report from %s: %v\n", *path, err)
		return 1
	}
	if *asJSON {
		var b bytes.Buffer
		_ = json.Indent(&b, []byte(ans), "", "  ")
		fmt.Fprintln(stdout, b.String())
		return 0
	}
	writeStatus(stdout, rep, time.Now())
	return 0
}

// writeStatus prints rep: the status line, then tables of the
// generations and the listeners, the connections and the reloads.
func writeStatus(w io.Writer, rep handoff.StatusReport, now time.Time) {
	fmt.Fprintf(w, "%s\n\n", rep.Summary)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tPID\tSTATE\tVERSION\tUP")
	fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", rep.Generation, rep.PID, rep.State, rep.Version, now.Sub(rep.Started).Round(time.Second))
	if p := rep.Previous; p != nil {
		fmt.Fprintf(tw, "%d\t%d\t%s\t\t\n", p.Generation, p.PID, p.State)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LISTENER\tADDRESS\tORIGIN")
	for _, l := range rep.Listeners {
		origin := l.Origin
		for _, f := range []struct {
			on   bool
			word string
		}{{l.Inherited, "inherited"}, {l.Stored, "fd store"}, {l.Restored, "restored"}} {
			if f.on {
				origin += ", " + f.word
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Name, l.Addr, origin)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if c := rep.Connections; c != nil {
		fmt.Fprintf(w, "connections: %d open; since start %d accepted, %d adopted, %d closed, %d handed over; %d bytes echoed\n",
			c.Open, c.Accepted, c.Adopted, c.Closed, c.HandedOver, c.BytesEchoed)
	}
	if a := rep.Adopted; a != nil {
		fmt.Fprintf(w, "taken over from generation %d: %d connections in %s\n", rep.Generation-1, a.Moved, seconds(a.Seconds))
	}
	if h := rep.HandedOver; h != nil {
		fmt.Fprintf(w, "handed to generation %d: %d connections in %s, %d draining here\n", rep.Generation+1, h.Moved, seconds(h.Seconds), h.Kept)
	}
	r := rep.Reloads
	fmt.Fprintf(w, "reloads by this generation: %d succeeded, %d failed", r.Succeeded, r.Failed)
	if r.LastError != "" {
		at := ""
		if r.LastErrorAt != nil {
			at = " at " + r.LastErrorAt.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "; the last failed%s: %s", at, r.LastError)
	}
	fmt.Fprintln(w)
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}
