package load

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testReport runs a short load with reloads against a good server.
func testReport(t *testing.T) *Report {
	t.Helper()
	rep, err := Run(context.Background(), Config{
		Addr: startTCP(t, echoHandler), Duration: 250 * time.Millisecond, Concurrency: 2, Streams: 1,
		Size: testSize, Timeout: 2 * time.Second,
		Reload: ReloadConfig{Cmd: "true", Every: 50 * time.Millisecond, Window: 10 * time.Millisecond},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestWritePlot(t *testing.T) {
	rep := testReport(t)
	// Add a failed reload and a bucket with failures, so that every kind
	// of mark is drawn.
	rep.Reloads.Events = append(rep.Reloads.Events, ReloadEventReport{StartMS: 120, EndMS: 130})
	rep.Timeline.Points[0].Failures = 2
	dir := t.TempDir()
	for _, name := range []string{"rtt.png", "rtt.svg"} {
		path := filepath.Join(dir, name)
		if err := rep.WritePlot(path); err != nil {
			t.Fatalf("WritePlot(%s): %v", name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Fatalf("%s is empty", name)
		}
		if strings.HasSuffix(name, ".png") && !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s is not a PNG", name)
		}
	}
	if err := rep.WritePlot(filepath.Join(dir, "rtt.gif")); err == nil {
		t.Error("WritePlot accepted a .gif")
	}
}

func TestWriteJSONAndTable(t *testing.T) {
	rep := testReport(t)
	path := filepath.Join(t.TempDir(), "r.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "pass", "config", "short", "streams", "throughput", "connect_latency", "rtt_latency", "failures", "first_failures", "reloads", "timeline"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON report lacks %q", k)
		}
	}
	reloads, _ := m["reloads"].(map[string]any)
	for _, k := range []string{"count", "ok", "failed", "pending", "skipped", "duration", "events"} {
		if _, ok := reloads[k]; !ok {
			t.Errorf("JSON reloads lacks %q: %v", k, reloads)
		}
	}
	if events, _ := reloads["events"].([]any); len(events) == 0 {
		t.Error("JSON reloads has no events")
	} else if ev, _ := events[0].(map[string]any); ev["pending"] != false || ev["ok"] != true {
		t.Errorf("JSON reload event = %v, want ok and not pending", ev)
	}
	if cfg, _ := m["config"].(map[string]any); cfg["reload_timeout_ms"] != float64(DefaultReloadTimeout.Milliseconds()) || cfg["timeout_ms"] != 2000.0 {
		t.Errorf("JSON config = %v", cfg)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.Messages != rep.Messages || back.Reloads.Count != rep.Reloads.Count {
		t.Errorf("JSON round trip: %v, messages %d/%d", err, back.Messages, rep.Messages)
	}

	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"PASS", "short conns", "rtt near reload", "reload duration", "connect refused", "reloads: ", "pending 0)", "timeout 60000ms"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

func TestProgressLine(t *testing.T) {
	line := progressLine(Progress{Elapsed: time.Second, ShortOK: 10}, Progress{Elapsed: 2 * time.Second, ShortOK: 110, Failures: 2, Reloads: 3, ReloadFails: 1})
	for _, s := range []string{"100 msg/s", "errors 2", "reloads 3 (1 failed)"} {
		if !strings.Contains(line, s) {
			t.Errorf("progress line %q lacks %q", line, s)
		}
	}
	line = progressLine(Progress{}, Progress{Elapsed: 9 * time.Second, Reloads: 1, ReloadActive: 7500 * time.Millisecond, ReloadSkip: 6, ReloadPend: 1})
	if want := "reloads 1 (0 failed, 1 pending, 1 in progress for 7.5s, 6 ticks skipped)"; !strings.Contains(line, want) {
		t.Errorf("progress line %q lacks %q", line, want)
	}
}
