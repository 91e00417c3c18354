// Command startpaused defines test VMs and starts them paused, for
// bench/list.sh: the CLI has no flag to start a VM paused, the Manager does
// (vm.StartOptions.Paused). State lives where vmtui's does ($VMTUI_HOME).
//
// Usage:
//
//	startpaused -kernel vmlinuz -initrd initrd.img [-m 128M] [-n 30] [-j 4] prefix
//
// defines prefix1 ... prefixN (those not defined yet) and starts each one
// that is not running, at most -j at a time.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm"
)

func main() {
	kernel := flag.String("kernel", "", "guest `kernel`")
	initrd := flag.String("initrd", "", "guest `initrd`")
	appendLine := flag.String("append", "console=ttyS0 quiet panic=-1", "kernel command `line`")
	mem := flag.String("m", "128M", "memory `size` of each VM")
	n := flag.Int("n", 30, "`number` of VMs")
	jobs := flag.Int("j", 4, "starts at once")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: startpaused -kernel path -initrd path [-m size] [-n count] [-j jobs] prefix")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *kernel == "" || *initrd == "" || *n < 1 || *jobs < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *kernel, *initrd, *appendLine, *mem, *n, *jobs); err != nil {
		fmt.Fprintln(os.Stderr, "startpaused:", err)
		os.Exit(1)
	}
}

func run(prefix, kernel, initrd, appendLine, mem string, n, jobs int) error {
	memory, err := config.ParseMemory(mem)
	if err != nil {
		return err
	}
	paths, err := store.DefaultPaths()
	if err != nil {
		return err
	}
	st, err := store.Open(paths)
	if err != nil {
		return err
	}
	m := vm.NewManager(st)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var defs []*config.VM
	for i := 1; i <= n; i++ {
		name := prefix + strconv.Itoa(i)
		def, err := st.Lookup(name)
		if errors.Is(err, store.ErrNotFound) {
			def = &config.VM{Name: name, Memory: memory, CPUs: 1, Kernel: kernel, Initrd: initrd, Append: appendLine}
			err = st.Create(def)
		}
		if err != nil {
			return fmt.Errorf("define %s: %w", name, err)
		}
		defs = append(defs, def)
	}

	sem := make(chan struct{}, jobs)
	errs := make([]error, len(defs))
	var wg sync.WaitGroup
	begin := time.Now()
	for i, def := range defs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := m.Start(ctx, def, vm.StartOptions{Paused: true})
			if err != nil && !errors.Is(err, vm.ErrAlreadyRunning) {
				errs[i] = fmt.Errorf("start %s: %w", def.Name, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "startpaused: %d vms started paused in %v\n", len(defs), time.Since(begin).Round(time.Millisecond))
	return nil
}
