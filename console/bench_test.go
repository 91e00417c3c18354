package console

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// The relay benchmarks compare the console relay with reading the pty
// directly. A pty pair stands for QEMU's serial console: the benchmark plays
// QEMU on the master side, and either reads the slave itself ("direct") or
// lets Attach relay it ("relay").

// benchPTY returns the master of a new pty pair (non-blocking, served by
// Go's poller) and the slave's path, with the slave in raw mode as QEMU
// leaves it.
func benchPTY(b *testing.B) (*os.File, string) {
	b.Helper()
	m, s, err := pty.Open()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := term.MakeRaw(int(s.Fd())); err != nil {
		b.Fatal(err)
	}
	name := s.Name()
	s.Close()
	m = pollable(b, m)
	b.Cleanup(func() { m.Close() })
	return m, name
}

func openSlave(b *testing.B, name string) *os.File {
	b.Helper()
	f, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// countWriter counts what the relay writes and signals when it has seen
// want bytes.
type countWriter struct {
	n, want atomic.Int64
	reached chan struct{}
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.n.Add(int64(len(p))) >= c.want.Load() && c.want.Load() > 0 {
		select {
		case c.reached <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// relay starts Attach on the pty at name with the given streams and returns
// a function that ends the session.
func startRelay(b *testing.B, name string, stdin io.Reader, stdout io.Writer) func() {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := &readyWriter{ready: make(chan struct{})}
	go func() {
		done <- Attach(ctx, Options{Name: "bench", TTY: name, TailLines: -1, Stdin: stdin, Stdout: stdout, Stderr: ready})
	}()
	select {
	case <-ready.ready: // "Connected to": the pty is open
	case err := <-done:
		b.Fatalf("Attach: %v", err)
	}
	return func() {
		cancel()
		if err := <-done; err != nil && !isTerminated(err) {
			b.Errorf("Attach: %v", err)
		}
	}
}

func isTerminated(err error) bool { return errors.Is(err, ErrTerminated) }

// readyWriter closes ready on the first write.
type readyWriter struct {
	once  sync.Once
	ready chan struct{}
}

func (r *readyWriter) Write(p []byte) (int, error) {
	r.once.Do(func() { close(r.ready) })
	return len(p), nil
}

const benchChunk = 64 << 10

// writeChunks plays the guest: it writes n chunks to the master.
func writeChunks(m *os.File, n int) {
	chunk := make([]byte, benchChunk)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	for range n {
		if _, err := m.Write(chunk); err != nil {
			return
		}
	}
}

// BenchmarkRelayThroughput measures bytes per second from the guest's side
// of the pty to the user: read directly from the pty, and through Attach.
func BenchmarkRelayThroughput(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		m, name := benchPTY(b)
		s := openSlave(b, name)
		buf := make([]byte, relayBufSize)
		b.SetBytes(benchChunk)
		b.ResetTimer()
		go writeChunks(m, b.N)
		want := int64(b.N) * benchChunk
		for got := int64(0); got < want; {
			n, err := s.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got += int64(n)
		}
	})
	b.Run("relay", func(b *testing.B) {
		m, name := benchPTY(b)
		stdinR, stdinW, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		defer stdinW.Close()
		defer stdinR.Close()
		out := &countWriter{reached: make(chan struct{}, 1)}
		out.want.Store(int64(b.N) * benchChunk)
		stop := startRelay(b, name, stdinR, out)
		b.SetBytes(benchChunk)
		b.ResetTimer()
		go writeChunks(m, b.N)
		<-out.reached
		b.StopTimer()
		stop()
	})
}

// echo plays a guest that echoes every byte it receives, as a shell does.
// Like QEMU it keeps reading while the master reads EIO (no one has the
// slave open yet).
func echo(m *os.File) {
	buf := make([]byte, 4096)
	for {
		n, err := m.Read(buf)
		if n > 0 {
			m.Write(buf[:n])
		}
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(time.Millisecond)
		}
	}
}

// BenchmarkRelayLatency measures the round trip of one key: typed, sent to
// the guest, echoed by it, and shown to the user. "direct" writes and reads
// the pty itself; "relay" goes through Attach, with pipes as the user's
// terminal (a write into its input, a read from its output).
func BenchmarkRelayLatency(b *testing.B) {
	key := []byte{'x'}
	got := make([]byte, 16)
	b.Run("direct", func(b *testing.B) {
		m, name := benchPTY(b)
		go echo(m)
		s := openSlave(b, name)
		b.ResetTimer()
		for range b.N {
			if _, err := s.Write(key); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Read(got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("relay", func(b *testing.B) {
		m, name := benchPTY(b)
		go echo(m)
		inR, inW, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		defer func() { inW.Close(); inR.Close(); outR.Close(); outW.Close() }()
		stop := startRelay(b, name, inR, outW)
		// One round trip before timing: the session is up.
		inW.Write(key)
		outR.Read(got)
		b.ResetTimer()
		for range b.N {
			if _, err := inW.Write(key); err != nil {
				b.Fatal(err)
			}
			if _, err := outR.Read(got); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		stop()
	})
}
