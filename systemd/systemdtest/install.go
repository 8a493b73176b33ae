package systemdtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Systemd is one installation of systemd: the manager binary, the
// systemctl and systemd-analyze that speak to it, and the directory of its
// private libraries when it is not the system's own.
type Systemd struct {
	Manager   string // the systemd binary (started with --user by Start)
	Systemctl string
	Analyze   string // systemd-analyze
	// LibDir, when set, is the LD_LIBRARY_PATH the three need
	// (libsystemd-shared-N.so of an extracted package).
	LibDir string
	// Root, when set, is the tree the installation's packages were
	// extracted into (dpkg -x), laid out as on an installed system
	// (Root/lib/systemd/systemd, Root/bin/systemctl, ...). [StartSystem]
	// installs it into the system manager's root, over the machine's
	// systemd, so that PID 1 finds its own helpers and units there.
	Root string
	// Version is the major version, from "systemd --version".
	Version int
}

// Installed is the machine's own systemd (SystemdPath, and systemctl and
// systemd-analyze from PATH); its Version is 0 until [Systemd.Probe].
func Installed() Systemd {
	return Systemd{Manager: SystemdPath, Systemctl: "systemctl", Analyze: "systemd-analyze"}
}

// env adds the library directory to a process environment.
func (sd Systemd) env(env []string) []string {
	if sd.LibDir == "" {
		return env
	}
	return append(env, "LD_LIBRARY_PATH="+sd.LibDir)
}

// Command is an exec.Cmd running one of sd's programs (its Systemctl,
// Analyze or Manager) with its libraries.
func (sd Systemd) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = sd.env(os.Environ())
	cmd.WaitDelay = time.Second
	return cmd
}

var versionRE = regexp.MustCompile(`(?m)^systemd (\d+) `)

// Probe runs the manager with --version and sets Version.
func (sd *Systemd) Probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := sd.Command(ctx, sd.Manager, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemdtest: %s --version: %w: %s", sd.Manager, err, strings.TrimSpace(string(out)))
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("systemdtest: %s --version: no version in %q", sd.Manager, out)
	}
	sd.Version, _ = strconv.Atoi(string(m[1]))
	return nil
}

// Backports254Dir is where [Backports254] keeps systemd 254, extracted
// from Debian's bookworm-backports packages (nothing is installed).
const Backports254Dir = "/var/cache/echod-test/systemd-254"

// debianSources lists the Debian sources apt already uses; its first
// URIs: line names the mirror.
const debianSources = "/etc/apt/sources.list.d/debian.sources"

// Backports254 returns systemd 254 from Debian's bookworm-backports suite,
// fetched on first use with apt-get download (from the mirror apt already
// uses) and extracted with dpkg -x into Backports254Dir: no package is
// installed and no system file is touched. It skips t, with the reason,
// when it cannot be fetched or does not run here.
func Backports254(t testing.TB) Systemd {
	t.Helper()
	root := filepath.Join(Backports254Dir, "root")
	sd := Systemd{
		Manager:   filepath.Join(root, "lib/systemd/systemd"),
		Systemctl: filepath.Join(root, "bin/systemctl"),
		Analyze:   filepath.Join(root, "usr/bin/systemd-analyze"),
		LibDir:    filepath.Join(root, "usr/lib/x86_64-linux-gnu/systemd"),
		Root:      root,
	}
	if _, err := os.Stat(sd.Manager); err != nil {
		if err := fetch254(root); err != nil {
			t.Skipf("systemdtest: systemd 254 not available: %v", err)
		}
	}
	if err := sd.Probe(); err != nil {
		t.Skipf("systemdtest: systemd 254 does not run here: %v", err)
	}
	if sd.Version != 254 {
		t.Skipf("systemdtest: %s is systemd %d, want 254", sd.Manager, sd.Version)
	}
	return sd
}

// fetch254 downloads and extracts the packages into root, atomically (a
// concurrent fetch, or one interrupted, never leaves half a tree there).
func fetch254(root string) error {
	for _, prog := range []string{"apt-get", "dpkg"} {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("%s not found: %w", prog, err)
		}
	}
	mirror, err := debianMirror()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(root), "fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.MkdirAll(filepath.Join(work, "lists", "partial"), 0o755); err != nil {
		return err
	}
	src := filepath.Join(work, "sources.list")
	line := "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] " + mirror + " bookworm-backports main\n"
	if err := os.WriteFile(src, []byte(line), 0o644); err != nil {
		return err
	}
	opts := []string{"-o", "Dir::Etc::SourceList=" + src, "-o", "Dir::Etc::SourceParts=/dev/null", "-o", "Dir::State::Lists=" + filepath.Join(work, "lists")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(dir string, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(string(out), 5))
		}
		return nil
	}
	if err := run(work, "apt-get", append(opts, "update")...); err != nil {
		return err
	}
	if err := run(work, "apt-get", append(opts, "download", "systemd/bookworm-backports", "libsystemd-shared/bookworm-backports")...); err != nil {
		return err
	}
	tree := filepath.Join(work, "root")
	for _, pattern := range []string{"systemd_254*.deb", "libsystemd-shared_254*.deb"} {
		debs, _ := filepath.Glob(filepath.Join(work, pattern))
		if len(debs) != 1 {
			return fmt.Errorf("downloaded %v for %s, want one package of version 254", debs, pattern)
		}
		if err := run(work, "dpkg", "-x", debs[0], tree); err != nil {
			return err
		}
	}
	if err := os.Rename(tree, root); err != nil && !os.IsExist(err) {
		if _, serr := os.Stat(root); serr == nil {
			return nil // another fetch won
		}
		return err
	}
	return nil
}

// debianMirror returns the first URIs: of apt's Debian sources.
func debianMirror() (string, error) {
	f, err := os.Open(debianSources)
	if err != nil {
		return "", fmt.Errorf("no Debian sources to take the mirror from: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "URIs:"); ok {
			if fs := strings.Fields(v); len(fs) > 0 {
				return fs[0], nil
			}
		}
	}
	return "", fmt.Errorf("no URIs: line in %s", debianSources)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
