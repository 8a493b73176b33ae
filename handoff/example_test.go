package handoff_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/echod/echod/handoff"
)

// The Generation API by hand (Run does all of this, and more): SIGHUP
// execs a new generation of the binary, which takes over the listening
// sockets; once it serves, this generation stops accepting, drains its
// connections and exits. SIGTERM stops for good.
func Example_generation() {
	// Ask for the signals before anything can send them.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	gen, err := handoff.New(handoff.Options{Logger: logger, UpgradeTimeout: 30 * time.Second})
	if err != nil {
		// Tell the generation that exec'd us, if any, why we give up.
		handoff.ReportFailure(err)
		log.Fatal(err)
	}
	logger = logger.With("generation", gen.Number())
	gen.SetLogger(logger)

	// The configured addresses; none configured and no socket from
	// systemd means the fallback.
	var specs []handoff.Spec
	for _, a := range os.Args[1:] {
		spec, err := handoff.ParseSpec(a)
		if err != nil {
			gen.Fail(err) // the previous generation's Upgrade returns this reason
			log.Fatal(err)
		}
		specs = append(specs, spec)
	}
	fallback := []handoff.Spec{{Network: "tcp", Address: "127.0.0.1:7007"}}
	ls, err := gen.Listeners(specs, fallback)
	if err != nil {
		gen.Fail(err)
		log.Fatal(err)
	}

	// Serve only once ready: until then the previous generation, if
	// any, accepts, and a failure here takes no connection with it.
	if err := gen.Ready(); err != nil {
		log.Fatal(err)
	}
	var accepting, serving sync.WaitGroup
	for _, l := range ls {
		accepting.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return // closed
				}
				serving.Go(func() {
					defer c.Close()
					_, _ = io.Copy(c, c) // echo
				})
			}
		})
	}
	stopAccepting := func() {
		for _, l := range ls {
			l.Close()
		}
		accepting.Wait()
	}

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM {
				stopAccepting()
				gen.Stop()
				serving.Wait()
				return
			}
			// Upgrade waits for the new generation; run it aside so
			// that signals keep being handled. Requests are queued.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				res, err := gen.Upgrade(ctx)
				if err != nil {
					logger.Error("upgrade failed; still serving", "err", err)
					return
				}
				logger.Info("upgraded", "pid", res.PID, "generation", res.Generation)
			}()
		case <-gen.Exit():
			// The new generation serves: drain and exit.
			stopAccepting()
			serving.Wait()
			gen.Stop()
			return
		}
	}
}

// An HTTP server (net/http) run and reloaded by handoff.Run: SIGHUP or a
// "reload" on the control socket would exec the binary afresh, hand the
// listening socket over and drain this generation. Here ctx ends it.
func ExampleRun_http() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- handoff.Run(ctx, handoff.Config{
			Listen:       []handoff.Spec{{Network: "tcp", Address: "127.0.0.1:0"}},
			DrainTimeout: 5 * time.Second,
			NewServer: func(g *handoff.Generation, ls []*handoff.Listener) (handoff.Server, error) {
				addr <- ls[0].Addr().String() // clients may connect now: the backlog holds them
				return &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					fmt.Fprintf(w, "hello from generation %d\n", g.Number())
				})}, nil
			},
		})
	}()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + <-addr + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))
	cancel()
	fmt.Println("Run returned", <-done)
	// Output:
	// hello from generation 1
	// Run returned <nil>
}

func ExampleParseSpec() {
	for _, s := range []string{"127.0.0.1:7007", "[::1]:0", "tcp4::7007", "unix:/run/echod/../echod.sock", "localhost"} {
		spec, err := handoff.ParseSpec(s)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("%-6s %-22s %s\n", spec.Network, spec.Address, spec)
	}
	// Output:
	// tcp    127.0.0.1:7007         127.0.0.1:7007
	// tcp    [::1]:0                [::1]:0
	// tcp4   :7007                  tcp4::7007
	// unix   /run/echod.sock        unix:/run/echod.sock
	// error: handoff: bad listen address "localhost": want host:port, [ipv6]:port, /path or unix:/path: address localhost: missing port in address
}
