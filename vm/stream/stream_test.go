package stream

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

const testDefinition = "name = \"web\"\nmemory = \"128M\"\n"

// payload returns n bytes mixing what guest memory holds: runs of text
// (compressible) and random bytes (not).
func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i < n; {
		run := min(n-i, 1+r.IntN(3*MaxChunk/2))
		if r.IntN(2) == 0 {
			for j := range run {
				b[i+j] = byte(r.Uint32())
			}
		} else {
			copy(b[i:i+run], bytes.Repeat([]byte("guest memory page "), run/18+1))
		}
		i += run
	}
	return b
}

// encode writes a stream of data with the test definition, handing it to
// the Writer in pieces of uneven sizes.
func encode(t testing.TB, flags uint32, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriter(&out, Header{Flags: flags, Definition: []byte(testDefinition)})
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+len(rest)%70001)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Written() != int64(out.Len()) || w.Payload() != int64(len(data)) {
		t.Fatalf("Written %d, Payload %d; want %d, %d", w.Written(), w.Payload(), out.Len(), len(data))
	}
	return out.Bytes()
}

// decode reads a whole stream.
func decode(r io.Reader) (Header, []byte, error) {
	sr, err := NewReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	data, err := io.ReadAll(sr)
	return sr.Header(), data, err
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
		data  []byte
	}{
		{"empty", 0, nil},
		{"one byte", FlagRunning, []byte{7}},
		{"zeros", FlagRunning, make([]byte, 3*MaxChunk+5)},
		{"mixed", 0, payload(9*MaxChunk+123, 1)},
		{"exact chunks", FlagRunning, payload(2*MaxChunk, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := encode(t, tc.flags, tc.data)
			// Half of what is asked at a time, through a reader that also returns data
			// with io.EOF: as a pipe could.
			h, got, err := decode(iotest.DataErrReader(iotest.HalfReader(bytes.NewReader(enc))))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("payload differs: got %d bytes, want %d", len(got), len(tc.data))
			}
			if string(h.Definition) != testDefinition || h.Flags != tc.flags || h.Running() != (tc.flags&FlagRunning != 0) {
				t.Fatalf("header %+v, want flags %d and the definition", h, tc.flags)
			}
		})
	}
}

// TestCompression: zeros and text are compressed, random bytes are stored.
func TestCompression(t *testing.T) {
	zeros := encode(t, 0, make([]byte, 8*MaxChunk))
	if len(zeros) > MaxChunk/8 {
		t.Errorf("8 MiB of zeros: %d bytes of stream", len(zeros))
	}
	r := rand.New(rand.NewPCG(3, 3))
	random := make([]byte, 8*MaxChunk)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	enc := encode(t, 0, random)
	if over := len(enc) - len(random); over < 0 || over > 4096 {
		t.Errorf("8 MiB of random bytes: %d bytes of stream, %d over", len(enc), over)
	}
}

// TestDamaged: a stream cut anywhere, with any byte changed, or with
// anything after it, is refused with an error wrapping ErrFormat, never
// returning io.EOF as if it were whole.
func TestDamaged(t *testing.T) {
	data := payload(MaxChunk+777, 4)
	enc := encode(t, FlagRunning, data)
	check := func(t *testing.T, what string, b []byte, wantMsg string) {
		t.Helper()
		_, _, err := decode(bytes.NewReader(b))
		if err == nil {
			t.Fatalf("%s: accepted", what)
		}
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("%s: error %v does not wrap ErrFormat", what, err)
		}
		if wantMsg != "" && !strings.Contains(err.Error(), wantMsg) {
			t.Fatalf("%s: error %q, want it to say %q", what, err, wantMsg)
		}
	}
	// Every cut in the header and the trailer, and some between.
	r := rand.New(rand.NewPCG(5, 5))
	var cuts []int
	for i := 0; i < 80; i++ {
		cuts = append(cuts, i, len(enc)-1-i)
	}
	for range 40 {
		cuts = append(cuts, r.IntN(len(enc)))
	}
	for _, n := range cuts {
		check(t, "cut", enc[:n], "")
	}
	check(t, "cut in a chunk", enc[:len(enc)/2], "truncated")
	// Every byte of the header and trailer changed, and some between.
	flips := cuts
	for _, i := range flips {
		b := bytes.Clone(enc)
		b[i] ^= 1 << r.IntN(8)
		check(t, "flip", b, "")
	}
	b := bytes.Clone(enc)
	b[len(enc)/2] ^= 0x10
	check(t, "flip in a chunk", b, "checksum mismatch")
	check(t, "data after", append(bytes.Clone(enc), 0), "data after the trailer")
	check(t, "two streams", append(bytes.Clone(enc), enc...), "data after the trailer")
	check(t, "foreign", []byte("QEVM\x00\x00\x00\x03 a QEMU migration stream"), "no magic")
	check(t, "empty", nil, "truncated")
	v2 := bytes.Clone(enc)
	v2[11] = 2
	check(t, "version 2", v2, "version 2")
}

// TestBounds: lengths beyond the limits are refused before anything of
// that size is allocated.
func TestBounds(t *testing.T) {
	head := func(n uint32) []byte {
		b := []byte(Magic + "\x00\x00\x00\x01\x00\x00\x00\x00")
		return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	for _, n := range []uint32{0, MaxDefinition + 1, 1<<32 - 1} {
		if _, err := NewReader(bytes.NewReader(head(n))); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "definition of") {
			t.Fatalf("definition of %d bytes: %v", n, err)
		}
	}
	// A chunk header claiming 4 GiB.
	enc := encode(t, 0, []byte("x"))
	i := 20 + len(testDefinition) + 4 // the first chunk
	b := append(bytes.Clone(enc[:i]), 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)
	if _, _, err := decode(bytes.NewReader(b)); err == nil || !strings.Contains(err.Error(), "chunk of 4294967295 bytes") {
		t.Fatalf("4 GiB chunk: %v", err)
	}
}

// failWriter fails once it has taken n bytes.
type failWriter struct{ n int }

var errFull = errors.New("no space left on device")

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, errFull
	}
	f.n -= len(p)
	return len(p), nil
}

// TestWriteError: the underlying writer's error is returned by Write or
// Close, and sticks.
func TestWriteError(t *testing.T) {
	w, err := NewWriter(&failWriter{n: 1000}, Header{Definition: []byte(testDefinition)})
	if err != nil {
		t.Fatal(err)
	}
	// Chunks are written in the background: the error comes from a
	// later Write, or from Close.
	_, werr := w.Write(payload(2*MaxChunk, 6))
	cerr := w.Close()
	if werr != nil && !errors.Is(werr, errFull) || !errors.Is(cerr, errFull) {
		t.Fatalf("Write: %v, Close: %v; want %v from Close", werr, cerr, errFull)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, errFull) {
		t.Fatalf("Write after the error: %v", err)
	}
	aborted, err := NewWriter(io.Discard, Header{Definition: []byte(testDefinition)})
	if err != nil {
		t.Fatal(err)
	}
	aborted.Write(payload(3*MaxChunk, 7))
	aborted.Abort()
	aborted.Abort()
	if _, err := NewWriter(&failWriter{n: 3}, Header{Definition: []byte(testDefinition)}); !errors.Is(err, errFull) {
		t.Fatalf("NewWriter: %v", err)
	}
	if _, err := NewWriter(io.Discard, Header{}); err == nil {
		t.Fatal("NewWriter accepted an empty definition")
	}
}
