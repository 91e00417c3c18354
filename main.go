// Command vmtui manages QEMU virtual machines and their disk images, in the
// manner of OpenBSD's vmctl(8); run without arguments on a terminal, it
// opens a full-screen interface. The commands are those of package cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmtui/vmtui/cli"
	"github.com/vmtui/vmtui/config/store"
)

func main() {
	// A signal cancels the context, so that a long conversion stops and
	// removes its partial output instead of leaving it behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.New(os.Stdin, os.Stdout, os.Stderr, store.DefaultPaths).Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
