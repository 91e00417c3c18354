package vm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// The test guests of the integration tests: each test gets a state root of
// its own (store.HomePaths of a temporary directory), defines guests of the
// test guest's kernel and initramfs in it, and kills whatever QEMU still
// runs under that root when it ends, however it ends.

// opTimeout bounds one Manager call in these tests (a start included).
const opTimeout = 90 * time.Second

// guestEnv is one test's state root and its Manager.
type guestEnv struct {
	t              *testing.T
	home           string
	paths          *store.Paths
	m              *vm.Manager
	kernel, initrd string
}

// newGuestEnv returns a fresh state root with a Manager using TCG. It skips
// (fails in CI) when QEMU or the test guest is unavailable, and kills every
// QEMU whose pidfile lies under the root when the test ends.
func newGuestEnv(t *testing.T) *guestEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs")
	}
	testguest.QEMU(t)
	kernel, initrd := testguest.Paths(t)
	home := t.TempDir()
	e := &guestEnv{t: t, home: home, paths: store.HomePaths(home), kernel: kernel, initrd: initrd}
	e.m = e.newManager()
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		killQEMUs(t, home)
		// Let the Manager remove the stale runtime files, sockets in the
		// shared fallback directory included.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.m.List(ctx)
	})
	return e
}

// newManager returns another Manager of the same state root, with a store
// of its own, as another vmtui process would have.
func (e *guestEnv) newManager() *vm.Manager {
	e.t.Helper()
	store, err := store.Open(e.paths)
	if err != nil {
		e.t.Fatal(err)
	}
	m := vm.NewManager(store)
	m.Accel = "tcg" // KVM guests hang on the machines these tests run on
	return m
}

// define defines a test guest called name, its kernel command line
// extended by params.
func (e *guestEnv) define(name string, params ...string) *config.VM {
	e.t.Helper()
	def := &config.VM{
		Name: name, Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd,
		Append: strings.Join(append([]string{testguest.Cmdline}, params...), " "),
	}
	if err := e.m.Store().Create(def); err != nil {
		e.t.Fatalf("define %s: %v", name, err)
	}
	return def
}

// start starts def and fails the test if it does not start.
func (e *guestEnv) start(def *config.VM, opts vm.StartOptions) vm.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	st, err := e.m.Start(ctx, def, opts)
	if err != nil {
		e.t.Fatalf("start %s: %v\nqemu log:\n%s", def.Name, err, readFile(e.paths.QEMULog(def.Name)))
	}
	return st
}

// status returns the VM's row of Manager.List.
func (e *guestEnv) status(m *vm.Manager, name string) vm.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	list, err := m.List(ctx)
	if err != nil {
		e.t.Fatalf("list: %v", err)
	}
	for _, st := range list {
		if st.Name == name {
			return st
		}
	}
	e.t.Fatalf("list: no vm %s in %+v", name, list)
	return vm.Status{}
}

// waitSerial waits until the VM's serial log contains want and returns the
// log.
func (e *guestEnv) waitSerial(name, want string, timeout time.Duration) string {
	e.t.Helper()
	path := e.paths.SerialLog(name)
	deadline := time.Now().Add(timeout)
	for {
		log := readFile(path)
		if strings.Contains(log, want) {
			return log
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("vm %s: no %q in the serial log after %v:\n%s\nqemu log:\n%s",
				name, want, timeout, log, readFile(e.paths.QEMULog(name)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requireNoRuntimeFiles fails the test if any runtime file of a stopped VM
// is left: pidfile, pty, boot ID, stopping marker, or either QMP socket
// (wherever SocketPath put it). The lock file may stay.
func (e *guestEnv) requireNoRuntimeFiles(name string) {
	e.t.Helper()
	files := []string{
		e.paths.PIDFile(name), e.paths.PTYFile(name), e.paths.BootIDFile(name),
		e.paths.RuntimeFile(name, "stopping"),
		e.paths.RuntimeFile(name, store.QMPSocketName), e.paths.RuntimeFile(name, store.EventsSocketName),
	}
	for _, sock := range []func(string) (string, error){e.paths.QMPSocket, e.paths.EventsSocket} {
		p, err := sock(name)
		if err != nil {
			e.t.Fatal(err)
		}
		files = append(files, p)
	}
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			ents, _ := os.ReadDir(e.paths.RuntimeDir(name))
			var names []string
			for _, ent := range ents {
				names = append(names, ent.Name())
			}
			e.t.Errorf("vm %s: %s left behind (runtime directory holds %q)", name, f, names)
		}
	}
}

// qemuPIDs returns the live (not zombie) qemu-system processes whose
// command line names pidfile; with prefix set, those whose pidfile is
// under the directory pidfile instead.
func qemuPIDs(pidfile string, prefix bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || !alive(pid) {
			continue
		}
		argv := cmdline(pid)
		if len(argv) == 0 || !strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
			continue
		}
		for i := 0; i+1 < len(argv); i++ {
			if argv[i] != "-pidfile" {
				continue
			}
			if argv[i+1] == pidfile || prefix && strings.HasPrefix(argv[i+1], pidfile+"/") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// cmdline returns a process's argv, or nil.
func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// alive reports whether pid is a process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// waitGone waits until pid has exited (or is a zombie).
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still alive after %v", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// killQEMUs kills every QEMU whose pidfile is under dir and waits for them
// to die.
func killQEMUs(t *testing.T, dir string) {
	t.Helper()
	for _, pid := range qemuPIDs(dir, true) {
		t.Logf("cleanup: killing QEMU %d left running", pid)
		syscall.Kill(pid, syscall.SIGKILL)
		if err := waitGone(pid, time.Minute); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// tick is one line "vmtui tick N UPTIME" of a guest booted with
// testguest.TickParam.
type tick struct {
	n  int
	up float64 // the guest's uptime (its own clock), in seconds
}

var tickRE = regexp.MustCompile(`vmtui tick (\d+) (\d+\.\d+)\r?\n`)

// ticks returns the complete tick lines of a serial log.
func ticks(log string) []tick {
	var out []tick
	for _, m := range tickRE.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		up, _ := strconv.ParseFloat(m[2], 64)
		out = append(out, tick{n, up})
	}
	return out
}

// lastTick returns the last complete tick line of a serial log, the zero
// tick when there is none.
func lastTick(log string) tick {
	t := ticks(log)
	if len(t) == 0 {
		return tick{}
	}
	return t[len(t)-1]
}

// waitTick waits until the VM's serial log holds the complete tick line n
// and returns its ticks.
func (e *guestEnv) waitTick(name string, n int, timeout time.Duration) []tick {
	e.t.Helper()
	path := e.paths.SerialLog(name)
	deadline := time.Now().Add(timeout)
	for {
		log := readFile(path)
		if t := ticks(log); len(t) > 0 && t[len(t)-1].n >= n {
			return t
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("vm %s: no tick %d in the serial log after %v:\n%s", name, n, timeout, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The vmtui binary, for the tests that run the command line as a separate
// process (killing it mid-start, two of them starting one VM).
var cli struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// vmtuiBinary builds the vmtui command once per test binary.
func vmtuiBinary(t *testing.T) string {
	t.Helper()
	cli.once.Do(func() {
		cli.dir, cli.err = os.MkdirTemp("", "vmtui-vmtest-")
		if cli.err != nil {
			return
		}
		cli.path = filepath.Join(cli.dir, "vmtui")
		out, err := exec.Command("go", "build", "-o", cli.path, "github.com/vmtui/vmtui").CombinedOutput()
		if err != nil {
			cli.err = fmt.Errorf("go build vmtui: %v\n%s", err, out)
		}
	})
	if cli.err != nil {
		t.Fatal(cli.err)
	}
	return cli.path
}

// vmtuiCmd returns a command running vmtui on the state root.
func (e *guestEnv) vmtuiCmd(args ...string) *exec.Cmd {
	e.t.Helper()
	cmd := exec.Command(vmtuiBinary(e.t), args...)
	cmd.Env = append(os.Environ(), "VMTUI_HOME="+e.home, "VMTUI_ACCEL=tcg")
	return cmd
}

// cliResult is one run of vmtui.
type cliResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// run runs vmtui to completion.
func (e *guestEnv) run(args ...string) cliResult {
	e.t.Helper()
	cmd := e.vmtuiCmd(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("vmtui %q: %v", args, err)
	}
	return r
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cli.dir != "" {
		os.RemoveAll(cli.dir)
	}
	os.Exit(code)
}
