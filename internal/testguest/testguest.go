// Package testguest finds vmtui's test guest for tests that boot real VMs:
// Debian's cloud kernel and a busybox initramfs, built and cached by the
// repository's guest/build.sh (never committed).
//
// The guest prints [Banner] on its serial console once it is up, keeps a
// shell ([Prompt]) on that console, respawned when it exits, and powers off
// on an ACPI power-button event (QMP system_powerdown), after printing
// [PowerOffMessage]. Boot it with [Cmdline] under TCG:
//
//	qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -display none \
//		-machine q35 -m 128M -kernel KERNEL -initrd INITRD \
//		-append 'console=ttyS0 quiet panic=-1' \
//		-chardev pty,id=ser0,logfile=serial.log -serial chardev:ser0
//
// The guest loads the virtio disk and network drivers: disks attached as
// virtio-blk-pci are /dev/vda..., named by their serial number in
// /sys/block/vdX/serial, and a virtio-net-pci NIC is eth0. [RunScript] boots
// it with disks attached, runs a shell script in it and returns what the
// script printed.
//
// Tests that need the guest call [Paths]. When the guest cannot be built (no
// apt, no network, a tool missing) they skip on a developer's machine and
// fail when the CI environment variable is set.
package testguest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// Banner starts the line /init prints on the serial console when the
	// guest is ready; the kernel release follows it
	// ("vmtui test guest ready: Linux 6.1.0-56-cloud-amd64").
	Banner = "vmtui test guest ready"

	// PowerOffMessage is printed on the serial console when the guest
	// handles the ACPI power button, just before it powers off.
	PowerOffMessage = "vmtui test guest powering off"

	// Prompt is the guest shell's prompt. Busybox's line editing also sends
	// a cursor-position query (ESC [6n) after it: match substrings, not
	// whole lines.
	Prompt = "vmtui-guest# "

	// Cmdline is the kernel command line for the guest: the serial port
	// as console, no kernel messages below warnings, and reboot at once on
	// a panic (QEMU exits instead when started with -no-reboot).
	Cmdline = "console=ttyS0 quiet panic=-1"

	// IgnorePowerdownParam, appended to Cmdline, makes the guest ignore
	// the ACPI power button (for tests of forced stops).
	IgnorePowerdownParam = "vmtui.powerdown=ignore"

	// TickParam, appended to Cmdline with a number of seconds
	// ("vmtui.tick=1"), makes the guest print "vmtui tick N UPTIME" on
	// the serial console every so often (for tests of pause and unpause).
	TickParam = "vmtui.tick="

	// ScriptParam, appended to Cmdline with a disk serial number
	// ("vmtui.script=vmtui-script"), makes the guest run, once ready, the
	// shell script held by the virtio disk with that serial (the script,
	// then NUL bytes to the disk's end), between a ScriptStart line and a
	// ScriptExit line that ends with the script's exit status.
	// ScriptPoweroffParam makes it power off after that.
	ScriptParam         = "vmtui.script="
	ScriptPoweroffParam = "vmtui.script.after=poweroff"
	ScriptStart         = "vmtui script start"
	ScriptExit          = "vmtui script exit "

	// Machine is the recommended machine type; "pc" works as well.
	Machine = "q35"

	// Memory is the recommended guest memory, in scan_scaled syntax, and
	// MemoryBytes the same in bytes. The cloud kernel needs about 72 MiB
	// to boot at all (MinMemory): at 64 MiB it stops before printing
	// anything, at 68 MiB the initramfs no longer fits.
	Memory      = "128M"
	MemoryBytes = 128 << 20
	MinMemory   = "72M"

	// BootTimeout bounds the wait for Banner. Under TCG the guest is
	// ready in about 3 s on an idle machine; the margin is for loaded CI
	// machines and several guests booting at once.
	BootTimeout = 60 * time.Second

	// PowerOffTimeout bounds the wait for QEMU to exit after
	// system_powerdown (well under 1 s when idle).
	PowerOffTimeout = 30 * time.Second
)

// buildTimeout bounds guest/build.sh: a download of about 27 MB the first
// time, well under a second once the cache is complete.
const buildTimeout = 10 * time.Minute

var build struct {
	once           sync.Once
	kernel, initrd string
	err            error
}

// Paths returns the kernel and initramfs of the test guest, running
// guest/build.sh once per test binary to build or check the cache
// ($VMTUI_GUEST_DIR, default <repo>/.cache/guest). If the guest cannot be
// built, the test is skipped, or fails when $CI is set.
func Paths(t testing.TB) (kernel, initrd string) {
	t.Helper()
	build.once.Do(func() {
		build.kernel, build.initrd, build.err = runBuild()
	})
	if build.err != nil {
		unavailable(t, "test guest: %v", build.err)
	}
	return build.kernel, build.initrd
}

// QEMU returns the path of qemu-system-x86_64. If it is not installed, the
// test is skipped, or fails when $CI is set.
func QEMU(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		unavailable(t, "test guest: %v (apt-get install qemu-system-x86)", err)
	}
	return path
}

// InCI reports whether the tests run in CI, where a missing tool is a
// failure rather than a reason to skip.
func InCI() bool {
	return os.Getenv("CI") != ""
}

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (skipped: CI is not set)", args...)
}

func runBuild() (kernel, initrd string, err error) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		return "", "", err
	}
	script, err := findScript()
	if err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bash, script)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("%s: %w\n%s", script, err, strings.TrimSpace(stderr.String()))
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), "=")
		switch key {
		case "kernel":
			kernel = value
		case "initrd":
			initrd = value
		}
	}
	if kernel == "" || initrd == "" {
		return "", "", fmt.Errorf("%s printed no kernel= and initrd= lines:\n%s", script, stdout.String())
	}
	for _, p := range []string{kernel, initrd} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("%s: %w", script, err)
		}
	}
	return kernel, initrd, nil
}

// findScript looks for guest/build.sh next to go.mod in the working
// directory (a package directory under go test) or one of its parents.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		script := filepath.Join(dir, "guest", "build.sh")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(script); err != nil {
				return "", fmt.Errorf("find the guest build script: %w", err)
			}
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find the guest build script: no go.mod above the working directory")
		}
		dir = parent
	}
}
