package qmp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The reader against a hostile or broken QEMU: FuzzReader plays sessions
// recorded with QEMU 7.2 (testdata/qemu-7.2), mutated, to a client that
// runs the typed commands; TestMessageTooLong checks the bound on one
// message.

// loadTranscript reads a recorded session (testdata/qemu-7.2/*.txt: the
// lines QEMU sent, "# " comments, and ">>> " lines for what the client
// wrote) as the segments QEMU sent before the client's first command and
// after each command, every line ended with CRLF as QEMU ends it.
func loadTranscript(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	segs := [][]byte{nil}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, ">>> "):
			segs = append(segs, nil)
		default:
			segs[len(segs)-1] = append(segs[len(segs)-1], line+"\r\n"...)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return segs
}

// scriptConn is QEMU's end of a connection, played from a script: the
// first segment at once, each following one when the client has written
// its next command, then io.EOF. When the reader has consumed everything
// released while the client waits for an answer, none will come: stall is
// called with the number of commands written, once, so that the caller
// can give up on the latest one. Everything happens in an order the input
// alone decides, which keeps fuzzing deterministic.
type scriptConn struct {
	mu       sync.Mutex
	cond     *sync.Cond
	segs     [][]byte
	cur      []byte // the unread part of the segment being read
	next     int    // the next segment to read
	writes   int    // commands written
	stalled  int    // the number of writes stall was last called with, plus one
	closed   bool
	stallFns map[int]context.CancelFunc
}

func newScriptConn(segs [][]byte) *scriptConn {
	c := &scriptConn{segs: segs, stallFns: map[int]context.CancelFunc{}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// onStall registers what gives up on command n (0 and 1: the handshake).
func (c *scriptConn) onStall(n int, cancel context.CancelFunc) {
	c.mu.Lock()
	c.stallFns[n] = cancel
	c.mu.Unlock()
}

func (c *scriptConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	for {
		switch {
		case c.closed:
			c.mu.Unlock()
			return 0, net.ErrClosed
		case len(c.cur) > 0:
			n := copy(b, c.cur)
			c.cur = c.cur[n:]
			c.mu.Unlock()
			return n, nil
		case c.next >= len(c.segs):
			c.mu.Unlock()
			return 0, io.EOF
		case c.next <= c.writes:
			c.cur = c.segs[c.next]
			c.next++
			continue
		case c.stalled <= c.writes:
			c.stalled = c.writes + 1
			cancel := c.stallFns[c.writes]
			c.mu.Unlock()
			if cancel != nil {
				cancel()
			}
			c.mu.Lock()
			continue
		}
		c.cond.Wait()
	}
}

func (c *scriptConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.writes++
	c.cond.Broadcast()
	return len(b), nil
}

func (c *scriptConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

func (c *scriptConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "qmp.sock", Net: "unix"} }
func (c *scriptConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "qmp.sock", Net: "unix"} }
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }

// playSession runs a client against segs: the handshake, then every typed
// command, each given up when the script has no answer for it. It fails
// the test if the client breaks a promise: a subscription that is not
// closed once the client is.
func playSession(t *testing.T, segs [][]byte) {
	conn := newScriptConn(segs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn.onStall(0, cancel) // no greeting
	conn.onStall(1, cancel) // no answer to qmp_capabilities
	c, err := New(ctx, conn)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.Version().String()
	sub := c.Subscribe(4)
	steps := []func(context.Context) error{
		func(ctx context.Context) error { _, err := c.QueryStatus(ctx); return err },
		func(ctx context.Context) error { _, err := c.PTY(ctx, "ser0"); return err },
		func(ctx context.Context) error { _, err := c.QueryCPUsFast(ctx); return err },
		func(ctx context.Context) error { _, err := c.QueryBalloon(ctx); return err },
		func(ctx context.Context) error { _, err := c.HumanMonitorCommand(ctx, "info status"); return err },
		c.Cont, c.Stop, c.SystemReset, c.SystemPowerdown, c.Quit,
	}
	for i, step := range steps {
		ctx, cancel := context.WithCancel(context.Background())
		conn.onStall(i+2, cancel)
		err := step(ctx)
		cancel()
		_ = ErrorClass(err)
	}
	c.Close()
	for ev := range sub.C { // closed with the client
		var info ShutdownInfo
		_ = ev.DecodeData(&info)
	}
	if c.Err() == nil {
		t.Error("Err is nil after Close")
	}
}

// seeds returns the recorded sessions, and a few cuts of them, as fuzz
// inputs: segments separated by NUL bytes.
func seeds(t testing.TB) [][]byte {
	paths, err := filepath.Glob("testdata/qemu-7.2/*.txt")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no sessions in testdata/qemu-7.2: %v", err)
	}
	var out [][]byte
	for _, p := range paths {
		segs := loadTranscript(t, p)
		out = append(out, bytes.Join(segs, []byte{0}))
		out = append(out, segs[0])                         // a greeting, then nothing
		out = append(out, bytes.Join(segs[:2], []byte{0})) // a handshake, then nothing
		out = append(out, bytes.Join(segs, nil))           // everything at once
	}
	return out
}

// FuzzReader plays a QMP session, segments separated by NUL bytes, to a
// client that runs every typed command: whatever QEMU sends, the client
// must not panic, hang or hold more than MaxMessageSize of one message
// (TestMessageTooLong checks that bound; fuzz inputs are too small to).
func FuzzReader(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		playSession(t, bytes.Split(stream, []byte{0}))
	})
}

// TestSessions plays the recorded sessions and checks what the client made
// of them.
func TestSessions(t *testing.T) {
	segs := loadTranscript(t, "testdata/qemu-7.2/session.txt")
	conn := newScriptConn(segs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, conn)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer c.Close()
	if v := c.Version(); v.String() != "7.2.22" || v.Package != "Debian 1:7.2+dfsg-7+deb12u18+b3" {
		t.Errorf("version %s %q, want 7.2.22 and Debian's package", v, v.Package)
	}
	sub := c.Subscribe(16)
	st, err := c.QueryStatus(ctx)
	if err != nil || st.Status != StatePrelaunch || st.Running {
		t.Errorf("query-status: %+v, %v; want prelaunch, not running", st, err)
	}
	if pty, err := c.PTY(ctx, "ser0"); err != nil || pty != "/dev/pts/0" {
		t.Errorf("pty: %q, %v; want /dev/pts/0", pty, err)
	}
	if cpus, err := c.QueryCPUsFast(ctx); err != nil || len(cpus) != 1 || cpus[0].Target != "x86_64" || cpus[0].ThreadID == 0 {
		t.Errorf("query-cpus-fast: %+v, %v; want one x86_64 vCPU", cpus, err)
	}
	if _, err := c.QueryBalloon(ctx); ErrorClass(err) != ClassDeviceNotActive {
		t.Errorf("query-balloon: %v, want class %s", err, ClassDeviceNotActive)
	}
	if out, err := c.HumanMonitorCommand(ctx, "info status"); err != nil || out != "VM status: paused (prelaunch)\r\n" {
		t.Errorf("info status: %q, %v", out, err)
	}
	for _, step := range []func(context.Context) error{c.Cont, c.Stop, c.SystemReset, c.SystemPowerdown, c.Quit} {
		if err := step(ctx); err != nil {
			t.Errorf("command: %v", err)
		}
	}
	var names []string
	for ev := range sub.C {
		names = append(names, ev.Name)
		if ev.Time.IsZero() {
			t.Errorf("event %s without a time", ev.Name)
		}
	}
	if got, want := strings.Join(names, " "), "RESUME STOP RESET POWERDOWN SHUTDOWN"; got != want {
		t.Errorf("events %s, want %s", got, want)
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("after quit: %v, want ErrClosed", err)
	}

	// The errors session: the first command is refused until
	// capabilities are negotiated.
	conn = newScriptConn(loadTranscript(t, "testdata/qemu-7.2/errors.txt"))
	if _, err := New(ctx, conn); ErrorClass(err) != ClassCommandNotFound {
		t.Errorf("handshake refused: %v, want class %s", err, ClassCommandNotFound)
	}
}

// TestMessageTooLong: a peer that sends one endless message ends the
// connection once the client has read MaxMessageSize bytes of it, however
// it comes (a string value, or whitespace before a value), and after
// lines that were skipped.
func TestMessageTooLong(t *testing.T) {
	tests := []struct {
		name          string
		before, chunk string
	}{
		{"string", `{"event": "X", "data": "`, "aaaaaaaaaaaaaaaa"},
		{"whitespace", ``, "                "},
		{"after garbage", "garbage\r\n" + `{"event": "X", "data": [`, "[1], [2], [3], "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			written := make(chan int64, 1)
			go func() {
				defer server.Close()
				r := bufio.NewReader(server)
				io.WriteString(server, `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`+"\r\n")
				if _, err := r.ReadString('\n'); err != nil {
					written <- 0
					return
				}
				io.WriteString(server, `{"return": {}, "id": 1}`+"\r\n"+tt.before)
				chunk := []byte(strings.Repeat(tt.chunk, 4096))
				var n int64
				for n < 4*MaxMessageSize {
					m, err := server.Write(chunk)
					n += int64(m)
					if err != nil {
						break
					}
				}
				written <- n
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := New(ctx, client)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer c.Close()
			select {
			case <-c.Done():
			case <-ctx.Done():
				t.Fatal("the client still reads")
			}
			err = c.Err()
			if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "message longer than 8 MiB") {
				t.Errorf("got %v, want a lost connection: message longer than 8 MiB", err)
			}
			c.Close()
			if n := <-written; n > MaxMessageSize+64<<10 {
				t.Errorf("the client read %d bytes of one message, more than %d", n, MaxMessageSize)
			}
		})
	}
}
