package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/echod/echod/handoff"
)

// promSample is one scrape: each sample by its name and labels as
// exposed ("echod_reloads_total{result=\"success\"}").
type promSample map[string]float64

// scrapeMetrics GETs http://addr/metrics with client and parses the
// text exposition format (samples only).
func scrapeMetrics(ctx context.Context, client *http.Client, addr string) (promSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := promSample{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad sample line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading /metrics: %w", err)
	}
	if _, ok := out["echod_generation"]; !ok {
		return nil, errors.New("no echod_generation in the scrape")
	}
	return out, nil
}

// metricsAddr waits for generation gen's metrics listener and returns
// its address.
func (in *instance) metricsAddr(gen int) string {
	in.t.Helper()
	l := in.log.waitFor(in.t, 10*time.Second, "the metrics listener", contains(`msg="http listener"`, "name=metrics", fmt.Sprintf("gen=%d ", gen)))
	return field(addrRe, l)
}

// mustScrape scrapes once (new connection) and fails the test on error.
func mustScrape(t *testing.T, addr string) promSample {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	s, err := scrapeMetrics(context.Background(), client, addr)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return s
}

// wantSamples checks the samples named in want.
func wantSamples(t *testing.T, when string, have promSample, want map[string]float64) {
	t.Helper()
	for name, w := range want {
		h, ok := have[name]
		switch {
		case !ok:
			t.Errorf("%s: no %s in the scrape", when, name)
		case h != w:
			t.Errorf("%s: %s = %v, want %v", when, name, h, w)
		}
	}
}

// scraper scrapes /metrics until stopped, counting what failed, and
// records the generations that answered, in order.
type scraper struct {
	name   string
	client *http.Client
	mu     sync.Mutex
	ok     int
	errs   []string
	gens   []int
}

// lastGen is the generation that answered last (0: none yet).
func (s *scraper) lastGen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.gens) == 0 {
		return 0
	}
	return s.gens[len(s.gens)-1]
}

func (s *scraper) run(ctx context.Context, addr string) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := scrapeMetrics(rctx, s.client, addr)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-request: not a failure of the daemon
		}
		s.mu.Lock()
		if err != nil {
			s.errs = append(s.errs, time.Now().Format("15:04:05.000000")+" "+err.Error())
		} else {
			s.ok++
			if g := int(m["echod_generation"]); len(s.gens) == 0 || s.gens[len(s.gens)-1] != g {
				s.gens = append(s.gens, g)
			}
		}
		s.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
}

// TestMetricsAcrossReloads: the -metrics endpoint counts the echo traffic
// of its process, and is served on one socket (the same inode) by every
// generation: 5 reloads while four clients scrape without a pause (one
// keeping its connection alive, three connecting for each scrape) cost no
// scrape, each generation answers with its number, and the reload series
// carried from generation to generation count every reload, success or
// failure, and every connection moved.
func TestMetricsAcrossReloads(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "echod.toml")
	if err := os.WriteFile(cfgFile, []byte("migrate = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// tcp4: a spec of its own (127.0.0.1:0 twice would be one socket to
	// the listener registry, and the configuration refuses it).
	in := startEchod(t, echodBin(t), "-config", cfgFile, "-listen", "127.0.0.1:0", "-metrics", "tcp4:127.0.0.1:0")
	addr, maddr := in.addrs[0], in.metricsAddr(1)
	inode := listenInode(t, maddr)

	// Traffic: 10 short connections of 100 bytes, 5 held open (50 bytes).
	for i := range 10 {
		c, err := dialEcho("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.roundTrip(100); err != nil {
			t.Fatalf("short connection %d: %v", i, err)
		}
		c.Close()
	}
	held := make([]*echoConn, 5)
	for i := range held {
		held[i] = mustEcho(t, "tcp", addr, 50)
	}
	var m promSample
	deadline := time.Now().Add(10 * time.Second)
	for m = mustScrape(t, maddr); m["echod_connections_closed_total"] < 10 && time.Now().Before(deadline); m = mustScrape(t, maddr) {
		time.Sleep(10 * time.Millisecond) // the server counts a close when its handler returns
	}
	wantSamples(t, "generation 1", m, map[string]float64{
		"echod_generation":                                                       1,
		"echod_connections_accepted_total":                                       15,
		"echod_connections_closed_total":                                         10,
		"echod_connections_open":                                                 5,
		"echod_bytes_echoed_total":                                               10*100 + 5*50,
		"echod_connections_handed_over_total":                                    0,
		`echod_reloads_total{result="success"}`:                                  0,
		`echod_reloads_total{result="failure"}`:                                  0,
		"echod_last_reload_successful":                                           1,
		`echod_build_info{goversion="` + runtime.Version() + `",version="test"}`: 1,
	})
	if m["echod_last_reload_success_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("echod_last_reload_success_timestamp_seconds = %v: not the start", m["echod_last_reload_success_timestamp_seconds"])
	}
	if _, ok := m["process_open_fds"]; !ok {
		t.Errorf("no process collector in the scrape")
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Errorf("no Go collector in the scrape")
	}

	// 5 reloads under continuous scraping.
	keep := &scraper{name: "keep-alive", client: &http.Client{Transport: &http.Transport{}}}
	scrapers := []*scraper{keep}
	for i := range 3 {
		scrapers = append(scrapers, &scraper{name: fmt.Sprintf("new connection each #%d", i+1), client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range scrapers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, maddr)
		}()
	}
	stopScrapers := sync.OnceFunc(func() {
		cancel()
		wg.Wait()
		keep.client.CloseIdleConnections()
	})
	t.Cleanup(stopScrapers)

	prev := in.cmd.Process.Pid
	for gen := 2; gen <= 6; gen++ {
		ans, err := in.reload()
		if err != nil || !strings.Contains(ans, fmt.Sprintf("generation=%d ", gen)) || !strings.Contains(ans, "moved=5 ") {
			t.Fatalf("reload to generation %d: %q, %v", gen, ans, err)
		}
		pid, _ := strconv.Atoi(field(pidRe, ans))
		waitExit(t, prev, 10*time.Second)
		prev = pid
		// The old generation is gone: whoever answers is the new one.
		// It hears of that exit (the drain's end) on its own time.
		m := mustScrape(t, maddr)
		for deadline := time.Now().Add(5 * time.Second); m["echod_drain_duration_seconds_count"] < float64(gen-1) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
			m = mustScrape(t, maddr)
		}
		wantSamples(t, fmt.Sprintf("generation %d", gen), m, map[string]float64{
			"echod_generation":                      float64(gen),
			`echod_reloads_total{result="success"}`: float64(gen - 1),
			`echod_reloads_total{result="failure"}`: 0,
			"echod_connections_handed_over_total":   float64(5 * (gen - 1)),
			"echod_connections_adopted_total":       5,
			"echod_connections_accepted_total":      0,
			"echod_connections_open":                5,
			"echod_last_reload_successful":          1,
			"echod_reload_duration_seconds_count":   float64(gen - 1),
			"echod_handover_duration_seconds_count": float64(gen - 1),
			"echod_drain_duration_seconds_count":    float64(gen - 1),
		})
		if got := listenInode(t, maddr); got != inode {
			t.Fatalf("generation %d: the metrics socket is inode %s, was %s", gen, got, inode)
		}
		if !holdsSocket(t, pid, inode) {
			t.Fatalf("generation %d (pid %d) does not hold the metrics socket %s", gen, pid, inode)
		}
	}
	// Each scraper hears of the last generation before it stops.
	for _, s := range scrapers {
		for deadline := time.Now().Add(5 * time.Second); s.lastGen() != 6 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	stopScrapers()
	for _, s := range scrapers {
		t.Logf("scraper %s: %d scrapes, %d failed; generations in order: %v", s.name, s.ok, len(s.errs), s.gens)
		if len(s.errs) > 0 {
			t.Errorf("scraper %s: %d scrapes failed during the reloads: %v\nlog:\n%s", s.name, len(s.errs), s.errs[:min(len(s.errs), 10)], in.log)
		}
		if s.ok < 10 {
			t.Errorf("scraper %s: only %d scrapes during the reloads", s.name, s.ok)
		}
		if last := s.gens[len(s.gens)-1]; last != 6 {
			t.Errorf("scraper %s: last answer from generation %d, want 6", s.name, last)
		}
	}
	// A connection kept alive moves to the new generation once the old
	// one closed it: it never goes back.
	for i := 1; i < len(keep.gens); i++ {
		if keep.gens[i] < keep.gens[i-1] {
			t.Errorf("keep-alive scraper: generation %d answered after %d", keep.gens[i], keep.gens[i-1])
		}
	}
	for i, c := range held {
		if err := c.roundTrip(64); err != nil {
			t.Fatalf("held connection %d after 5 reloads: %v", i, err)
		}
	}

	// A failed reload is counted by the generation that stays, and
	// carried on by the next.
	if err := os.WriteFile(cfgFile, []byte("max-conns = -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ans, err := in.reload(); err == nil {
		t.Fatalf("reload with a bad config: %q, want an error", ans)
	}
	wantSamples(t, "generation 6 after a failed reload", mustScrape(t, maddr), map[string]float64{
		"echod_generation":                      6,
		`echod_reloads_total{result="success"}`: 5,
		`echod_reloads_total{result="failure"}`: 1,
		"echod_last_reload_successful":          0,
		"echod_reload_duration_seconds_count":   6,
	})
	if err := os.WriteFile(cfgFile, []byte("migrate = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ans, err := in.reload()
	if err != nil || !strings.Contains(ans, "generation=7 ") {
		t.Fatalf("reload to generation 7: %q, %v", ans, err)
	}
	waitExit(t, prev, 10*time.Second)
	wantSamples(t, "generation 7", mustScrape(t, maddr), map[string]float64{
		"echod_generation":                      7,
		`echod_reloads_total{result="success"}`: 6,
		`echod_reloads_total{result="failure"}`: 1,
		"echod_last_reload_successful":          1,
		"echod_reload_duration_seconds_count":   7,
		"echod_connections_handed_over_total":   30,
	})
}

// TestMetricsFlag: -metrics (or the metrics key) takes a listen address
// of its own; one that is a listen address, the default one when none is
// given, or the control socket is refused.
func TestMetricsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // the spec, or the error's text
	}{
		{[]string{"-metrics", "127.0.0.1:9100"}, "127.0.0.1:9100"},
		{[]string{"-metrics", "unix:/run/echod/metrics.sock"}, "unix:/run/echod/metrics.sock"},
		{[]string{"-listen", "127.0.0.1:0", "-metrics", "tcp4:127.0.0.1:0"}, "tcp4:127.0.0.1:0"},
		{[]string{}, ""},
		{[]string{"-metrics", "127.0.0.1"}, "metrics: handoff: bad listen address"},
		{[]string{"-listen", "127.0.0.1:9100", "-metrics", "127.0.0.1:9100"}, "is also a listen address or the control socket"},
		{[]string{"-metrics", defaultListen}, "is also a listen address or the control socket"},
		{[]string{"-control", "/tmp/x.sock", "-metrics", "/tmp/x.sock"}, "is also a listen address or the control socket"},
	} {
		cfg, err := parseConfig(tc.args, io.Discard)
		have := cfg.metricsSpec.String()
		if cfg.metricsSpec == (handoff.Spec{}) {
			have = ""
		}
		if err != nil {
			have = err.Error()
		}
		if !strings.Contains(have, tc.want) || (tc.want == "" && have != "") {
			t.Errorf("%q: have %q, want %q", tc.args, have, tc.want)
		}
	}
}
