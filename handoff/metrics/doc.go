// Package metrics exports a daemon run by handoff.Run in the Prometheus
// text format: its connections (daemon.Stats, read at each scrape), its
// reloads and hand-overs (through handoff's Hooks), its generation and
// build, and the Go runtime's and the process's standard collectors.
// Serve [Metrics.Handler] on a handoff.HTTPEndpoint: every generation
// inherits that socket, so a scrape is never refused during a reload, and
// a replaced generation stops answering as soon as the new one committed.
// Linux only, like handoff's generations.
//
// Wiring, as cmd/echod does it:
//
//	m := metrics.New(metrics.Options{Version: version})
//	handoff.Run(ctx, handoff.Config{
//		Options: handoff.Options{Hooks: m.Hooks(), Carry: m.Carry},
//		HTTP:    []handoff.HTTPEndpoint{{Name: "metrics", Spec: spec, Handler: m.Handler()}},
//		NewServer: func(g *handoff.Generation, _ []*handoff.Listener) (handoff.Server, error) {
//			srv := daemon.New(daemon.Config{})
//			if err := m.Attach(g, srv.Stats); err != nil {
//				log.Warn("metrics", "err", err) // the carried series start at zero
//			}
//			return srv, nil
//		},
//	})
//
// # Per process and carried
//
// (The names are those of the default Options.Namespace, "echod".)
//
// The connection counters are the process's own (daemon.Stats): each
// generation starts them at zero, which Prometheus treats as a counter
// reset (rate and increase are right across a reload). They are
// echod_connections_open, echod_connections_accepted_total,
// echod_connections_closed_total, echod_connections_adopted_total (taken
// over from the previous generation or systemd's fd store),
// echod_connections_force_closed_total and echod_bytes_echoed_total, and
// the go_* and process_* series.
//
// The reload series would be useless per process: the generation a
// successful reload replaces stops answering scrapes at once. So they are
// counted by the generation that survives the reload (the new one after a
// success, the old one after a failure) and carried from each generation
// to the next with the upgrade's offer (handoff.Options.Carry), from the
// first generation on; a restart of the service starts them at zero. They
// are echod_reloads_total{result="success"|"failure"},
// echod_connections_handed_over_total (live connections moved by every
// reload), and the histograms echod_reload_duration_seconds (from the
// upgrade's start to the new generation's commit, or to the failure),
// echod_handover_duration_seconds (from the new generation's ready
// message, on which the old one pauses, to its last connection resumed;
// every reload with connection migration, even of none) and
// echod_drain_duration_seconds (from the commit until the old generation
// exited: its moves after the commit and its drain of what it kept). echod_generation is carried by handoff
// itself. echod_last_reload_successful and
// echod_last_reload_success_timestamp_seconds follow from where they are
// read: a generation answers 1 and the time of its own commit (of its
// start, in the first generation), until one of its reloads fails. A
// release that does not carry them (or a carry this one cannot read)
// starts them at zero.
package metrics
