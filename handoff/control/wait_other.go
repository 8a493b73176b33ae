//go:build !linux

package control

import (
	"context"
	"errors"
	"fmt"
)

// WaitExit waits until process pid has exited; see wait_linux.go. Other
// systems have no pidfd: it returns an error wrapping errors.ErrUnsupported.
func WaitExit(ctx context.Context, pid int) error {
	return fmt.Errorf("control: wait for pid %d: %w", pid, errors.ErrUnsupported)
}
