// Package load is the engine of the echoload command and a load-testing
// library for echo servers in its own right: the wire format used to
// verify every echoed byte, the short-connection and long-lived-stream
// drivers, the hold mode, the periodic reload runner, and the statistics,
// report, and plot produced at the end of a run.
//
// [Report] is the stable format of echoload's -json output: its JSON field
// names are a contract, relied on by tools that decode the output (such as
// echobench), and [ReportVersion] is bumped when a field changes meaning or
// disappears. Such tools should decode into Report rather than copy it.
//
// Everything that can block on the network is bounded by a deadline
// (Config.Timeout). Every goroutine started here is owned by the function
// that started it and is joined before that function returns.
package load
