package console

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockFileName is the file in a VM's runtime directory (config.Paths.
// RuntimeFile) that an interactive console holds an exclusive flock(2) on
// while it is attached. It contains the holder's PID in decimal and a
// newline. The lock belongs to the open file, so it is released when the
// holder exits, however it exits.
const LockFileName = "console.lock"

// InUseError is returned when another process is attached to the console.
type InUseError struct {
	Name string // the VM
	PID  int    // the holder, 0 if it could not be read
}

func (e *InUseError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("console of vm %s is in use by %s; use --takeover to take it", e.Name, who)
}

// holderLock is a held console lock.
type holderLock struct{ f *os.File }

// Takeover timing: how long a holder gets to let go after each signal.
const (
	takeoverGrace = 3 * time.Second
	takeoverPoll  = 20 * time.Millisecond
)

// lockConsole takes the console lock of VM name at path and records this
// process as its holder. When another process holds it, it returns an
// *InUseError, unless takeover is set: then the holder is asked to detach
// (SIGUSR1, which an attached vmtui handles by detaching; SIGTERM if it has
// not let go after a grace period) and the lock is taken once released.
func lockConsole(path, name string, takeover bool) (*holderLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("console lock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("console lock: %w", err)
	}
	l := &holderLock{f: f}
	err = l.try()
	if errors.Is(err, unix.EWOULDBLOCK) {
		pid := holderPID(path)
		if !takeover {
			f.Close()
			return nil, &InUseError{Name: name, PID: pid}
		}
		err = l.takeOver(path, name, pid)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("console lock %q: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		l.release()
		return nil, fmt.Errorf("console lock %q: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		l.release()
		return nil, fmt.Errorf("console lock %q: %w", path, err)
	}
	return l, nil
}

func (l *holderLock) try() error {
	for {
		err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// takeOver signals the holder and waits for the lock.
func (l *holderLock) takeOver(path, name string, pid int) error {
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGTERM} {
		if pid > 0 && holdsFile(pid, path) {
			if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
				return fmt.Errorf("take over the console of vm %s from pid %d: %w", name, pid, err)
			}
		}
		deadline := time.Now().Add(takeoverGrace)
		for time.Now().Before(deadline) {
			err := l.try()
			if err == nil || !errors.Is(err, unix.EWOULDBLOCK) {
				return err
			}
			time.Sleep(takeoverPoll)
			if pid == 0 {
				pid = holderPID(path)
			}
		}
	}
	return fmt.Errorf("take over the console of vm %s: pid %d did not let go", name, pid)
}

// holderPID reads the holder's PID from the lock file, allowing a moment
// for a holder that has just taken the lock to write it.
func holderPID(path string) int {
	for range 10 {
		b, err := os.ReadFile(path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && holdsFile(pid, path) {
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}

// holdsFile reports whether process pid has the file at path open, so that
// a stale PID in the lock file never gets a signal meant for the holder.
func holdsFile(pid int, path string) bool {
	want, err := os.Stat(path)
	if err != nil {
		return false
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && os.SameFile(fi, want) {
			return true
		}
	}
	return false
}

// release gives the lock up. The PID stays in the file; holderPID checks
// that the process still has the file open.
func (l *holderLock) release() {
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
}
