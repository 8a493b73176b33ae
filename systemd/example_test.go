package systemd_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/echod/echod/systemd"
)

func ExampleStatus() {
	// Newlines and other control characters become spaces, so the text
	// cannot smuggle in another state line such as READY=1.
	fmt.Printf("%q\n", systemd.Status("reloading\nREADY=1"))
	fmt.Printf("%q\n", systemd.Status("a\tb\x00c"))
	// Output:
	// "STATUS=reloading READY=1"
	// "STATUS=a b c"
}

func ExampleCheckFDName() {
	fmt.Println(systemd.CheckFDName("http"))
	fmt.Println(systemd.CheckFDName("a:b"))
	fmt.Println(systemd.CheckFDName(""))
	// Output:
	// <nil>
	// systemd: fd name "a:b": byte 0x3a at 1 is not allowed (no ':' or control characters)
	// systemd: fd name "" must be 1 to 255 bytes
}

func ExampleNotifier_Notify() {
	// Outside systemd there is no NOTIFY_SOCKET: Notify sends nothing and
	// that is not an error.
	os.Unsetenv("NOTIFY_SOCKET")
	n := systemd.NewNotifier()
	fmt.Println(n.Enabled())
	fmt.Println(n.Notify(systemd.Ready, systemd.Status("serving")))
	// Output:
	// false
	// false <nil>
}

func ExampleParseListenEnv() {
	// As seen by process 1234, which systemd gave two named sockets.
	env, err := systemd.ParseListenEnv(1234, "1234", "2", "http:admin")
	fmt.Println(env.N, env.Names, err)

	// Not socket-activated.
	env, err = systemd.ParseListenEnv(1234, "", "", "")
	fmt.Println(env.N, env.Names == nil, err)

	// The variables were meant for another process (an inherited environment).
	_, err = systemd.ParseListenEnv(1234, "999", "2", "")
	fmt.Println(err)
	// Output:
	// 2 [http admin] <nil>
	// 0 true <nil>
	// systemd: bad environment: LISTEN_PID=999 names another process (this is 1234): the sockets were meant for it
}

// ExampleNotifier_StoreUnpolled keeps one end of a socketpair in the fd
// store, as a daemon keeps a queue of connections there: FDPOLL=0, or the
// manager would drop it once the other end is closed. Here a unixgram
// socket stands in for the manager.
func ExampleNotifier_StoreUnpolled() {
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	manager, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer manager.Close()
	os.Setenv("NOTIFY_SOCKET", manager.LocalAddr().String())
	defer os.Unsetenv("NOTIFY_SOCKET")

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	fmt.Println(systemd.NewNotifier().StoreUnpolled("queue-0", pair[1]))

	buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := manager.ReadMsgUnix(buf, oob)
	if err != nil {
		fmt.Println(err)
		return
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	fds, _ := unix.ParseUnixRights(&msgs[0])
	for _, fd := range fds {
		unix.Close(fd)
	}
	fmt.Printf("%q with %d fd\n", buf[:n], len(fds))
	// Output:
	// true <nil>
	// "FDSTORE=1\nFDNAME=queue-0\nFDPOLL=0" with 1 fd
}
