//go:build linux

package systemdtest

// The root a system manager boots in, and its cgroups: see [StartSystem].

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// outerScript runs on the host: $1 is the manager's name, $2 the boot
// script, the rest cgroup directories to move into before the namespaces
// are made (the cgroup namespace is rooted where unshare runs).
const outerScript = `name=$1 script=$2; shift 2
for cg; do echo $$ > "$cg/cgroup.procs" || { echo "systemdtest: cannot move into cgroup $cg" >&2; exit 1; }; done
exec unshare --cgroup --pid --fork --kill-child=SIGKILL --mount --propagation private --uts --ipc --net \
	env -i container="$name" ` + systemPath + ` sh -c "$script" sdsys-init`

// safeWord matches what bootScript writes into the script unquoted.
var safeWord = regexp.MustCompile(`^[A-Za-z0-9_.,=:+-]+$`)

// bootSpec says which systemd the boot script starts, and how.
type bootSpec struct {
	install string // a tree to copy into the root ([Systemd.Root]), or ""
	manager string // the manager binary: a path inside the root
	libDir  string // LD_LIBRARY_PATH for the manager, or ""
}

// hiddenInside are the directories of the machine's root that the system
// manager's root covers with mounts of its own: what is below them on the
// machine cannot be seen inside.
var hiddenInside = []string{"/dev", "/proc", "/run", "/sys", "/tmp"}

// bootSpec returns how to boot sd as the system manager. Its paths are used
// inside the root, where they are those of the machine (the root is an
// overlay of /), so they must not be below hiddenInside.
func (sd Systemd) bootSpec() (bootSpec, error) {
	for _, p := range []string{sd.Manager, sd.Systemctl, sd.Root, sd.LibDir} {
		if !filepath.IsAbs(p) {
			continue // "" or a program found in PATH
		}
		for _, h := range hiddenInside {
			if p == h || strings.HasPrefix(p, h+"/") {
				return bootSpec{}, fmt.Errorf("systemd installation at %s: below %s, which the system manager's root hides", p, h)
			}
		}
	}
	if !filepath.IsAbs(sd.Manager) {
		return bootSpec{}, fmt.Errorf("systemd manager %q: not an absolute path", sd.Manager)
	}
	if sd.Root == "" {
		return bootSpec{manager: sd.Manager, libDir: sd.LibDir}, nil
	}
	rel, err := filepath.Rel(sd.Root, sd.Manager)
	if err != nil || !filepath.IsLocal(rel) || !filepath.IsAbs(sd.Root) {
		return bootSpec{}, fmt.Errorf("systemd manager %s is not below its Root %q", sd.Manager, sd.Root)
	}
	// Once the tree is copied, its programs find their libraries where
	// their RUNPATH says, as on an installed system.
	return bootSpec{install: filepath.Clean(sd.Root), manager: "/" + rel}, nil
}

// journalctl returns the journalctl to read the manager's journal with:
// the one next to sd's systemctl if there is one, else the machine's.
func (sd Systemd) journalctl() string {
	if filepath.IsAbs(sd.Systemctl) {
		j := filepath.Join(filepath.Dir(sd.Systemctl), "journalctl")
		if fi, err := os.Stat(j); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return j
		}
	}
	return "journalctl"
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// bootScript returns the script run as PID 1 of the new namespaces: it
// builds the root, pivots into it, installs boot.install and the payload
// tar archive read from stdin there and execs the manager.
func bootScript(hs []hierarchy, boot bootSpec) (string, error) {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("set -eu")
	line("umask 022")
	// The root: an overlay of / whose writes go to a tmpfs. The tmpfs
	// hides the machine's /tmp in this mount namespace only.
	line("mount -t tmpfs -o mode=0755 sdsys /tmp")
	line("mkdir /tmp/upper /tmp/work /tmp/root")
	line("mount -t overlay -o lowerdir=/,upperdir=/tmp/upper,workdir=/tmp/work overlay /tmp/root")
	line("cd /tmp/root")
	// proc, with what changes global kernel settings read-only.
	line("mount -t proc -o nosuid,nodev,noexec proc proc")
	line("for p in proc/sys proc/sysrq-trigger; do")
	line("  if [ -e $p ]; then mount --bind $p $p && mount -o remount,bind,ro $p; fi")
	line("done")
	line("mount -t sysfs -o ro,nosuid,nodev,noexec sysfs sys")
	// cgroups: fresh mounts, rooted at the manager's own cgroups.
	var v1 bool
	for _, h := range hs {
		v1 = v1 || h.controllers != ""
	}
	if v1 {
		line("mount -t tmpfs -o mode=0755,nosuid,nodev,noexec cgroup sys/fs/cgroup")
	}
	for _, h := range hs {
		dir := "sys/fs/cgroup"
		if v1 {
			dir += "/" + h.subdir()
			line("mkdir -p %s", dir)
		}
		if h.controllers == "" {
			line("mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 %s", dir)
			continue
		}
		line("mount -t cgroup -o nosuid,nodev,noexec,%s cgroup %s", h.options(), dir)
	}
	if v1 {
		links, err := cgroupLinks()
		if err != nil {
			return "", err
		}
		for _, l := range links {
			line("ln -s %s sys/fs/cgroup/%s", l[1], l[0])
		}
		line("mount -o remount,ro,nosuid,nodev,noexec sys/fs/cgroup")
	}
	// A minimal /dev.
	line("mount -t tmpfs -o mode=0755,nosuid,noexec dev dev")
	line("for d in null zero full random urandom tty; do : > dev/$d; mount --bind /dev/$d dev/$d; done")
	line(": > dev/console; mount --bind /dev/null dev/console")
	line("mkdir dev/pts dev/shm")
	line("mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts dev/pts")
	line("ln -s pts/ptmx dev/ptmx")
	line("mount -t tmpfs -o mode=1777,nosuid,nodev shm dev/shm")
	line("ln -s /proc/self/fd dev/fd")
	line("ln -s /proc/self/fd/0 dev/stdin; ln -s /proc/self/fd/1 dev/stdout; ln -s /proc/self/fd/2 dev/stderr")
	line("mount -t tmpfs -o mode=0755,nosuid,nodev run run")
	line("mount -t tmpfs -o mode=1777,nosuid,nodev tmp tmp")
	line("mkdir -p oldroot")
	line("pivot_root . oldroot")
	line("cd /")
	line("umount -l /oldroot")
	line("rmdir /oldroot")
	// From here on / is the overlay: whatever a symbolic link points to,
	// a write lands there.
	if boot.install != "" {
		// A systemd tree (dpkg -x) over the machine's: each top-level
		// directory into what the root has there (bin -> usr/bin: into
		// /usr/bin), replacing files and links.
		// /usr keeps its time of modification: newer than
		// /etc/.updated (where the machine has one), it would make
		// the units with ConditionNeedsUpdate= (ldconfig, sysusers,
		// the journal catalog) run at every boot.
		line("touch -r /usr /run/sdsys-usr-time")
		line("for d in %s/*; do", shellQuote(boot.install))
		line(`  n=${d##*/}`)
		line(`  if [ -d "$d" ] && [ ! -L "$d" ]; then mkdir -p "/$n" && cp -a --remove-destination "$d/." "/$n/"`)
		line(`  else cp -a --remove-destination "$d" "/$n"; fi`)
		line("done")
		line("touch -r /run/sdsys-usr-time /usr && rm /run/sdsys-usr-time")
	}
	// The payload, then the masks (which win over a payload's unit).
	line("tar -x -f - -C /")
	line("exec </dev/null")
	line("mkdir -p %s", SystemUnitDir)
	for _, u := range maskedUnits {
		line("ln -sf /dev/null %s/%s", SystemUnitDir, u)
	}
	// systemd sets the hostname from /etc/hostname at boot.
	line(`hostname "$container"; echo "$container" > /etc/hostname`)
	exec := "exec "
	if boot.libDir != "" {
		exec += "env LD_LIBRARY_PATH=" + shellQuote(boot.libDir) + " "
	}
	line("%s%s --system --unit=basic.target --show-status=no --log-target=journal", exec, shellQuote(boot.manager))
	s := b.String()
	for _, h := range hs {
		for _, w := range []string{h.subdir(), h.options()} {
			if w != "" && !safeWord.MatchString(w) {
				return "", fmt.Errorf("systemdtest: unexpected cgroup hierarchy %q", w)
			}
		}
	}
	return s, nil
}

// tarball returns cfg's files as a tar archive, paths relative to the root.
func (cfg SystemConfig) tarball() ([]byte, error) {
	files := make(map[string]SystemFile, len(cfg.Files)+len(cfg.Units)+1)
	for p, f := range cfg.Files {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("systemdtest: file path %q is not a clean absolute path", p)
		}
		files[p] = f
	}
	for name, content := range cfg.Units {
		if name == "" || strings.ContainsRune(name, '/') {
			return nil, fmt.Errorf("systemdtest: bad unit name %q", name)
		}
		files[path.Join(SystemUnitDir, name)] = SystemFile{Data: []byte(content), Mode: 0o644}
	}
	if cfg.Binary != "" {
		files[SystemBinary] = SystemFile{Source: cfg.Binary, Mode: 0o755}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, p := range slices.Sorted(maps.Keys(files)) {
		f := files[p]
		data := f.Data
		if f.Source != "" {
			var err error
			if data, err = os.ReadFile(f.Source); err != nil {
				return nil, fmt.Errorf("systemdtest: file for %s: %w", p, err)
			}
		}
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: p[1:], Mode: int64(mode), Size: int64(len(data)), ModTime: now, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("systemdtest: archiving %s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("systemdtest: archiving %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("systemdtest: archiving the payload: %w", err)
	}
	return buf.Bytes(), nil
}

// hierarchy is one cgroup hierarchy the test process belongs to.
type hierarchy struct {
	controllers string // as in /proc/self/cgroup: "memory", "cpu,cpuacct", "name=systemd"; "" for cgroup2
	mount       string // its mount point on the host
	current     string // the test's cgroup in it, a directory below mount
}

// subdir is where the hierarchy is mounted below /sys/fs/cgroup inside (in
// the legacy and hybrid layouts): as on the host when the host mounts it
// there, else named after its controllers.
func (h hierarchy) subdir() string {
	if rel, err := filepath.Rel("/sys/fs/cgroup", h.mount); err == nil && rel != "." && !strings.Contains(rel, "/") && !strings.HasPrefix(rel, "..") {
		return rel
	}
	if h.controllers == "" {
		return "unified"
	}
	return strings.TrimPrefix(h.controllers, "name=")
}

// options returns the mount options naming a cgroup-v1 hierarchy.
func (h hierarchy) options() string {
	if h.controllers == "" {
		return ""
	}
	var ctl, named []string
	for c := range strings.SplitSeq(h.controllers, ",") {
		if strings.HasPrefix(c, "name=") {
			named = append(named, c)
		} else {
			ctl = append(ctl, c)
		}
	}
	if len(ctl) == 0 {
		ctl = []string{"none"}
	}
	return strings.Join(append(ctl, named...), ",")
}

// cgroupHierarchies returns the hierarchies of /proc/self/cgroup with their
// mount points. /proc/self/cgroup is read whole first: read line by line
// while processes move, it was seen to give garbage.
func cgroupHierarchies() ([]hierarchy, error) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading /proc/self/mountinfo: %w", err)
	}
	type mnt struct{ root, point string }
	mounts := map[string]mnt{} // controllers (sorted, "" for cgroup2) -> first mount
	for line := range strings.Lines(string(mountinfo)) {
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(pf) < 5 || len(qf) < 3 {
			continue
		}
		var key string
		switch qf[0] {
		case "cgroup2":
		case "cgroup":
			var ctl []string // the controllers and name= among the options
			for o := range strings.SplitSeq(qf[2], ",") {
				switch {
				case strings.HasPrefix(o, "name="):
				case strings.Contains(o, "="), slices.Contains(cgroupFlags, o):
					continue
				}
				ctl = append(ctl, o)
			}
			slices.Sort(ctl)
			key = strings.Join(ctl, ",")
		default:
			continue
		}
		if _, seen := mounts[key]; !seen {
			mounts[key] = mnt{root: unescapeMount(pf[3]), point: unescapeMount(pf[4])}
		}
	}
	var hs []hierarchy
	for line := range strings.Lines(string(self)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) != 3 {
			continue
		}
		ctl := strings.Split(f[1], ",")
		slices.Sort(ctl)
		key := strings.Join(ctl, ",")
		m, ok := mounts[key]
		if !ok {
			return nil, fmt.Errorf("cgroup hierarchy %q (%s) is not mounted", f[1], f[0])
		}
		rel, err := filepath.Rel(m.root, f[2])
		if err != nil || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("cgroup %s of hierarchy %q is outside its mount %s (root %s)", f[2], f[1], m.point, m.root)
		}
		hs = append(hs, hierarchy{controllers: f[1], mount: m.point, current: filepath.Join(m.point, rel)})
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup hierarchy in /proc/self/cgroup")
	}
	return hs, nil
}

// cgroupFlags are the cgroup-v1 mount options that name no controller.
var cgroupFlags = []string{"rw", "ro", "none", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"}

// unescapeMount undoes the octal escapes of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupLinks returns the symbolic links directly in the host's
// /sys/fs/cgroup (such as cpu -> cpu,cpuacct), as (name, target) pairs to
// make in the manager's.
func cgroupLinks() ([][2]string, error) {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, fmt.Errorf("systemdtest: %w", err)
	}
	var links [][2]string
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(filepath.Join("/sys/fs/cgroup", e.Name()))
		if err != nil || !safeWord.MatchString(e.Name()) || !safeWord.MatchString(target) {
			continue
		}
		links = append(links, [2]string{e.Name(), target})
	}
	return links, nil
}

// makeSystemCgroups makes <current>/<name> in every hierarchy and returns
// the directories it made. In cpuset, the child gets its parent's cpus and
// mems first: a process cannot join a cpuset without them.
func makeSystemCgroups(hs []hierarchy, name string) ([]string, error) {
	var dirs []string
	for _, h := range hs {
		dir := filepath.Join(h.current, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return dirs, fmt.Errorf("making cgroup: %w", err)
		}
		dirs = append(dirs, dir)
		if !slices.Contains(strings.Split(h.controllers, ","), "cpuset") {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h.current, f))
			if err != nil {
				return dirs, fmt.Errorf("making cgroup %s: %w", dir, err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0); err != nil {
				return dirs, fmt.Errorf("making cgroup %s: %w", dir, err)
			}
		}
	}
	return dirs, nil
}

// procComm returns the command name of process pid, or "".
func procComm(pid int) string { return strings.TrimSpace(readProc(pid, "comm")) }

// readProc returns /proc/<pid>/<name>, or "" if it cannot be read.
func readProc(pid int, name string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		return ""
	}
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
