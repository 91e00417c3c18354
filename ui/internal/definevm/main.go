// Command definevm defines VMs that boot a kernel, without starting them,
// for `make demo` and bench/tui.sh (the CLI defines a VM only as it starts
// it). State lives where vmtui's does ($VMTUI_HOME or the XDG directories).
//
// Usage:
//
//	definevm -kernel vmlinuz -initrd initrd.img [-m 128M] [-append line] name...
//
// Names already defined are left as they are.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"vmtui/config"
)

func main() {
	kernel := flag.String("kernel", "", "guest `kernel`")
	initrd := flag.String("initrd", "", "guest `initrd`")
	appendLine := flag.String("append", "console=ttyS0 quiet panic=-1", "kernel command `line`")
	mem := flag.String("m", "128M", "memory `size`")
	accel := flag.String("accel", "", "accelerator (kvm, tcg); empty for vmtui's default")
	flag.Parse()
	if flag.NArg() == 0 || *kernel == "" {
		fmt.Fprintln(os.Stderr, "usage: definevm -kernel path [-initrd path] [-m size] [-append line] [-accel a] name...")
		os.Exit(2)
	}
	if err := run(*kernel, *initrd, *appendLine, *mem, *accel, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "definevm:", err)
		os.Exit(1)
	}
}

func run(kernel, initrd, appendLine, mem, accel string, names []string) error {
	for _, p := range []*string{&kernel, &initrd} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			*p = abs
		}
	}
	memory, err := config.ParseMemory(mem)
	if err != nil {
		return err
	}
	paths, err := config.DefaultPaths()
	if err != nil {
		return err
	}
	store, err := config.Open(paths)
	if err != nil {
		return err
	}
	for _, name := range names {
		def := &config.VM{
			Name: name, Memory: memory, Kernel: kernel, Initrd: initrd, Append: appendLine, Accel: accel,
			Networks: []config.Network{{Type: config.NetUser}},
		}
		err := store.Create(def)
		switch {
		case errors.Is(err, config.ErrExists):
			continue
		case err != nil:
			return fmt.Errorf("define %s: %w", name, err)
		}
		fmt.Printf("defined vm %s (id %d)\n", def.Name, def.ID)
	}
	return nil
}
