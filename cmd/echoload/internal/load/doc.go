// Package load implements the echoload workloads: the wire format used to
// verify every echoed byte, the short-connection and long-lived-stream
// drivers, the hold mode, the periodic reload runner, and the statistics,
// report, and plot produced at the end of a run.
//
// Everything that can block on the network is bounded by a deadline
// (Config.Timeout). Every goroutine started here is owned by the function
// that started it and is joined before that function returns.
package load
