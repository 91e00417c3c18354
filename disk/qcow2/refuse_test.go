package qcow2_test

// Must-refuse cases: broken or unsupported images get an error that says
// what is wrong, never a panic.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// refuseBase makes a 64 KiB-cluster v3 image with data at virtual 0..200000,
// a compressed cluster at 1 MiB and a 4 MiB virtual size, and returns its
// bytes and the host offsets of its L2 table and first data cluster.
func refuseBase(t testing.TB, dir string) (b []byte, l2 int64) {
	t.Helper()
	p := filepath.Join(dir, "refuse-base.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", p, "4M")
	qemuimg.IO(t, p, "qcow2", "write -P 0x61 0 200000", "write -c -P 0x62 1048576 65536")
	b = readFile(t, p)
	l1 := be64(b, 40)
	l2 = int64(be64(b, int(l1)) & 0x00fffffffffffe00)
	if l2 == 0 {
		t.Fatal("test bug: no L2 table")
	}
	return b, l2
}

// errSays reports whether err's text contains one of the words (case-insensitively).
func errSays(err error, words ...string) bool {
	s := strings.ToLower(err.Error())
	for _, w := range words {
		if strings.Contains(s, strings.ToLower(w)) {
			return true
		}
	}
	return false
}

func TestOpenRefuses(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	orig, l2 := refuseBase(t, dir)
	cs := int64(clusterSizeOf(orig))
	l1off := int(be64(orig, 40))
	cases := []struct {
		name  string
		edit  func(b []byte) []byte
		words []string // the error must contain one
	}{
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, []string{"not a qcow2"}},
		{"version 1", func(b []byte) []byte { put32(b, 4, 1); return b }, []string{"version"}},
		{"version 4", func(b []byte) []byte { put32(b, 4, 4); return b }, []string{"version"}},
		{"unknown incompatible bit 5", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<5); return b }, []string{"incompatible"}},
		{"unknown incompatible bit 63", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<63); return b }, []string{"incompatible"}},
		{"crypt_method 1 (AES)", func(b []byte) []byte { put32(b, 32, 1); return b }, []string{"encrypt"}},
		{"crypt_method 2 (LUKS)", func(b []byte) []byte { put32(b, 32, 2); return b }, []string{"encrypt"}},
		{"external data file bit", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<2); return b }, []string{"data file"}},
		{"cluster_bits 8", func(b []byte) []byte { put32(b, 20, 8); return b }, []string{"cluster"}},
		{"cluster_bits 22", func(b []byte) []byte { put32(b, 20, 22); return b }, []string{"cluster"}},
		{"cluster_bits 0xffffffff", func(b []byte) []byte { put32(b, 20, 0xffffffff); return b }, []string{"cluster"}},
		{"L1 with 2^32-1 entries", func(b []byte) []byte { put32(b, 36, 0xffffffff); return b }, []string{"L1"}},
		{"L1 offset unaligned", func(b []byte) []byte { put64(b, 40, be64(b, 40)+512); return b }, []string{"L1"}},
		{"L1 offset past EOF", func(b []byte) []byte { put64(b, 40, 1<<40); return b }, []string{"L1"}},
		{"L1 offset huge", func(b []byte) []byte { put64(b, 40, 0xffffffffffff0000); return b }, []string{"L1"}},
		{"L1 empty", func(b []byte) []byte { put32(b, 36, 0); return b }, []string{"L1"}},
		{"L1 too small for the size", func(b []byte) []byte { put64(b, 24, 1<<40); return b }, []string{"L1"}},
		{"virtual size 2^63", func(b []byte) []byte { put64(b, 24, 1<<63); return b }, []string{"L1", "size"}},
		{"refcount table offset unaligned", func(b []byte) []byte { put64(b, 48, be64(b, 48)+8); return b }, []string{"refcount"}},
		{"refcount table past EOF", func(b []byte) []byte { put64(b, 48, 1<<40); return b }, []string{"refcount"}},
		{"refcount table clusters huge", func(b []byte) []byte { put32(b, 56, 0xffffffff); return b }, []string{"refcount"}},
		{"refcount table clusters 0", func(b []byte) []byte { put32(b, 56, 0); return b }, []string{"refcount"}},
		{"refcount order 7", func(b []byte) []byte { put32(b, 96, 7); return b }, []string{"refcount"}},
		{"header length 100", func(b []byte) []byte { put32(b, 100, 100); return b }, []string{"header length"}},
		{"header length 108", func(b []byte) []byte { put32(b, 100, 108); return b }, []string{"header length"}},
		{"header length past cluster", func(b []byte) []byte { put32(b, 100, 1<<20); return b }, []string{"header length"}},
		{"compression bit without type", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<3); return b }, []string{"compression"}},
		{"compression type 2", func(b []byte) []byte { put64(b, 72, be64(b, 72)|1<<3); b[104] = 2; return b }, []string{"compression"}},
		{"backing name of 1024 bytes", func(b []byte) []byte {
			put64(b, 8, 4096)
			put32(b, 16, 1024)
			copy(b[4096:], bytes.Repeat([]byte("a"), 1024))
			return b
		}, []string{"backing"}},
		{"backing name outside cluster 0", func(b []byte) []byte { put64(b, 8, uint64(cs)-10); put32(b, 16, 100); return b }, []string{"backing"}},
		{"backing name past EOF", func(b []byte) []byte { put64(b, 8, 1<<40); put32(b, 16, 10); return b }, []string{"backing"}},
		{"snapshot table past EOF", func(b []byte) []byte { put32(b, 60, 1); put64(b, 64, 1<<40); return b }, []string{"snapshot"}},
		{"snapshot table unaligned", func(b []byte) []byte { put32(b, 60, 1); put64(b, 64, uint64(cs)+8); return b }, []string{"snapshot"}},
		{"too many snapshots", func(b []byte) []byte { put32(b, 60, 0xffffffff); put64(b, 64, uint64(cs)); return b }, []string{"snapshot"}},
		{"extension longer than the cluster", func(b []byte) []byte {
			put32(b, 112, 0x12345678)
			put32(b, 116, 0xfffffff0)
			return b
		}, []string{"extension"}},
		{"crypto header extension", func(b []byte) []byte {
			ext := make([]byte, 24)
			put32(ext, 0, 0x0537be77)
			put32(ext, 4, 16)
			insertInHeader(t, b, 112, ext)
			return b
		}, []string{"encrypt"}},
		{"data file extension", func(b []byte) []byte {
			ext := make([]byte, 16)
			put32(ext, 0, 0x44415441)
			put32(ext, 4, 4)
			copy(ext[8:], "data")
			insertInHeader(t, b, 112, ext)
			return b
		}, []string{"data file"}},
		{"empty file", func(b []byte) []byte { return b[:0] }, []string{"short", "qcow2", "header", "empty"}},
		{"truncated inside L1", func(b []byte) []byte { return b[:l1off+4] }, []string{"L1", "end", "short", "truncat"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.edit(bytes.Clone(orig))
			p := filepath.Join(t.TempDir(), "bad.qcow2")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{true, false} {
				var img *qcow2.Image
				var err error
				if pv := callNoPanic(func() { img, err = tryOpen(p, ro) }); pv != nil {
					t.Fatalf("Open (read-only %v) panicked: %v", ro, pv)
				}
				if err == nil {
					img.Close()
					t.Errorf("Open (read-only %v) succeeded, want an error mentioning %q", ro, c.words)
					continue
				}
				if !errSays(err, c.words...) {
					t.Errorf("Open (read-only %v) error %q does not say what is wrong (want one of %q)", ro, err, c.words)
				}
			}
		})
	}

	// Bad table entries: Open may succeed, reading the cluster must fail.
	l2e := func(b []byte, i int) int { return int(l2) + 8*i }
	comp := l2e(nil, 16) // the compressed cluster at 1 MiB
	if be64(orig, comp)&(1<<62) == 0 {
		t.Fatalf("test bug: L2 entry 16 = %#x is not compressed", be64(orig, comp))
	}
	readCases := []struct {
		name  string
		off   int64 // virtual offset to read
		edit  func(b []byte)
		words []string
	}{
		{"L2 entry reserved bit 1", 0, func(b []byte) { put64(b, l2e(b, 0), be64(b, l2e(b, 0))|2) }, []string{"reserved", "L2"}},
		{"L2 entry reserved bit 60", 65536, func(b []byte) { put64(b, l2e(b, 1), be64(b, l2e(b, 1))|1<<60) }, []string{"reserved", "L2"}},
		{"L2 entry unaligned offset", 65536, func(b []byte) { put64(b, l2e(b, 1), be64(b, l2e(b, 1))+512) }, []string{"align", "L2"}},
		{"L1 entry reserved bits", 0, func(b []byte) { put64(b, l1off, be64(b, l1off)|1<<58) }, []string{"reserved", "L1"}},
		{"L1 entry unaligned", 0, func(b []byte) { put64(b, l1off, be64(b, l1off)+512) }, []string{"align", "L1", "L2"}},
		{"L1 entry past EOF", 0, func(b []byte) { put64(b, l1off, 1<<63|1<<40) }, []string{"L2", "end", "EOF", "past"}},
		{"compressed descriptor past EOF", 1 << 20, func(b []byte) {
			put64(b, comp, 1<<62|1<<40) // 1 sector at byte 2^40
		}, []string{"compress", "end", "EOF", "past"}},
		{"compressed descriptor at the header", 1 << 20, func(b []byte) {
			put64(b, comp, 1<<62|3<<54|16) // 4 sectors of header bytes: not deflate
		}, []string{"compress", "inflate", "deflate", "corrupt", "invalid"}},
	}
	for _, c := range readCases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			c.edit(b)
			p := filepath.Join(t.TempDir(), "bad.qcow2")
			os.WriteFile(p, b, 0o644)
			var img *qcow2.Image
			var err error
			if pv := callNoPanic(func() { img, err = tryOpen(p, true) }); pv != nil {
				t.Fatalf("Open panicked: %v", pv)
			}
			if err != nil {
				if !errSays(err, c.words...) {
					t.Errorf("Open error %q does not say what is wrong (want one of %q)", err, c.words)
				}
				return
			}
			defer img.Close()
			buf := make([]byte, 4096)
			var n int
			if pv := callNoPanic(func() { n, err = img.ReadAt(buf, c.off) }); pv != nil {
				t.Fatalf("ReadAt(%d) panicked: %v", c.off, pv)
			}
			if err == nil {
				t.Errorf("ReadAt(len 4096, off %d) = %d, nil; want an error mentioning %q (first bytes % x)", c.off, n, c.words, buf[:8])
			} else if !errSays(err, c.words...) {
				t.Errorf("ReadAt(off %d) error %q does not say what is wrong (want one of %q)", c.off, err, c.words)
			}
			var st error
			if pv := callNoPanic(func() { _, st = img.Status(c.off, 4096) }); pv != nil {
				t.Errorf("Status(%d) panicked: %v", c.off, pv)
			}
			_ = st
		})
	}

	// Extended L2 entries with invalid subcluster bitmaps.
	{
		p := filepath.Join(dir, "ext-base.qcow2")
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", p, "4M")
		qemuimg.IO(t, p, "qcow2", "write -P 0x61 0 200000")
		eb := readFile(t, p)
		el1 := int(be64(eb, 40))
		el2 := int(be64(eb, el1) & 0x00fffffffffffe00)
		for _, c := range []struct {
			name string
			edit func(b []byte)
		}{
			{"ext-L2 subcluster both allocated and zero", func(b []byte) { put64(b, el2+8, be64(b, el2+8)|1<<32) }},
			{"ext-L2 unallocated cluster with allocated subclusters", func(b []byte) { put64(b, el2, 0) }},
		} {
			t.Run(c.name, func(t *testing.T) {
				b := bytes.Clone(eb)
				c.edit(b)
				p := filepath.Join(t.TempDir(), "bad.qcow2")
				os.WriteFile(p, b, 0o644)
				var img *qcow2.Image
				var err error
				if pv := callNoPanic(func() { img, err = tryOpen(p, true) }); pv != nil {
					t.Fatalf("Open panicked: %v", pv)
				}
				if err != nil {
					return
				}
				defer img.Close()
				buf := make([]byte, 4096)
				var n int
				if pv := callNoPanic(func() { n, err = img.ReadAt(buf, 0) }); pv != nil {
					t.Fatalf("ReadAt panicked: %v", pv)
				}
				if err == nil {
					t.Errorf("ReadAt(len 4096, off 0) = %d, nil; want an error about the invalid L2 entry (first bytes % x)", n, buf[:8])
				}
				if pv := callNoPanic(func() { _, err = img.Status(0, 65536) }); pv != nil {
					t.Fatalf("Status panicked: %v", pv)
				}
				if err == nil {
					t.Errorf("Status(0, 65536) = nil error; want an error about the invalid L2 entry")
				}
			})
		}
	}

	// Truncated copies: cut at many points. Cuts before the end of the L1
	// table must fail to open; any cut must not panic, and reads of
	// what remains either fail or succeed without panicking.
	l1end := l1off + 8*int(be32(orig, 36))
	cuts := []int{1, 3, 4, 8, 71, 72, 100, 103, 104, 111, 112, 113, 200, 511, 512, int(cs) - 1, int(cs), int(cs) + 1,
		l1off - 1, l1off, l1off + 1, l1end - 1}
	for c := 0; c < len(orig); c += 4099 {
		cuts = append(cuts, c)
	}
	for _, cut := range cuts {
		if cut >= len(orig) || cut < 0 {
			continue
		}
		p := filepath.Join(dir, "cut.qcow2")
		os.WriteFile(p, orig[:cut], 0o644)
		var img *qcow2.Image
		var err error
		if pv := callNoPanic(func() { img, err = tryOpen(p, true) }); pv != nil {
			t.Errorf("cut at %d: Open panicked: %v", cut, pv)
			continue
		}
		if cut < l1end {
			if err == nil {
				img.Close()
				t.Errorf("cut at %d (L1 table ends at %d): Open succeeded, want an error", cut, l1end)
			}
			continue
		}
		if err != nil {
			continue
		}
		buf := make([]byte, 1<<20)
		for off := int64(0); off < img.Size(); off += int64(len(buf)) {
			if pv := callNoPanic(func() { img.ReadAt(buf, off); img.Status(off, int64(len(buf))) }); pv != nil {
				t.Errorf("cut at %d: ReadAt/Status at %d panicked: %v", cut, off, pv)
				break
			}
		}
		img.Close()
	}
}

// TestOpenBackingMissing: without an opener, an image with a backing file
// fails to open with an error naming it.
func TestOpenBackingMissing(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	writeRandomFile(t, base, 65536, 1)
	p := filepath.Join(dir, "o.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p, "1M")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer noPanic(t)
	img, err := qcow2.Open(f, qcow2.Options{ReadOnly: true})
	if err == nil {
		img.Close()
		t.Fatalf("Open without OpenBacking of an image with a backing file succeeded, want an error")
	}
	f.Close()
	if !strings.Contains(err.Error(), "base.raw") {
		t.Errorf("Open error %q does not name the backing file \"base.raw\"", err)
	}
}
