package handoff

// BreakChannelForTest closes this generation's end of the channel to the
// generation that exec'd it, as a broken channel would: its next message
// to the parent fails.
func BreakChannelForTest(g *Generation) {
	if g.link != nil && g.link.ch != nil {
		g.link.ch.c.Close()
	}
}

// SetBeforeCommitForTest makes Ready call f just before its commit.
func SetBeforeCommitForTest(f func(*Generation)) { beforeCommit = f }

// SetAfterAcceptForTest makes a generation taking over connections call f
// after it accepted each batch.
func SetAfterAcceptForTest(f func(batch int)) { afterAccept = f }
