package console

import (
	"errors"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// errCanceled ends a read when the session ends.
var errCanceled = errors.New("read canceled")

// canceler wakes every pollReader sharing it: cancel closes the write end
// of a pipe, and the read end then polls as hung up for good.
type canceler struct {
	r, w int
	once sync.Once
}

func newCanceler() (*canceler, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	return &canceler{r: p[0], w: p[1]}, nil
}

func (c *canceler) cancel() { c.once.Do(func() { unix.Close(c.w) }) }

// close releases the pipe, once no reader polls it any more.
func (c *canceler) close() {
	c.cancel()
	unix.Close(c.r)
}

// pollReader reads fd in the thread of the calling goroutine, once poll(2)
// says it is readable, and fails with errCanceled once its canceler is
// cancelled. Unlike a read through Go's poller, it takes no key after the
// session ends (the next reader of the terminal gets it), and the wake-up
// goes straight to the waiting thread, with no scheduler hop: the relay adds
// as little latency as it can.
//
// With nonblock set (fd is in non-blocking mode), Read tries the read first
// and polls only when there is nothing to read, so that a burst of output
// costs one system call per read, as with Go's poller.
type pollReader struct {
	fd       int
	c        *canceler
	name     string
	nonblock bool
}

func (r *pollReader) Read(b []byte) (int, error) {
	if r.nonblock {
		n, err := unix.Read(r.fd, b)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err != unix.EAGAIN && err != unix.EINTR:
			return 0, &os.PathError{Op: "read", Path: r.name, Err: err}
		}
	}
	fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}, {Fd: int32(r.c.r), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "poll", Path: r.name, Err: err}
		}
		if fds[1].Revents != 0 {
			return 0, errCanceled
		}
		if fds[0].Revents == 0 {
			continue
		}
		n, err := unix.Read(r.fd, b)
		switch {
		case err == unix.EINTR || err == unix.EAGAIN:
			continue
		case err != nil:
			return 0, &os.PathError{Op: "read", Path: r.name, Err: err}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// input returns the reader of the user's keys. When Stdin is a file (a
// terminal or a pipe), it is a pollReader and stops when c is cancelled;
// other readers cannot be interrupted: their goroutine ends at their next
// read.
func (s *session) input(c *canceler) io.Reader {
	f, ok := s.opts.Stdin.(*os.File)
	if !ok {
		return s.opts.Stdin
	}
	s.cancelable = true
	return &pollReader{fd: int(f.Fd()), c: c, name: f.Name()}
}
