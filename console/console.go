package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/vmtui/vmtui/internal/seriallog"
)

// Errors that end a session other than by detaching.
var (
	// ErrNoConsole is vmctl's "console not found": the VM is not running
	// or has no serial pty.
	ErrNoConsole = errors.New("console not found")
	// ErrGuestStopped means the pty was closed under the session: QEMU
	// exited (the guest powered off, or QEMU was killed).
	ErrGuestStopped = errors.New("console closed: guest stopped")
	// ErrTakenOver means another attach took the console over.
	ErrTakenOver = errors.New("console taken over")
	// ErrTerminated means vmtui received SIGTERM or SIGHUP, or the
	// context ended.
	ErrTerminated = errors.New("console closed: terminated")
)

// defaultRows is the screenful replayed from the log when the terminal's
// size is unknown.
const defaultRows = 24

// relayBufSize is the size of each direction's read buffer: a whole burst
// of guest output in one read and one write.
const relayBufSize = 64 << 10

// Options say which console to attach to and how: the caller names the
// VM's files (the store's paths), so that this package knows nothing of
// where they live.
type Options struct {
	// Name is the VM's name, for messages.
	Name string
	// TTY is the serial console's pty, "/dev/pts/N".
	TTY string
	// SerialLog is the log whose tail is shown on attach ("" for none).
	SerialLog string
	// LockFile is the console lock ("" for none: no exclusion).
	LockFile string
	// Escape is the escape character (0 means DefaultEscape, NoKey none).
	Escape int
	// DetachKey detaches anywhere (0 means DefaultDetachKey, NoKey none).
	DetachKey int
	// Takeover takes the console from another session instead of
	// failing with *InUseError.
	Takeover bool
	// TailLines is how many lines of the log to show on attach; 0 means
	// the terminal's height (24 when unknown), a negative number none.
	TailLines int
	// Stdin, Stdout and Stderr are the user's terminal; nil means the
	// process's. Stdin is put in raw mode when it is a terminal. The
	// guest's output goes to Stdout, vmtui's messages to Stderr.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

func (o *Options) defaults() {
	if o.Escape == 0 {
		o.Escape = DefaultEscape
	}
	if o.DetachKey == 0 {
		o.DetachKey = DefaultDetachKey
	}
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
}

// Attach connects the user's terminal to the console of a running VM until
// the user detaches (it returns nil), the pty closes (ErrGuestStopped),
// another session takes over (ErrTakenOver), or ctx ends or SIGTERM or
// SIGHUP arrives (ErrTerminated); errors name the VM. The terminal is
// restored before Attach returns or panics.
func Attach(ctx context.Context, opts Options) (err error) {
	opts.defaults()
	if opts.TTY == "" {
		return fmt.Errorf("vm %s: %w", opts.Name, ErrNoConsole)
	}
	// Handle takeover requests before the lock file names us: from that
	// instant another attach may send SIGUSR1. Unhandled, it would be lost
	// (a Go program ignores SIGUSR1 unless notified) and the taker would
	// kill this process with SIGTERM after its grace period. A request
	// that comes before the session runs waits in takenOver and ends the
	// session as soon as it runs.
	takenOver, stopTakeover := watchTakeover()
	defer stopTakeover()
	if opts.LockFile != "" {
		lock, err := lockConsole(opts.LockFile, opts.Name, opts.Takeover)
		if err != nil {
			return err
		}
		defer lock.release()
		// A request that came before the lock file named us was for the
		// holder we took over from, in this process (the TUI, or tests).
		drain(takenOver)
		if err := lock.announce(); err != nil {
			return err
		}
	}

	// O_NOCTTY: the VM's pty must never become vmtui's controlling
	// terminal.
	ptyFile, err := os.OpenFile(opts.TTY, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.EIO) {
			return fmt.Errorf("vm %s: %w", opts.Name, ErrNoConsole)
		}
		return fmt.Errorf("vm %s: open console: %w", opts.Name, err)
	}
	defer ptyFile.Close()
	// QEMU made the pty raw; make sure no one changed that (an echoing
	// pty would send the guest's output back to it).
	if err := control(ptyFile, func(fd int) error { _, err := term.MakeRaw(fd); return err }); err != nil {
		return fmt.Errorf("vm %s: console %s: %w", opts.Name, opts.TTY, err)
	}

	s := &session{opts: opts, pty: ptyFile}
	s.stdout = &lockedWriter{w: opts.Stdout, mu: &s.outMu}
	s.stderr = &lockedWriter{w: opts.Stderr, mu: &s.outMu}
	if f, ok := opts.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		s.termFD = int(f.Fd())
		old, err := term.MakeRaw(s.termFD)
		if err != nil {
			return fmt.Errorf("vm %s: raw mode: %w", opts.Name, err)
		}
		s.restore = sync.OnceFunc(func() { term.Restore(s.termFD, old) })
	} else {
		s.termFD = -1
		s.restore = func() {}
	}
	defer s.restore() // runs while panicking, too

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	rows := s.resize()

	s.printf("Connected to %s (vm %s).\r\n%s\r\n", opts.TTY, opts.Name, detachHint(opts.Escape, opts.DetachKey))
	if opts.SerialLog != "" && opts.TailLines >= 0 {
		n := opts.TailLines
		if n == 0 {
			if rows <= 0 {
				rows = defaultRows
			}
			// A screenful, less the two lines above.
			n = max(1, rows-2)
		}
		if b, err := seriallog.Tail(opts.SerialLog, n); err == nil && len(b) > 0 {
			s.stdout.Write(seriallog.Replayable(b))
		}
	}

	c, err := newCanceler()
	if err != nil {
		return fmt.Errorf("vm %s: %w", opts.Name, err)
	}
	defer c.close() // after both readers are done: deferred calls run last first
	in := s.input(c)
	var ptyFD int
	control(ptyFile, func(fd int) error { ptyFD = fd; return nil })
	// The pty is in non-blocking mode (os.OpenFile put it in Go's poller).
	guest := &pollReader{fd: ptyFD, c: c, name: opts.TTY, nonblock: true}
	done := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer s.recoverPanic()
		done <- s.fromGuest(guest)
	}()
	inDone := make(chan struct{})
	go func() {
		defer close(inDone)
		defer s.recoverPanic()
		done <- s.toGuest(in)
	}()

	var end error
	for end == nil {
		select {
		case e := <-done:
			end = e
		case <-winch:
			s.resize()
		case <-sigs:
			end = ErrTerminated
		case <-ctx.Done():
			end = ErrTerminated
		case <-takenOver:
			end = ErrTakenOver
		}
	}
	// Stop both directions. The user's reader stops without taking a key
	// from whoever reads the terminal next (the TUI). The pty stays open
	// until its reader has stopped: it reads the descriptor itself.
	c.cancel()
	wg.Wait()
	if s.cancelable {
		<-inDone
	}
	if end == errDetached {
		s.printf("\r\n[detached from vm %s]\r\n", opts.Name)
		end = nil
	} else {
		s.printf("\r\n")
		end = fmt.Errorf("vm %s: %w", opts.Name, end)
	}
	s.restore()
	return end
}

// errDetached ends a session at the user's request.
var errDetached = errors.New("detached")

// session is one attached console.
type session struct {
	opts           Options
	pty            *os.File
	stdout, stderr *lockedWriter
	outMu          sync.Mutex // serialises writes to Stdout and Stderr
	termFD         int        // the user's terminal in raw mode, or -1
	restore        func()     // restores the user's terminal; idempotent
	cancelable     bool       // the input reader stops when cancelled
}

// printf writes a message of vmtui's to the user.
func (s *session) printf(format string, args ...any) {
	fmt.Fprintf(s.stderr, format, args...)
}

// recoverPanic restores the terminal before a panic in a relay goroutine
// ends the program.
func (s *session) recoverPanic() {
	if r := recover(); r != nil {
		s.restore()
		panic(r)
	}
}

// resize copies the user's window size to the pty and returns the number
// of rows (0 when unknown).
func (s *session) resize() int {
	var f *os.File
	switch {
	case s.termFD >= 0:
		f = s.opts.Stdin.(*os.File)
	default:
		if o, ok := s.opts.Stdout.(*os.File); ok && term.IsTerminal(int(o.Fd())) {
			f = o
		}
	}
	if f == nil {
		return 0
	}
	ws, err := pty.GetsizeFull(f)
	if err != nil {
		return 0
	}
	control(s.pty, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols, Xpixel: ws.X, Ypixel: ws.Y})
	})
	return int(ws.Rows)
}

// control runs fn on f's descriptor without f.Fd, which would put f in
// blocking mode: a blocked Read could then not be interrupted by Close.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// fromGuest copies the guest's output to the user until the pty closes.
func (s *session) fromGuest(guest io.Reader) error {
	buf := make([]byte, relayBufSize)
	for {
		n, err := guest.Read(buf)
		if n > 0 {
			if _, werr := s.stdout.Write(buf[:n]); werr != nil {
				return fmt.Errorf("write to terminal: %w", werr)
			}
		}
		if err != nil {
			if errors.Is(err, errCanceled) {
				return nil
			}
			// EIO (or EOF) once QEMU has closed the pty's master side.
			return ErrGuestStopped
		}
	}
}

// toGuest copies what the user types to the guest, through the escapes.
func (s *session) toGuest(in io.Reader) error {
	buf := make([]byte, relayBufSize)
	out := make([]byte, 0, relayBufSize+1)
	esc := newEscaper(s.opts.Escape, s.opts.DetachKey)
	for {
		n, err := in.Read(buf)
		data := buf[:n]
		for len(data) > 0 {
			var ev event
			out, ev, data = esc.feed(out[:0], data)
			if len(out) > 0 {
				if _, werr := s.pty.Write(out); werr != nil {
					if errors.Is(werr, os.ErrClosed) {
						return nil
					}
					return ErrGuestStopped
				}
			}
			switch ev {
			case evDetach:
				return errDetached
			case evHelp:
				s.printf("%s", escapeHelp(s.opts.Escape, s.opts.DetachKey))
			}
		}
		if err != nil {
			if errors.Is(err, errCanceled) {
				return nil
			}
			// End of input detaches, as in cu.
			return errDetached
		}
	}
}

// lockedWriter serialises writes to the user's terminal from both
// directions (the guest's output and the escape help).
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// takeover dispatches SIGUSR1, the request to detach sent by a session
// taking the console over. Once installed, the handler stays, so that a
// late request never kills a process (SIGUSR1's default action) that has
// just detached.
var takeover struct {
	once sync.Once
	mu   sync.Mutex
	subs map[chan struct{}]bool
}

// drain empties c.
func drain(c <-chan struct{}) {
	select {
	case <-c:
	default:
	}
}

// watchTakeover installs the SIGUSR1 handler if it is not yet, and
// subscribes to takeover requests: the channel receives one value for any
// number of requests that come until it is read. The function unsubscribes.
func watchTakeover() (<-chan struct{}, func()) {
	takeover.once.Do(func() {
		takeover.subs = make(map[chan struct{}]bool)
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR1)
		go func() {
			for range c {
				takeover.mu.Lock()
				for sub := range takeover.subs {
					select {
					case sub <- struct{}{}:
					default:
					}
				}
				takeover.mu.Unlock()
			}
		}()
	})
	ch := make(chan struct{}, 1)
	takeover.mu.Lock()
	takeover.subs[ch] = true
	takeover.mu.Unlock()
	return ch, func() {
		takeover.mu.Lock()
		delete(takeover.subs, ch)
		takeover.mu.Unlock()
	}
}
