package qmp_test

import (
	"context"
	"fmt"
	"time"

	"github.com/vmtui/vmtui/vm/qmp"
	"github.com/vmtui/vmtui/vm/qmp/qmptest"
)

// Pause a guest, and see the STOP event that QEMU sent before its reply.
// With a real QEMU, use qmp.Dial(ctx, "/path/to/qmp.sock").
func Example() {
	fake := qmptest.NewServer() // a scripted QEMU 7.2
	defer fake.Close()
	fake.EmulateVM(&qmptest.VM{PTY: "/dev/pts/3"})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.New(ctx, fake.Pipe())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println("QEMU", c.Version())

	events := c.Subscribe(8)
	defer events.Close()
	if err := c.Stop(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("event", (<-events.C).Name)
	st, _ := c.QueryStatus(ctx)
	fmt.Println("status", st.Status)
	tty, _ := c.PTY(ctx, "ser0")
	fmt.Println("console", tty)

	_, err = c.QueryBalloon(ctx)
	fmt.Println("class", qmp.ErrorClass(err))
	// Output:
	// QEMU 7.2.22
	// event STOP
	// status paused
	// console /dev/pts/3
	// class CommandNotFound
}
