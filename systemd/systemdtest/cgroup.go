package systemdtest

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Every manager gets a cgroup of its own, /<name> in the cgroup2 hierarchy
// and, on hybrid hosts, in the name=systemd one. The manager takes its
// cgroup as the root of its tree, so its units live in
// /<name>/app.slice/<unit> instead of /app.slice/<unit>: managers no longer
// share cgroups. Without this, concurrently running managers were seen to
// race on the shared /app.slice ("Failed to attach to cgroup
// /app.slice/x.service: No such file or directory", status=219/CGROUP), and
// same-named units of different managers killed each other.

// cgroupMounts returns the mount points of the cgroup2 hierarchy and of the
// name=systemd v1 hierarchy, where present.
func cgroupMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mnts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch {
		case qf[0] == "cgroup2":
		case qf[0] == "cgroup" && slices.Contains(strings.Split(qf[2], ","), "name=systemd"):
		default:
			continue
		}
		if !slices.Contains(mnts, pf[4]) {
			mnts = append(mnts, pf[4])
		}
	}
	return mnts
}

// makeCgroups creates <mount>/<name> in every hierarchy of cgroupMounts and
// returns those it could create.
func makeCgroups(name string) ([]string, error) {
	var dirs []string
	var errs []error
	for _, mnt := range cgroupMounts() {
		dir := filepath.Join(mnt, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		dirs = append(dirs, dir)
	}
	return dirs, errors.Join(errs...)
}

// removeCgroup kills whatever still runs below dir and removes dir and its
// descendants, retrying for up to timeout. It returns how many processes it
// had to kill.
func removeCgroup(dir string, timeout time.Duration) (killed int, err error) {
	deadline := time.Now().Add(timeout)
	seen := map[int]bool{}
	for {
		var subdirs []string
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				subdirs = append(subdirs, p)
			}
			return nil
		})
		for _, d := range subdirs {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
					if !seen[pid] {
						seen[pid] = true
						killed++
					}
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		err = nil
		for _, d := range slices.Backward(subdirs) { // children before parents
			if e := syscall.Rmdir(d); e != nil && !errors.Is(e, syscall.ENOENT) {
				err = fmt.Errorf("removing cgroup %s: %w", d, e)
			}
		}
		if err == nil || time.Now().After(deadline) {
			return killed, err
		}
		time.Sleep(PollInterval)
	}
}
