//go:build linux

package handoff

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/echod/echod/daemon"
)

// StatusReport is what a generation tells of itself and of the previous
// one over the control socket ("status-json"; `echod status -json`): the
// machine-readable form of the status line.
type StatusReport struct {
	// Summary is the status line (STATUS=, and the "status" request).
	Summary    string    `json:"summary"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	Version    string    `json:"version,omitempty"`
	Started    time.Time `json:"started"`
	// State is this generation's phase: serving, replaced (handed over,
	// draining what stayed) or stopping.
	State string `json:"state"`
	// Goroutines is runtime.NumGoroutine: with the connections, what a
	// leak across reloads would show.
	Goroutines int              `json:"goroutines"`
	Listeners  []ListenerReport `json:"listeners"`
	// Connections are the server's counters since this process started
	// (nil when the server does not count).
	Connections *ConnReport  `json:"connections,omitempty"`
	Reloads     ReloadReport `json:"reloads"`
	// Adopted is what the previous generation handed over to this one;
	// HandedOver what this one handed to the next (once replaced).
	Adopted    *HandOverReport `json:"adopted,omitempty"`
	HandedOver *HandOverReport `json:"handed_over,omitempty"`
	// Previous is the generation this one replaced, while it still runs
	// (draining the connections it kept).
	Previous *PreviousReport `json:"previous,omitempty"`
}

// ListenerReport is one listening socket.
type ListenerReport struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Origin string `json:"origin"` // systemd (socket activation) or bound
	// Inherited: handed over by the previous generation; Stored: kept in
	// systemd's fd store; Restored: taken back from it at start.
	Inherited bool `json:"inherited,omitempty"`
	Stored    bool `json:"stored,omitempty"`
	Restored  bool `json:"restored,omitempty"`
}

// ConnReport is daemon.Stats.
type ConnReport struct {
	Open        int    `json:"open"`
	Accepted    uint64 `json:"accepted"`
	Adopted     uint64 `json:"adopted"`
	Closed      uint64 `json:"closed"`
	HandedOver  uint64 `json:"handed_over"`
	BytesEchoed uint64 `json:"bytes_echoed"`
	ForceClosed uint64 `json:"force_closed"`
}

// ReloadReport counts the upgrades this generation ran.
type ReloadReport struct {
	Succeeded   int        `json:"succeeded"`
	Failed      int        `json:"failed"`
	LastError   string     `json:"last_error,omitempty"` // of the last one, if it failed
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// HandOverReport is a HandOverResult.
type HandOverReport struct {
	Moved   int     `json:"moved"`
	Kept    int     `json:"kept"`
	Lost    int     `json:"lost"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// PreviousReport is the generation this one replaced.
type PreviousReport struct {
	PID        int    `json:"pid"`
	Generation int    `json:"generation"`
	State      string `json:"state"` // draining
}

func handOverReport(h HandOverResult) *HandOverReport {
	if h.Moved+h.Kept+h.Lost == 0 && h.Err == nil {
		return nil
	}
	r := &HandOverReport{Moved: h.Moved, Kept: h.Kept, Lost: h.Lost, Seconds: h.Took.Seconds()}
	if h.Err != nil {
		r.Error = h.Err.Error()
	}
	return r
}

// statsServer is a server that counts (daemon's Server).
type statsServer interface{ Stats() daemon.Stats }

// report gathers the StatusReport.
func (r *runner) report() StatusReport {
	r.mu.Lock()
	p, lastErr, failed, ok, errAt := r.phase, r.lastErr, r.failed, r.succeeded, r.lastErrAt
	r.mu.Unlock()
	rep := StatusReport{
		Summary: r.status(),
		PID:     os.Getpid(), Generation: r.g.Number(), Version: r.cfg.Version, Started: r.started,
		State:      p.String(),
		Goroutines: runtime.NumGoroutine(),
		Reloads:    ReloadReport{Succeeded: ok, Failed: failed, LastError: lastErr},
	}
	if lastErr != "" && !errAt.IsZero() {
		rep.Reloads.LastErrorAt = &errAt
	}
	for _, l := range r.ls {
		origin := "bound"
		if l.Origin == Activated {
			origin = "systemd"
		}
		rep.Listeners = append(rep.Listeners, ListenerReport{Name: l.Name, Addr: l.Addr().String(), Origin: origin, Inherited: l.Inherited, Stored: l.Stored, Restored: l.Restored})
	}
	if s, isStats := r.srv.(statsServer); isStats {
		st := s.Stats()
		rep.Connections = &ConnReport{Open: st.Active, Accepted: st.Accepted, Adopted: st.Adopted, Closed: st.Closed, HandedOver: st.Detached, BytesEchoed: st.Bytes, ForceClosed: st.ForceClosed}
	}
	select {
	case <-r.g.Adopted():
		rep.Adopted = handOverReport(r.g.AdoptedResult())
	default:
	}
	if p == phaseReplaced {
		rep.HandedOver = handOverReport(r.g.LastHandOver())
	}
	if r.g.link != nil && r.g.link.offer.ParentPID > 0 {
		select {
		case <-r.g.waitDone:
		default:
			rep.Previous = &PreviousReport{PID: r.g.link.offer.ParentPID, Generation: r.g.Number() - 1, State: "draining"}
		}
	}
	return rep
}

// reportJSON is the report as one line of JSON, for the control socket.
func (r *runner) reportJSON() (string, error) {
	b, err := json.Marshal(r.report())
	if err != nil {
		return "", fmt.Errorf("handoff: status: %w", err)
	}
	return string(b), nil
}
