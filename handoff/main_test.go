package handoff_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) != "" {
		// A helper process (see TestHelperDaemon) runs tableflip's
		// goroutines until it exits; there is nothing to check there.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
