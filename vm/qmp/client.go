package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Version is QEMU's version, from the greeting.
type Version struct {
	Major, Minor, Micro int
	// Package is the distribution's package version, for example
	// "Debian 1:7.2+dfsg-7+deb12u18+b3"; it may be empty.
	Package string
}

// String returns "major.minor.micro".
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

// greeting is the first message on a QMP connection:
// {"QMP": {"version": {"qemu": {...}, "package": ...}, "capabilities": [...]}}.
type greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// message is any message from the server: the greeting, a reply or an event.
type message struct {
	QMP       *greeting       `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// request is a command as sent to QEMU.
type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	ID        uint64          `json:"id"`
}

// reply is the part of a response a caller waits for.
type reply struct {
	ret json.RawMessage
	err *Error
}

// Client is a connection to a QMP monitor. Its methods are safe for
// concurrent use. Close it when done: QEMU serves one client at a time.
type Client struct {
	conn         net.Conn
	version      Version
	capabilities []string

	nextID   atomic.Uint64
	quitSent atomic.Bool
	wlock    chan struct{} // held while writing a command; a channel so that waiting honours contexts

	mu      sync.Mutex
	pending map[uint64]chan reply
	subs    map[*Subscription]struct{}
	cause   error // why the connection ended; set once, before done is closed

	done       chan struct{}
	readerDone chan struct{}
}

// Dial connects to the QMP unix socket at path and returns a client once the
// greeting has been read and capabilities negotiated. ctx bounds the whole
// handshake: when QEMU accepts the connection but sends no greeting before
// ctx ends (another client holds the monitor), the error wraps [ErrBusy] and
// ctx's error.
//
// QEMU listens with a backlog of one: while a client holds the monitor and
// another waits, connect fails with EAGAIN. Dial treats that as busy too and
// tries again until ctx ends.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	backoff := 5 * time.Millisecond
	var conn net.Conn
	for {
		var err error
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EAGAIN) {
			return nil, fmt.Errorf("qmp: %w", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("qmp: dial %q: %w: %w (%v)", path, ErrBusy, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
	c, err := handshake(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %q: %w", path, err)
	}
	return c, nil
}

// New starts a client on an existing connection (a socket dialed before QEMU
// was started on the listener, or one end of a [net.Pipe]) and performs the
// handshake as [Dial] does. The client owns conn from then on, even when New
// fails.
func New(ctx context.Context, conn net.Conn) (*Client, error) {
	c, err := handshake(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	return c, nil
}

func handshake(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{
		conn:       conn,
		wlock:      make(chan struct{}, 1),
		pending:    make(map[uint64]chan reply),
		subs:       make(map[*Subscription]struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	greeted := make(chan struct{})
	go c.readLoop(greeted)
	select {
	case <-greeted:
	case <-c.done:
		c.Close()
		return nil, fmt.Errorf("read greeting: %w", c.cause)
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("%w (no greeting: %w)", ErrBusy, ctx.Err())
	}
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("negotiate capabilities: %w", unwrapPrefix(err))
	}
	return c, nil
}

// unwrapPrefix drops the "qmp: command:" layer Execute adds when the error
// is about to be wrapped again, so that messages do not stutter.
func unwrapPrefix(err error) error {
	if u := errors.Unwrap(err); u != nil {
		if _, ok := err.(*cmdError); ok {
			return u
		}
	}
	return err
}

// Version returns QEMU's version, as announced in the greeting.
func (c *Client) Version() Version { return c.version }

// Capabilities returns the capabilities QEMU offered in the greeting (7.2
// offers "oob"; the client does not enable any).
func (c *Client) Capabilities() []string {
	return append([]string(nil), c.capabilities...)
}

// Done returns a channel that is closed when the connection has ended, by
// [Client.Close], by QEMU closing it, or by a read error.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up, and then why it ended: an
// error wrapping [ErrClosed] for an orderly end (Close, or QEMU after quit),
// or one wrapping [io.ErrUnexpectedEOF] when the connection dropped.
func (c *Client) Err() error {
	if cause := c.ended(); cause != nil {
		return fmt.Errorf("qmp: %w", cause)
	}
	return nil
}

// ended returns why the connection ended, or nil.
func (c *Client) ended() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Close closes the connection. Calls in progress fail with an error wrapping
// [ErrClosed], and subscriptions' channels are closed. Close waits for the
// reading goroutine to finish; it is safe to call more than once.
func (c *Client) Close() error {
	c.end(ErrClosed)
	c.conn.Close()
	<-c.readerDone
	return nil
}

// end records why the connection ended (only the first cause counts),
// closes done and every subscription.
func (c *Client) end(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return
	}
	c.cause = cause
	close(c.done)
	for s := range c.subs {
		close(s.ch)
	}
	c.subs = nil
	c.pending = nil
}

// cmdError is an error from Execute: the command's name and the cause.
type cmdError struct {
	command string
	err     error
}

func (e *cmdError) Error() string { return "qmp: " + e.command + ": " + e.err.Error() }
func (e *cmdError) Unwrap() error { return e.err }

// Execute runs command with args (nil for none; anything that marshals to
// a JSON object) and decodes the "return" member into result (nil to ignore
// it). It returns when the reply arrives, when ctx ends, or when the
// connection ends. Give ctx a deadline: QEMU runs commands one at a time, and
// a command it never answers would otherwise wait forever.
//
// A QMP error reply is returned as an error wrapping [*Error]. A reply that
// arrives after ctx ended is dropped. Errors that are not QEMU's own wrap
// ctx's error, [ErrClosed] or [io.ErrUnexpectedEOF].
//
// Execute treats "quit" specially: QEMU may close the socket before or after
// its reply, and either counts as success.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	ret, err := c.execute(ctx, command, args)
	if err != nil {
		return &cmdError{command, err}
	}
	if result != nil && ret != nil {
		if err := json.Unmarshal(ret, result); err != nil {
			return &cmdError{command, fmt.Errorf("decode reply: %w", err)}
		}
	}
	return nil
}

func (c *Client) execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	req := request{Execute: command, ID: c.nextID.Add(1)}
	if args != nil {
		a, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("encode arguments: %w", err)
		}
		if !bytes.Equal(a, []byte("null")) {
			req.Arguments = a
		}
	}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	line = append(line, '\n')

	ch := make(chan reply, 1) // the reader never blocks on it
	c.mu.Lock()
	if cause := c.cause; cause != nil {
		c.mu.Unlock()
		return nil, cause
	}
	c.pending[req.ID] = ch
	c.mu.Unlock()

	if command == "quit" {
		// Before writing: QEMU may close the socket as soon as it
		// has read the command, and that EOF is not an accident.
		c.quitSent.Store(true)
	}
	if err := c.write(ctx, line); err != nil {
		c.forget(req.ID)
		if command == "quit" && c.ended() == nil {
			c.quitSent.Store(false) // not sent after all
		}
		return nil, err
	}

	select {
	case r := <-ch:
		return r.result()
	case <-ctx.Done():
		c.forget(req.ID)
		select {
		case r := <-ch: // it raced in; no reason to waste it
			return r.result()
		default:
		}
		return nil, ctx.Err()
	case <-c.done:
		select {
		case r := <-ch:
			return r.result()
		default:
		}
		cause := c.ended()
		if _, ok := cause.(quitError); ok && command == "quit" {
			return nil, nil
		}
		return nil, cause
	}
}

func (r reply) result() (json.RawMessage, error) {
	if r.err != nil {
		return nil, r.err
	}
	return r.ret, nil
}

// forget drops a pending call; a reply that arrives for it later is ignored.
func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// aLongTimeAgo is a deadline in the past, to unblock a write at once.
var aLongTimeAgo = time.Unix(1, 0)

// write sends one command line. Writers take turns; each honours its
// context while waiting for its turn and while writing. A write cut off in
// the middle of a line would leave the stream corrupt, so it ends the
// connection.
func (c *Client) write(ctx context.Context, line []byte) error {
	select {
	case c.wlock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.ended()
	}
	defer func() { <-c.wlock }()
	if err := ctx.Err(); err != nil { // select picks at random among ready cases
		return err
	}

	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetWriteDeadline(aLongTimeAgo)
		close(fired)
	})
	n, err := c.conn.Write(line)
	if !stop() {
		<-fired
	}
	c.conn.SetWriteDeadline(time.Time{})
	if err == nil {
		return nil
	}
	if n > 0 {
		c.end(&lostError{fmt.Errorf("write cut off after %d of %d bytes: %w", n, len(line), err)})
		c.conn.Close()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Both write deadlines come from ctx, whose own timer may
		// fire a moment after the connection's.
		<-ctx.Done()
		return ctx.Err()
	}
	if cause := c.ended(); cause != nil {
		return cause
	}
	return fmt.Errorf("write: %w", err)
}

// MaxMessageSize bounds one message from QEMU, in bytes. QEMU 7.2's
// largest reply, to query-qmp-schema, is about 200 KiB; a peer that sends a
// longer message (a broken or hostile one) ends the connection, with an
// error wrapping [io.ErrUnexpectedEOF] that says so, instead of having the
// client buffer it whole.
const MaxMessageSize = 8 << 20

// errTooLong ends a connection whose peer sent a message longer than
// MaxMessageSize.
var errTooLong = fmt.Errorf("message longer than %d MiB", MaxMessageSize>>20)

// readLoop owns the reading side of the connection: it reads the greeting,
// then dispatches replies and events until the connection ends.
func (c *Client) readLoop(greeted chan<- struct{}) {
	defer close(c.readerDone)
	r := &pushbackReader{r: c.conn, limit: MaxMessageSize}
	dec := json.NewDecoder(r)
	first := true
	for {
		var m message
		err := dec.Decode(&m)
		// The next message may take MaxMessageSize bytes from where this
		// one ended, whatever the decoder has read ahead.
		r.limit = dec.InputOffset() + MaxMessageSize
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case err == nil:
		case errors.As(err, &typeErr) && !first:
			// A well-formed JSON value of an unexpected shape: it has
			// been consumed whole, so carry on with the next one.
			continue
		case errors.As(err, &syntaxErr) && !first:
			// Garbage on the line: skip to the next line, where QEMU
			// starts every message, and decode from there.
			if dec, err = r.resync(dec); err != nil {
				c.fail(err)
				return
			}
			continue
		case first && (syntaxErr != nil || typeErr != nil):
			c.end(fmt.Errorf("not a QMP greeting: %w", err))
			c.conn.Close()
			return
		default:
			c.fail(err)
			return
		}

		if first {
			if m.QMP == nil {
				c.end(errors.New("not a QMP greeting"))
				c.conn.Close()
				return
			}
			g := m.QMP.Version
			c.version = Version{g.QEMU.Major, g.QEMU.Minor, g.QEMU.Micro, g.Package}
			c.capabilities = m.QMP.Capabilities
			first = false
			close(greeted)
			continue
		}

		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data}
			if t := m.Timestamp; t != nil && t.Seconds >= 0 {
				ev.Time = time.Unix(t.Seconds, t.Microseconds*int64(time.Microsecond))
			}
			c.publish(ev)
		case m.Return != nil || m.Error != nil:
			// Replies without an id (QEMU's answer to unparsable
			// input) or with an id that is not ours cannot be matched
			// and are dropped, as are replies to abandoned calls.
			id, err := strconv.ParseUint(string(m.ID), 10, 64)
			if err != nil {
				continue
			}
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				ch <- reply{ret: m.Return, err: m.Error}
			}
		}
	}
}

// fail ends the connection after a read error.
func (c *Client) fail(err error) {
	var cause error
	switch {
	case c.quitSent.Load():
		// QEMU closes the monitor (EOF, or ECONNRESET when it left
		// input unread) when it exits after quit.
		cause = quitError{}
	default:
		cause = &lostError{err}
	}
	c.end(cause)
	c.conn.Close()
}

// pushbackReader reads buf before r; it lets the decoder be restarted on
// bytes it had already read. It gives the decoder no more than limit bytes
// (counted from the decoder's start), and then errTooLong: the decoder holds
// a whole message in memory, so that is what bounds it.
type pushbackReader struct {
	buf   []byte
	r     io.Reader
	n     int64 // bytes read by the current decoder
	limit int64
}

func (p *pushbackReader) Read(b []byte) (int, error) {
	if p.n >= p.limit {
		return 0, errTooLong
	}
	b = b[:min(int64(len(b)), p.limit-p.n)]
	var n int
	var err error
	if len(p.buf) > 0 {
		n = copy(b, p.buf)
		p.buf = p.buf[n:]
	} else {
		n, err = p.r.Read(b)
	}
	p.n += int64(n)
	return n, err
}

// resync discards input up to and including the next newline, and returns
// a fresh decoder that continues after it, with a fresh limit.
func (p *pushbackReader) resync(dec *json.Decoder) (*json.Decoder, error) {
	rest, _ := io.ReadAll(dec.Buffered())
	p.buf = append(rest, p.buf...)
	var chunk []byte
	for {
		if i := bytes.IndexByte(p.buf, '\n'); i >= 0 {
			p.buf = p.buf[i+1:]
			p.n, p.limit = 0, MaxMessageSize
			return json.NewDecoder(p), nil
		}
		if chunk == nil {
			chunk = make([]byte, 4096)
		}
		n, err := p.r.Read(chunk)
		p.buf = chunk[:n]
		if n == 0 && err != nil {
			return nil, err
		}
	}
}
