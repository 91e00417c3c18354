package testguest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// TestBootShellPowerdown boots the guest with QEMU directly, waits for the
// banner in the serial log, runs a command in the serial shell and powers
// the guest off through QMP.
func TestBootShellPowerdown(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	kernel, initrd := Paths(t)
	qemu := QEMU(t)

	dir := shortTempDir(t)
	serialLog := filepath.Join(dir, "serial.log")
	qmpSocket := filepath.Join(dir, "qmp.sock")
	stderr, err := os.Create(filepath.Join(dir, "qemu.err"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	cmd := exec.Command(qemu,
		"-accel", "tcg",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-machine", Machine, "-m", Memory, "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", Cmdline,
		"-chardev", "pty,id=ser0,logfile="+serialLog,
		"-serial", "chardev:ser0",
		"-qmp", "unix:"+qmpSocket+",server=on,wait=off",
	)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	// No orphan when the test binary dies without running its cleanups
	// (a -timeout panic, a signal).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	qemuErr := func() string {
		b, _ := os.ReadFile(stderr.Name())
		return strings.TrimSpace(string(b))
	}

	// The banner reaches the serial log.
	var banner string
	err = poll(start.Add(BootTimeout), exited, func() bool {
		b, _ := os.ReadFile(serialLog)
		if i := bytes.Index(b, []byte(Banner)); i >= 0 {
			line, _, _ := strings.Cut(string(b[i:]), "\n")
			banner = strings.TrimSpace(line)
			return true
		}
		return false
	})
	if err != nil {
		log, _ := os.ReadFile(serialLog)
		t.Fatalf("wait for the banner: %v\nserial log:\n%s\nqemu:\n%s", err, log, qemuErr())
	}
	t.Logf("%q after %v", banner, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(banner, "Linux ") {
		t.Errorf("banner %q: no kernel release", banner)
	}

	qmp, err := dialQMP(qmpSocket, time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatalf("QMP: %v\nqemu:\n%s", err, qemuErr())
	}
	defer qmp.conn.Close()

	// The shell answers on the serial pty.
	pts, err := serialPTY(qmp, "ser0")
	if err != nil {
		t.Fatal(err)
	}
	out, err := shellCommand(pts, "echo $((6*7))", "\n42\r", BootTimeout)
	if err != nil {
		t.Fatalf("shell on %s: %v\ngot output:\n%q", pts, err, out)
	}

	// system_powerdown makes the guest power off and QEMU exit 0.
	powerdown := time.Now()
	qmp.conn.SetDeadline(powerdown.Add(30 * time.Second))
	if _, err := qmp.execute("system_powerdown", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(PowerOffTimeout):
		log, _ := os.ReadFile(serialLog)
		t.Fatalf("QEMU still running %v after system_powerdown\nserial log:\n%s", PowerOffTimeout, log)
	}
	t.Logf("QEMU exited %v after system_powerdown", time.Since(powerdown).Round(time.Millisecond))
	if waitErr != nil {
		t.Errorf("QEMU: %v\n%s", waitErr, qemuErr())
	}
	if log, _ := os.ReadFile(serialLog); !bytes.Contains(log, []byte(PowerOffMessage)) {
		t.Errorf("serial log lacks %q:\n%s", PowerOffMessage, log)
	}
}

// shortTempDir returns a temporary directory whose paths fit in a unix
// socket address (108 bytes), removed when the test ends.
func shortTempDir(t *testing.T) string {
	t.Helper()
	parent := ""
	if len(os.TempDir()) > 60 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "vmtui-tg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// poll calls cond every 50 ms until it returns true, the deadline passes
// or QEMU exits.
func poll(deadline time.Time, exited <-chan struct{}, cond func() bool) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-exited:
			if cond() {
				return nil
			}
			return errors.New("QEMU exited")
		case <-tick.C:
		}
	}
	return nil
}

// qmpConn is a minimal QMP client for this test; vmtui's own lives in vm/qmp.
type qmpConn struct {
	conn net.Conn
	dec  *json.Decoder
}

func dialQMP(path string, deadline time.Time) (*qmpConn, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(deadline)
	q := &qmpConn{conn: conn, dec: json.NewDecoder(conn)}
	var greeting struct{ QMP json.RawMessage }
	if err := q.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("read the greeting: %v", err)
	}
	if _, err := q.execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// execute runs one command and returns its result, skipping events.
func (q *qmpConn) execute(command string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": command, "id": command}
	if args != nil {
		req["arguments"] = args
	}
	if err := json.NewEncoder(q.conn).Encode(req); err != nil {
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	for {
		var resp struct {
			Event  string
			Return json.RawMessage
			Error  *struct{ Class, Desc string }
		}
		if err := q.dec.Decode(&resp); err != nil {
			return nil, fmt.Errorf("%s: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("%s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		}
		return resp.Return, nil
	}
}

// serialPTY returns the pty of chardev label from query-chardev.
func serialPTY(q *qmpConn, label string) (string, error) {
	ret, err := q.execute("query-chardev", nil)
	if err != nil {
		return "", err
	}
	var devs []struct{ Label, Filename string }
	if err := json.Unmarshal(ret, &devs); err != nil {
		return "", fmt.Errorf("query-chardev: %w", err)
	}
	for _, d := range devs {
		if d.Label == label {
			if pts, ok := strings.CutPrefix(d.Filename, "pty:"); ok {
				return pts, nil
			}
			return "", fmt.Errorf("chardev %s is %q, not a pty", label, d.Filename)
		}
	}
	return "", fmt.Errorf("no chardev %s in %s", label, ret)
}

// shellCommand opens the pty in raw mode and types line until the output
// contains want. It retries because QEMU 7.2 drops what the guest writes
// until it notices, by polling, that the pty was opened.
func shellCommand(pts, line, want string, timeout time.Duration) (string, error) {
	f, err := os.OpenFile(pts, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := makeRaw(f); err != nil {
		return "", fmt.Errorf("raw mode: %w", err)
	}
	var out bytes.Buffer
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := f.WriteString(line + "\r"); err != nil {
			return out.String(), err
		}
		f.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := f.Read(buf)
			out.Write(buf[:n])
			if strings.Contains(out.String(), want) {
				return out.String(), nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return out.String(), err
			}
		}
	}
	return out.String(), fmt.Errorf("no %q within %v", want, timeout)
}

// makeRaw puts a terminal in raw mode, as cfmakeraw(3): in particular no
// echo, which would send the guest's output back to it as input.
func makeRaw(f *os.File) error {
	// Not f.Fd(): it would put the file in blocking mode, and read
	// deadlines would stop working.
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	err = rc.Control(func(fd uintptr) {
		var tio syscall.Termios
		if _, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCGETS, uintptr(unsafe.Pointer(&tio))); errno != 0 {
			return
		}
		tio.Iflag &^= syscall.IGNBRK | syscall.BRKINT | syscall.PARMRK | syscall.ISTRIP |
			syscall.INLCR | syscall.IGNCR | syscall.ICRNL | syscall.IXON
		tio.Oflag &^= syscall.OPOST
		tio.Lflag &^= syscall.ECHO | syscall.ECHONL | syscall.ICANON | syscall.ISIG | syscall.IEXTEN
		tio.Cflag &^= syscall.CSIZE | syscall.PARENB
		tio.Cflag |= syscall.CS8
		tio.Cc[syscall.VMIN] = 1
		tio.Cc[syscall.VTIME] = 0
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCSETS, uintptr(unsafe.Pointer(&tio)))
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// TestRunScript runs a script in the guest with a virtio disk and a virtio
// NIC: the drivers are loaded, the disk is found by its serial number and
// reads and writes the image's bytes, and the NIC is eth0.
func TestRunScript(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	dir := t.TempDir()
	image := filepath.Join(dir, "disk.raw")
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	if err := os.WriteFile(image, data, 0o644); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:12:34:56"
	out := RunScript(t, Script{
		Text: `set -e
for d in /sys/block/vd*; do echo "disk ${d##*/} $(cat $d/serial) $(cat $d/size)"; done
echo "read $(head -c 16 /dev/vdb)"
printf 'written by the guest' | dd of=/dev/vdb bs=4096 seek=1 conv=notrunc 2>/dev/null
echo "net $(cat /sys/class/net/eth0/address) $(basename $(readlink /sys/class/net/eth0/device/driver))"
`,
		Disks: []Disk{{Path: image, Format: "raw", Serial: "data"}},
		Args:  []string{"-nic", "user,model=virtio-net-pci,mac=" + mac},
	})
	for _, want := range []string{
		"disk vda vmtui-script 8\n", // the script's 4 KiB, in sectors
		"disk vdb data 128\n",
		"read 0123456789abcdef\n",
		"net " + mac + " virtio_net\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("script output lacks %q:\n%s", want, out)
		}
	}
	got, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[4096:], "written by the guest")
	if !bytes.Equal(got, data) {
		t.Errorf("the image after the guest wrote into it: got %q..., want %q...", got[4096:4128], data[4096:4128])
	}
}

func TestScriptOutput(t *testing.T) {
	for _, tc := range []struct {
		log, out string
		status   int
		err      bool
	}{
		{log: "ready\nvmtui script start\nhello\nvmtui script exit 0\nreboot\n", out: "hello\n"},
		{log: "vmtui script start\nvmtui script exit 3\n", out: "", status: 3},
		{log: "vmtui script start\necho vmtui script exit 9\nvmtui script exit 0\n", out: "echo vmtui script exit 9\n"},
		{log: "vmtui script start\nhalf", err: true},
		{log: "ready\n", err: true},
		{log: "vmtui script start\nvmtui script exit x\n", err: true},
	} {
		out, status, err := scriptOutput(tc.log)
		if (err != nil) != tc.err || err == nil && (out != tc.out || status != tc.status) {
			t.Errorf("scriptOutput(%q) = %q, %d, %v; want %q, %d, error %v", tc.log, out, status, err, tc.out, tc.status, tc.err)
		}
	}
}
