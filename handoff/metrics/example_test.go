//go:build linux

package metrics_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/echod/echod/daemon"
	"github.com/echod/echod/handoff"
	"github.com/echod/echod/handoff/metrics"
)

// A first generation's metrics, scraped: the connection series are read
// from the server's counters at each scrape; the reload series start at
// zero (a later generation goes on from what the one before carried).
// Under handoff.Run, Hooks and Carry go into the Options and Handler on a
// handoff.HTTPEndpoint (see the package documentation).
func Example() {
	g, err := handoff.New(handoff.Options{}) // this process's generation
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Stop()

	m := metrics.New(metrics.Options{Version: "1.0.0"})
	stats := func() daemon.Stats { // a *daemon.Server's Stats, usually
		return daemon.Stats{Active: 1, Accepted: 3, Closed: 2, Bytes: 4096}
	}
	if err := m.Attach(g, stats); err != nil {
		fmt.Println(err)
		return
	}

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "echod_connections_") || strings.HasPrefix(line, "echod_bytes_") ||
			strings.HasPrefix(line, "echod_generation") || strings.HasPrefix(line, "echod_reloads_") {
			fmt.Println(line)
		}
	}
	// Output:
	// echod_bytes_echoed_total 4096
	// echod_connections_accepted_total 3
	// echod_connections_adopted_total 0
	// echod_connections_closed_total 2
	// echod_connections_force_closed_total 0
	// echod_connections_handed_over_total 0
	// echod_connections_open 1
	// echod_generation 1
	// echod_reloads_total{result="failure"} 0
	// echod_reloads_total{result="success"} 0
}
