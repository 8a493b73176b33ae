package systemd_test

import (
	"fmt"
	"os"

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
