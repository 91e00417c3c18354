// Command vmtui manages QEMU virtual machines and their disk images, in the
// manner of OpenBSD's vmctl(8).
//
// Commands may be abbreviated to any unambiguous prefix, as in vmctl:
// "vmtui cre" is "vmtui create". Results go to standard output; errors go
// to standard error as "vmtui: what: why", with a non-zero exit status.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// A signal cancels the context, so that a long conversion stops and
	// removes its partial output instead of leaving it behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
