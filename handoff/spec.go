package handoff

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrBadAddress is wrapped by every error from [ParseSpec].
var ErrBadAddress = errors.New("handoff: bad listen address")

// Spec is a listening address a daemon is configured with.
type Spec struct {
	Network string // "tcp", "tcp4", "tcp6" or "unix"
	Address string // "host:port" or an absolute path
}

// String returns the spec in the form ParseSpec accepts.
func (s Spec) String() string {
	if s.Network == "unix" {
		return "unix:" + s.Address
	}
	if s.Network == "tcp" {
		for _, p := range []string{"tcp:", "tcp4:", "tcp6:", "unix:"} {
			if strings.HasPrefix(s.Address, p) {
				return "tcp:" + s.Address // a host named like a network
			}
		}
		return s.Address
	}
	return s.Network + ":" + s.Address
}

// maxUnixPath is the room in sockaddr_un.sun_path, less the final NUL.
const maxUnixPath = 107

// ParseSpec parses a listen address: "host:port" (TCP; an IPv6 host in
// brackets), "tcp4:host:port" or "tcp6:host:port" to force a family, an
// absolute path or "unix:/path" for a Unix stream socket. Port 0 asks the
// kernel for a free port.
func ParseSpec(s string) (Spec, error) {
	if s == "" {
		return Spec{}, fmt.Errorf("%w: empty", ErrBadAddress)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return Spec{}, fmt.Errorf("%w %q: contains a control character", ErrBadAddress, s)
	}
	if rest, ok := strings.CutPrefix(s, "unix:"); ok {
		return parseUnix(s, rest)
	}
	if strings.HasPrefix(s, "/") {
		return parseUnix(s, s)
	}
	network := "tcp"
	addr := s
	for _, n := range []string{"tcp4", "tcp6", "tcp"} {
		if rest, ok := strings.CutPrefix(s, n+":"); ok {
			network, addr = n, rest
			break
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Spec{}, fmt.Errorf("%w %q: want host:port, [ipv6]:port, /path or unix:/path: %v", ErrBadAddress, s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || port == "" {
		return Spec{}, fmt.Errorf("%w %q: port %q is not a number from 0 to 65535", ErrBadAddress, s, port)
	}
	if host != "" {
		if ip := net.ParseIP(host); ip != nil {
			if network == "tcp4" && ip.To4() == nil {
				return Spec{}, fmt.Errorf("%w %q: %s is not an IPv4 address", ErrBadAddress, s, host)
			}
			if network == "tcp6" && ip.To4() != nil && !strings.Contains(host, ":") {
				return Spec{}, fmt.Errorf("%w %q: %s is not an IPv6 address", ErrBadAddress, s, host)
			}
		} else if !isHostName(host) {
			return Spec{}, fmt.Errorf("%w %q: %q is neither an IP address nor a host name", ErrBadAddress, s, host)
		}
	}
	return Spec{Network: network, Address: net.JoinHostPort(host, strconv.FormatUint(p, 10))}, nil
}

func parseUnix(orig, path string) (Spec, error) {
	if !filepath.IsAbs(path) {
		return Spec{}, fmt.Errorf("%w %q: a Unix socket path must be absolute", ErrBadAddress, orig)
	}
	path = filepath.Clean(path)
	if len(path) > maxUnixPath {
		return Spec{}, fmt.Errorf("%w %q: a Unix socket path is limited to %d bytes", ErrBadAddress, orig, maxUnixPath)
	}
	return Spec{Network: "unix", Address: path}, nil
}

// matches reports whether a listening socket with address addr is the
// one s describes. TCP addresses compare by IP and port, so ":7007" matches
// a socket on [::]:7007 or 0.0.0.0:7007, and "127.0.0.1:7007" one on
// 127.0.0.1:7007; host names never match.
func (s Spec) matches(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.UnixAddr:
		return s.Network == "unix" && s.Address == a.Name
	case *net.TCPAddr:
		if s.Network == "unix" {
			return false
		}
		host, port, err := net.SplitHostPort(s.Address)
		if err != nil || port != strconv.Itoa(a.Port) {
			return false
		}
		if host == "" {
			return a.IP.IsUnspecified()
		}
		ip := net.ParseIP(host)
		return ip != nil && ip.Equal(a.IP)
	}
	return false
}

// isHostName reports whether h is made of letters, digits, '-', '_' and
// '.' only (RFC 1123 labels, leniently).
func isHostName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}
