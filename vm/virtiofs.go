package vm

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/seriallog"
)

// Shared folders: one virtiofsd (QEMU's C virtiofsd, a vhost-user back end)
// per share, serving the directory to the guest's virtio-fs driver over a
// unix socket in the VM's runtime directory.
//
// A virtiofsd must never outlive its VM, however the VM ends: stopped, QEMU
// killed, or vmtui killed in the middle of a start. So vmtui does not start
// the daemons itself: it starts a launcher, its own executable run again
// under the name launchArg0 (the package's init runs it, before main), in
// the session of its own that QEMU always gets. On its main thread, the
// launcher starts each virtiofsd in its process group, with the parent-death
// signal SIGKILL, and then executes QEMU in place of itself: QEMU keeps the
// launcher's PID, session and process group, and is the parent (that very
// thread) whose death kills the daemons. A virtiofsd also exits when QEMU
// disconnects; its sandbox child dies with it. Nothing of this depends on
// vmtui staying alive, and nothing is left when QEMU fails to start: the
// launcher's death, or QEMU's, ends the daemons.
//
// vmtui creates each share's listening socket (mode 0600) and hands it to
// virtiofsd (--fd), so that it exists before QEMU, which connects at start,
// looks for it. virtiofsd sandboxes itself in namespaces, which takes root:
// when vmtui does not run as root, virtiofsd runs in a user namespace of
// its own in which the user is root (files of other users show as nobody's). virtiofsd has no read-only mode: a read-only share is served
// by a virtiofsd started in a private mount namespace in which the directory
// is bind-mounted read-only, recursively (roArg0 prepares it, then executes
// virtiofsd). The guest's writes fail there with EROFS.

// DefaultVirtiofsd is the virtiofsd run when $VMTUI_VIRTIOFSD is not set:
// Debian's qemu-system-common installs QEMU's there.
const DefaultVirtiofsd = "/usr/lib/qemu/virtiofsd"

// Virtiofsd returns the virtiofsd binary vmtui runs for shares.
func Virtiofsd() string { return cmp.Or(os.Getenv("VMTUI_VIRTIOFSD"), DefaultVirtiofsd) }

// The names (argv[0]) under which vmtui's executable, run again, is the
// launcher of QEMU and its daemons, or the preparer of a read-only share.
const (
	launchArg0 = "vmtui-launch-qemu"
	roArg0     = "vmtui-virtiofsd-ro"
)

func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[0] {
	case launchArg0:
		runHelper(launch(os.Args[1]))
	case roArg0:
		runHelper(readOnlyExec(os.Args[1:]))
	}
}

// runHelper ends a helper run that failed, its error on the standard error
// (QEMU's log, or the share's virtiofsd log). A helper that succeeds has
// executed another program and never returns.
func runHelper(err error) {
	fmt.Fprintf(os.Stderr, "vmtui: %v\n", err)
	os.Exit(1)
}

// shareSocketName is the runtime file of share i's vhost-user socket.
func shareSocketName(i int) string { return "fs" + strconv.Itoa(i) + ".sock" }

// virtiofsdLogName is the log file (in the VM's log directory) of the
// virtiofsd of the share tagged tag.
func virtiofsdLogName(tag string) string { return "virtiofsd-" + tag + ".log" }

// checkSharePath refuses a share directory virtiofsd cannot be given
// safely: not absolute, or holding a character its option parser reads
// (-o source=PATH is split at commas, and a backslash escapes).
func checkSharePath(i int, path string) error {
	switch {
	case !filepath.IsAbs(path):
		return fmt.Errorf("shares[%d]: path %q is not absolute", i, path)
	case strings.ContainsAny(path, ",\\\x00\n"):
		return fmt.Errorf("shares[%d]: path %q holds a comma, backslash, NUL or newline, which virtiofsd's options cannot carry; share a directory whose path has none", i, path)
	}
	return nil
}

// shareFiles prepares the shares of a start of VM name: for each, its
// listening socket, recorded in spec.Shares[i].Socket, and its virtiofsd
// log, truncated. It returns them as pairs (socket, log) in share order, to
// be handed to the launcher after QEMU's own files. The caller closes them.
func (m *Manager) shareFiles(name string, spec *Spec) (files []*os.File, err error) {
	if len(spec.Shares) == 0 {
		return nil, nil
	}
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			files = nil
		}
	}()
	bin := Virtiofsd()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("start vm %s: shares need virtiofsd, and %q is not an executable (install qemu-system-common, or set $VMTUI_VIRTIOFSD)", name, bin)
	}
	for i := range spec.Shares {
		sh := &spec.Shares[i]
		if err := checkSharePath(i, sh.Path); err != nil {
			return files, fmt.Errorf("start vm %s: %w", name, err)
		}
		sock, err := m.paths.SocketPath(m.paths.RuntimeFile(name, shareSocketName(i)))
		if err != nil {
			return files, fmt.Errorf("start vm %s: shares[%d]: %w", name, i, err)
		}
		f, err := listenUnix(sock)
		if err != nil {
			return files, fmt.Errorf("start vm %s: shares[%d]: %w", name, i, err)
		}
		files = append(files, f)
		sh.Socket = sock
		logPath := filepath.Join(m.paths.LogDir(name), virtiofsdLogName(sh.Tag))
		lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
		if err != nil {
			return files, fmt.Errorf("start vm %s: shares[%d]: %w", name, i, err)
		}
		files = append(files, lf)
	}
	return files, nil
}

// launchPlan is what the launcher is told, as JSON in its argv[1].
type launchPlan struct {
	// QEMU is the emulator's path, Argv its arguments (argv[0] first).
	QEMU string
	Argv []string
	// Daemons are the virtiofsds to start first.
	Daemons []daemonPlan
}

// daemonPlan is one virtiofsd of the launcher.
type daemonPlan struct {
	Argv []string // argv[0] is the binary's path
	// ReadOnly serves Source read-only (see readOnlyExec).
	ReadOnly bool
	Source   string
	// SocketFD and LogFD are the launcher's descriptors of the listening
	// socket and of the log.
	SocketFD, LogFD int
}

// useLauncher turns cmd, QEMU's command whose ExtraFiles are QEMU's own
// files followed by shareFiles' pairs, into the launcher's: it starts the
// virtiofsds of spec.Shares and then executes QEMU with the same
// arguments, standard files and environment, and QEMU's own files at the
// same descriptors. A cmd whose binary was not found is left alone: its
// Start reports that.
func useLauncher(cmd *exec.Cmd, spec Spec, shareFiles int) error {
	if cmd.Err != nil || len(spec.Shares) == 0 {
		return nil
	}
	if shareFiles != 2*len(spec.Shares) || len(cmd.ExtraFiles) < shareFiles {
		return fmt.Errorf("vm %s: %d share files for %d shares", spec.Name, shareFiles, len(spec.Shares))
	}
	plan := launchPlan{QEMU: cmd.Path, Argv: cmd.Args}
	first := 3 + len(cmd.ExtraFiles) - shareFiles
	bin := Virtiofsd()
	for i, sh := range spec.Shares {
		plan.Daemons = append(plan.Daemons, daemonPlan{
			Argv:     []string{bin, "--fd=3", "-o", "source=" + sh.Path, "-o", "cache=auto"},
			ReadOnly: sh.ReadOnly, Source: sh.Path,
			SocketFD: first + 2*i, LogFD: first + 2*i + 1,
		})
	}
	b, err := json.Marshal(plan)
	if err != nil {
		return fmt.Errorf("vm %s: %w", spec.Name, err)
	}
	// The running executable, even if a newer one replaced its file.
	cmd.Path = "/proc/self/exe"
	cmd.Args = []string{launchArg0, string(b)}
	return nil
}

// launch is the launcher (see the top of this file). It runs in init, on
// the main thread, to which the runtime locks the main goroutine during
// initialisation: the daemons' parent-death signal is tied to the thread
// that started them, and the thread that executes QEMU survives the exec.
func launch(planJSON string) error {
	runtime.LockOSThread()
	var plan launchPlan
	if err := json.Unmarshal([]byte(planJSON), &plan); err != nil {
		return fmt.Errorf("launch qemu: %w", err)
	}
	if plan.QEMU == "" || len(plan.Argv) == 0 {
		return errors.New("launch qemu: no qemu to run")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("launch qemu: %w", err)
	}
	pgid := syscall.Getpid() // the session's leader, and its group's
	for i, d := range plan.Daemons {
		if len(d.Argv) == 0 || d.SocketFD < 3 || d.LogFD < 3 {
			return fmt.Errorf("launch qemu: share %d: bad plan", i)
		}
		path, argv := d.Argv[0], d.Argv
		sys := &syscall.SysProcAttr{Setpgid: true, Pgid: pgid, Pdeathsig: syscall.SIGKILL}
		if uid := os.Geteuid(); uid != 0 {
			// virtiofsd's sandbox needs root: the user's own, in a user
			// namespace where the user is root and nobody else exists.
			sys.Cloneflags = syscall.CLONE_NEWUSER
			sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
			sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		}
		if d.ReadOnly {
			path = self
			argv = append([]string{roArg0, d.Source}, d.Argv...)
			// Go makes the new namespace's mounts private before the exec.
			sys.Unshareflags = syscall.CLONE_NEWNS
		}
		_, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
			Env:   os.Environ(),
			Files: []uintptr{0, uintptr(d.LogFD), uintptr(d.LogFD), uintptr(d.SocketFD)},
			Sys:   sys,
		})
		if err != nil {
			return fmt.Errorf("launch qemu: start %s for %q: %w", d.Argv[0], d.Source, err)
		}
		// QEMU must hold neither the listener nor the log.
		syscall.CloseOnExec(d.SocketFD)
		syscall.CloseOnExec(d.LogFD)
	}
	err = syscall.Exec(plan.QEMU, plan.Argv, os.Environ())
	return fmt.Errorf("launch qemu: exec %s: %w", plan.QEMU, err)
}

// readOnlyExec runs in a private mount namespace (the launcher's
// Unshareflags): it bind-mounts args[0], the shared directory, onto itself
// read-only, with every mount under it, then executes virtiofsd
// (args[1:]), which sees only that.
func readOnlyExec(args []string) error {
	if len(args) < 2 {
		return errors.New("read-only share: no directory or virtiofsd")
	}
	dir := args[0]
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("read-only share %q: bind mount: %w", dir, err)
	}
	err := unix.MountSetattr(unix.AT_FDCWD, dir, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.12: only the directory's own mount, without
		// the mounts under it, which could not be made read-only.
		if err = unix.Unmount(dir, unix.MNT_DETACH); err == nil {
			if err = unix.Mount(dir, dir, "", unix.MS_BIND, ""); err == nil {
				err = unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
			}
		}
	}
	if err != nil {
		return fmt.Errorf("read-only share %q: %w", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("read-only share %q: %w", dir, err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return fmt.Errorf("read-only share %q: still writable after the read-only mount", dir)
	}
	err = syscall.Exec(args[1], args[1:], os.Environ())
	return fmt.Errorf("read-only share %q: exec %s: %w", dir, args[1], err)
}

// shareLogs returns the last lines of the virtiofsd logs of a failed start
// of VM name, each after a line naming it, or "".
func (m *Manager) shareLogs(name string, spec Spec) string {
	var b strings.Builder
	for _, sh := range spec.Shares {
		path := filepath.Join(m.paths.LogDir(name), virtiofsdLogName(sh.Tag))
		last, _ := seriallog.Tail(path, 10)
		if s := strings.TrimSpace(string(last)); s != "" {
			fmt.Fprintf(&b, "\nvirtiofsd of share %s (%s):\n%s", sh.Tag, path, s)
		}
	}
	return b.String()
}

// cleanupShares removes the sockets of a stopped VM's shares.
func (m *Manager) cleanupShares(name string) {
	for i := range config.MaxShares {
		if p, err := m.paths.SocketPath(m.paths.RuntimeFile(name, shareSocketName(i))); err == nil {
			os.Remove(p)
		}
	}
}
