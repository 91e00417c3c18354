package qcow

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"
)

// memFile is an in-memory File.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("memFile: negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > 1<<30 {
		return 0, errors.New("memFile: offset out of range")
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Truncate(n int64) error {
	if n < 0 || n > 1<<30 {
		return errors.New("memFile: size out of range")
	}
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}
func (m *memFile) Sync() error                { return nil }
func (m *memFile) Close() error               { return nil }
func (m *memFile) Stat() (fs.FileInfo, error) { return memInfo{int64(len(m.b))}, nil }

type memInfo struct{ size int64 }

func (i memInfo) Name() string       { return "fuzz.qcow" }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// zeroBacking is a backing image of zeros.
type zeroBacking struct{ size int64 }

func (z zeroBacking) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }
func (z zeroBacking) Size() int64                             { return z.size }
func (z zeroBacking) Close() error                            { return nil }

// seedImage is a small image made by this package: data, a compressed
// cluster and a backing file name.
func seedImage(t testing.TB, backing string) []byte {
	m := &memFile{}
	if err := Create(m, CreateOptions{Size: 256 << 10, BackingFile: backing, ClusterBits: 12, L2Bits: 6}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(m, Options{OpenBacking: func(string) (Backing, error) { return zeroBacking{128 << 10}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 5000), 1000); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteCompressed(64<<10, bytes.Repeat([]byte("abc"), 4096/3+1)[:4096]); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return m.b
}

// hostileCase is a seed image with a hostile header and the words its
// error must contain.
type hostileCase struct {
	b    []byte
	want string
}

func hostile(t testing.TB) map[string]hostileCase {
	base := seedImage(t, "")
	mod := func(want string, f func(b []byte)) hostileCase {
		b := bytes.Clone(base)
		f(b)
		return hostileCase{b, want}
	}
	be := binary.BigEndian
	return map[string]hostileCase{
		"huge size":         mod("past the end of the file", func(b []byte) { be.PutUint64(b[24:], 1<<40) }),
		"huger size":        mod("image too large", func(b []byte) { be.PutUint64(b[24:], 1<<62) }),
		"wrapping size":     mod("image too large", func(b []byte) { be.PutUint64(b[24:], ^uint64(0)-10) }),
		"cluster_bits 30":   mod("cluster_bits 30 out of range", func(b []byte) { b[32] = 30 }),
		"cluster_bits 8":    mod("cluster_bits 8 out of range", func(b []byte) { b[32] = 8 }),
		"l2_bits 14":        mod("l2_bits 14 out of range", func(b []byte) { b[33] = 14 }),
		"l2_bits 5":         mod("l2_bits 5 out of range", func(b []byte) { b[33] = 5 }),
		"crypt method":      mod("invalid encryption method 7", func(b []byte) { be.PutUint32(b[36:], 7) }),
		"wrapping L1":       mod("L1 table", func(b []byte) { be.PutUint64(b[40:], ^uint64(0)-7) }),
		"truncated":         {base[:40], "header truncated"},
		"version 2":         mod("unsupported qcow version 2", func(b []byte) { be.PutUint32(b[4:], 2) }),
		"size 1":            mod("too small", func(b []byte) { be.PutUint64(b[24:], 1) }),
		"name too long":     mod("backing file name too long", func(b []byte) { be.PutUint64(b[8:], 48); be.PutUint32(b[16:], 5000) }),
		"name past the end": mod("backing file name", func(b []byte) { be.PutUint64(b[8:], ^uint64(0)); be.PutUint32(b[16:], 5) }),
	}
}

func TestHostileHeaders(t *testing.T) {
	for name, tc := range hostile(t) {
		t.Run(name, func(t *testing.T) {
			_, err := Open(&memFile{tc.b}, Options{ReadOnly: true})
			var fe *FormatError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("open: %v, want a *FormatError with %q", err, tc.want)
			}
			if _, err := Check(context.Background(), &memFile{tc.b}); err == nil {
				t.Fatal("check: no error")
			}
		})
	}
}

// TestHostileTables: an L2 entry past the end of the file, or misaligned,
// is a clear error when read.
func TestHostileTables(t *testing.T) {
	b := seedImage(t, "")
	// The first L2 table is the first allocation after the L1 table.
	m := &memFile{b}
	img, err := Open(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l2 := img.l1[0]
	img.Close()
	for _, tc := range []struct {
		entry uint64
		want  string
	}{{1 << 50, "past the end"}, {4096 + 8, "not aligned"}, {compressedFlag | 4000<<(63-12) | uint64(len(b)-10), "past the end"},
		{compressedFlag | 4000<<(63-12), "inflate"}} {
		c := bytes.Clone(b)
		binary.BigEndian.PutUint64(c[l2:], tc.entry)
		img, err := Open(&memFile{c}, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = img.ReadAt(make([]byte, 512), 0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("entry %#x: read: %v, want %q", tc.entry, err, tc.want)
		}
	}
}

func addSeeds(f *testing.F) {
	f.Add(seedImage(f, ""))
	f.Add(seedImage(f, "base.raw"))
	for _, tc := range hostile(f) {
		f.Add(tc.b)
	}
}

func FuzzOpen(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Open(&memFile{bytes.Clone(b)}, Options{ReadOnly: true,
			OpenBacking: func(string) (Backing, error) { return zeroBacking{1 << 20}, nil }})
		if err != nil {
			return
		}
		defer img.Close()
		buf := make([]byte, 64<<10)
		for off := int64(0); off < min(img.Size(), 4<<20); off += int64(len(buf)) {
			if _, err := img.ReadAt(buf, off); err != nil && err != io.EOF {
				break
			}
			if _, err := img.Status(off, int64(len(buf))); err != nil {
				break
			}
		}
	})
}

func FuzzCheck(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Check(context.Background(), &memFile{b})
	})
}

func FuzzWrite(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Open(&memFile{bytes.Clone(b)}, Options{OpenBacking: func(string) (Backing, error) { return zeroBacking{1 << 20}, nil }})
		if err != nil {
			return
		}
		data := bytes.Repeat([]byte{0xee}, 3000)
		for _, off := range []int64{0, 700, 64 << 10, img.Size() - 3000} {
			if off >= 0 {
				_, _ = img.WriteAt(data, off)
			}
		}
		_ = img.Close()
	})
}
