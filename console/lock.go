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

// An interactive console holds an exclusive flock(2) on its lock file
// (Options.LockFile; in a VM's runtime directory) while it is attached.
// While held, the file contains the holder's PID in decimal and a newline,
// written once the holder is ready to be asked to detach; the holder
// empties it when it lets go. The lock belongs to the open file, so it is
// released when the holder exits, however it exits.

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
type holderLock struct {
	f    *os.File
	path string
}

// Takeover timing: how long a holder gets to let go after each signal.
const (
	takeoverGrace = 3 * time.Second
	takeoverPoll  = 20 * time.Millisecond
)

// lockConsole takes the console lock of VM name at path. When another
// process holds it, it returns an *InUseError, unless takeover is set: then
// the holder is asked to detach (SIGUSR1, which an attached vmtui handles
// by detaching; SIGTERM if it has not let go after a grace period) and the
// lock is taken once released. The lock file does not name this process
// until [holderLock.announce].
func lockConsole(path, name string, takeover bool) (*holderLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("console lock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("console lock: %w", err)
	}
	l := &holderLock{f: f, path: path}
	err = l.try()
	if errors.Is(err, unix.EWOULDBLOCK) {
		if !takeover {
			f.Close()
			return nil, &InUseError{Name: name, PID: holderPID(path)}
		}
		err = l.takeOver(name)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("console lock %q: %w", path, err)
	}
	// A holder that died left its PID: no one is to signal it.
	if err := f.Truncate(0); err != nil {
		l.release()
		return nil, fmt.Errorf("console lock %q: %w", path, err)
	}
	return l, nil
}

// announce records this process as the holder: from then on, another
// attach may send it SIGUSR1, so its handler must be installed before.
func (l *holderLock) announce() error {
	if _, err := l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return fmt.Errorf("console lock %q: %w", l.path, err)
	}
	if testHookAnnounced != nil {
		testHookAnnounced()
	}
	return nil
}

// testHookAnnounced, when set (by tests), runs as soon as the lock file
// names this process.
var testHookAnnounced func()

func (l *holderLock) try() error {
	for {
		err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// takeOver signals the holder and waits for the lock. Each holder the lock
// file names (once it has written its PID, so once it handles the request)
// gets SIGUSR1, then SIGTERM if it has not let go after a grace period.
func (l *holderLock) takeOver(name string) error {
	var (
		pid      int            // the holder signalled last
		sent     syscall.Signal // what it was sent last
		deadline time.Time      // when it is sent the next signal
		giveUp   = time.Now().Add(3 * takeoverGrace)
	)
	for {
		err := l.try()
		if err == nil || !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		now := time.Now()
		var sig syscall.Signal
		switch p := readHolder(l.path); {
		case !now.Before(giveUp) || (sent == syscall.SIGTERM && !now.Before(deadline)):
			if pid == 0 {
				return fmt.Errorf("take over the console of vm %s: its holder did not let go", name)
			}
			return fmt.Errorf("take over the console of vm %s: pid %d did not let go", name, pid)
		case p > 0 && p != pid:
			pid, sig = p, syscall.SIGUSR1
		case pid > 0 && sent == syscall.SIGUSR1 && !now.Before(deadline):
			sig = syscall.SIGTERM
		}
		if sig != 0 {
			if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
				return fmt.Errorf("take over the console of vm %s from pid %d: %w", name, pid, err)
			}
			sent, deadline = sig, now.Add(takeoverGrace)
		}
		time.Sleep(takeoverPoll)
	}
}

// holderPID reads the holder's PID from the lock file, allowing a moment
// for a holder that has just taken the lock to write it; 0 if there is none.
func holderPID(path string) int {
	for range 10 {
		if pid := readHolder(path); pid > 0 {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}

// readHolder returns the PID the lock file names, if that process has the
// file open; else 0.
func readHolder(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !holdsFile(pid, path) {
		return 0
	}
	return pid
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

// release empties the lock file and gives the lock up. (A holder that
// dies leaves its PID; readHolder checks that the process has the file
// open.)
func (l *holderLock) release() {
	l.f.Truncate(0)
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
}
