package systemd

import (
	"fmt"
	"time"
)

// Store hands fds to the service manager's file descriptor store under
// name (FDSTORE=1, FDNAME=): the manager keeps them open while the service
// restarts and passes them back in LISTEN_FDS/LISTEN_FDNAMES. The unit
// needs FileDescriptorStoreMax= large enough, or systemd drops the fds
// without a word. The fds stay open in this process too. Return values
// are as for [Notifier.Notify]; an invalid name is an error and nothing is
// sent.
func (n *Notifier) Store(name string, fds ...int) (bool, error) {
	if err := CheckFDName(name); err != nil {
		return false, err
	}
	if len(fds) == 0 {
		return false, fmt.Errorf("systemd: store %s: no fd", name)
	}
	return n.NotifyWithFDs(fds, "FDSTORE=1", "FDNAME="+name)
}

// StoreUnpolled is [Notifier.Store] for fds that signal EPOLLHUP while
// stored and must be kept all the same (FDPOLL=0): by default the manager
// watches stored fds and drops one that hangs up, which is right for a
// connection whose peer went away, wrong for one end of a socketpair
// whose other end was closed on purpose (its receive queue is the point).
func (n *Notifier) StoreUnpolled(name string, fds ...int) (bool, error) {
	if err := CheckFDName(name); err != nil {
		return false, err
	}
	if len(fds) == 0 {
		return false, fmt.Errorf("systemd: store %s: no fd", name)
	}
	return n.NotifyWithFDs(fds, "FDSTORE=1", "FDNAME="+name, "FDPOLL=0")
}

// Remove closes and forgets every fd the manager stores under name
// (FDSTOREREMOVE=1).
func (n *Notifier) Remove(name string) (bool, error) {
	if err := CheckFDName(name); err != nil {
		return false, err
	}
	return n.Notify("FDSTOREREMOVE=1", "FDNAME="+name)
}

// StoreSync is Store followed by a [Notifier.Barrier]: when it returns
// nil, the manager holds the fds, and the process may exit.
func (n *Notifier) StoreSync(name string, timeout time.Duration, fds ...int) (bool, error) {
	ok, err := n.Store(name, fds...)
	if !ok || err != nil {
		return ok, err
	}
	return n.Barrier(timeout)
}
