//go:build linux

package handoff

import (
	"encoding/json"
	"fmt"
	"os"
)

// Protocol version 1, spoken by the release before this one, on the child
// side only: a running version 1 daemon upgrades in place to this release.
// Its parent put its state in legacyEnv (the generation number, the
// systemd sockets passed, the fd store names, and a status file) and read
// "ok <pid>" or "error <reason>" from that file once tableflip's Upgrade
// returned. It also sent MAINPID= itself. This release never sets the
// variable. To be removed once no supported release speaks version 1.
const legacyEnv = "ECHOD_HANDOFF"

// legacyState is what legacyEnv holds.
type legacyState struct {
	Generation int      `json:"generation"`
	Status     string   `json:"status"`
	Systemd    []string `json:"systemd,omitempty"`
	Stored     []string `json:"stored,omitempty"`
}

// takeLegacyEnv reads and removes legacyEnv.
func takeLegacyEnv() (string, bool) {
	raw, ok := os.LookupEnv(legacyEnv)
	os.Unsetenv(legacyEnv)
	return raw, ok
}

func openLegacyLink(raw string) (*parentLink, error) {
	var st legacyState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, fmt.Errorf("%w: %s from the previous generation: %v", ErrProtocol, legacyEnv, err)
	}
	return &parentLink{
		version: 1,
		status:  st.Status,
		offer:   offer{Generation: st.Generation + 1, Systemd: st.Systemd, Stored: st.Stored},
	}, nil
}

// writeStatusFile writes a version 1 status line into the file the parent
// created (never creating one).
func writeStatusFile(path, line string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("handoff: report to the previous generation: %w", err)
	}
	_, err = f.WriteString(line + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("handoff: report to the previous generation: %w", err)
	}
	return nil
}
