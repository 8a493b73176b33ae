package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// parseVmRSS returns VmRSS, in bytes, from the text of /proc/PID/status.
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmRSS line (kernel thread or zombie?)")
}

// readRSS returns the resident set size of process pid, in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	rss, err := parseVmRSS(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return rss, nil
}

// countFDs returns how many file descriptors process pid has open.
func countFDs(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	return len(names), nil
}

// parseStatState returns the state letter (R, S, D, Z, ...) from the text
// of /proc/PID/stat. The command name may contain spaces and parentheses,
// so the state is the field after the last ')'.
func parseStatState(stat []byte) (byte, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	return stat[i+2], nil
}

// alive reports whether pid exists and is neither a zombie nor dead.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	st, err := parseStatState(b)
	return err == nil && st != 'Z' && st != 'X'
}

// parseCPUModel returns the first "model name" of /proc/cpuinfo text and
// the number of "processor" entries.
func parseCPUModel(cpuinfo []byte) (model string, processors int) {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name", "Model", "Hardware":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		case "processor":
			processors++
		}
	}
	return model, processors
}

// machine describes the host for the report.
type machine struct {
	CPU        string
	Processors int // "processor" entries in /proc/cpuinfo
	NumCPU     int // runtime.NumCPU: CPUs usable by this process
	Kernel     string
	GoVersion  string // of the toolchain that builds the binaries
	Runtime    string // of echobench itself
	MemTotal   string
	NoFile     string
}

func describeMachine(goVersion string) machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVersion: goVersion, Runtime: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU, m.Processors = parseCPUModel(b)
	}
	if m.CPU == "" {
		m.CPU = "unknown"
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = strings.Join([]string{
			unix.ByteSliceToString(u.Sysname[:]),
			unix.ByteSliceToString(u.Release[:]),
			unix.ByteSliceToString(u.Version[:]),
			unix.ByteSliceToString(u.Machine[:]),
		}, " ")
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(rest)
			}
		}
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil {
		m.NoFile = fmt.Sprintf("soft %d, hard %d", rl.Cur, rl.Max)
	}
	return m
}
