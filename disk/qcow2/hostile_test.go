package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"
)

// hostileImage is a header crafted so that a table's offset plus its length
// wraps around 2^64, or an offset has its top bit set.
type hostileImage struct {
	name string
	data []byte
	// checks is whether Check, which accepts tables past the end of the
	// file as QEMU does, gets through the header and reports corruptions
	// instead of refusing it with a *FormatError.
	checks bool
}

// hostileImages returns the hostile images: an empty image of three
// clusters (header, refcount table, refcount block) of cs bytes with one
// header field patched each. With 64 KiB clusters it is 192 KiB, the image
// of the issue.
func hostileImages(tb testing.TB, cs int64) []hostileImage {
	tb.Helper()
	m := &checkMemFile{}
	img, err := Create(m, CreateOptions{Size: 0, ClusterSize: cs}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := img.Close(); err != nil {
		tb.Fatal(err)
	}
	if int64(len(m.data)) != 3*cs {
		tb.Fatalf("base image is %d bytes, want three clusters of %d", len(m.data), cs)
	}
	base := m.data
	be := binary.BigEndian
	patch := func(name string, checks bool, edit func(b []byte)) hostileImage {
		b := append([]byte(nil), base...)
		edit(b)
		return hostileImage{name: name, data: b, checks: checks}
	}
	const top = 1 << 63
	images := []hostileImage{
		// The image of the issue: 32 MiB of L1 table at 2^64 - 32 MiB.
		patch("l1-wraps", false, func(b []byte) {
			be.PutUint32(b[36:], maxL1Bytes/8)
			be.PutUint64(b[40:], below2to64(maxL1Bytes))
		}),
		patch("l1-top-bit", false, func(b []byte) {
			be.PutUint32(b[36:], 1)
			be.PutUint64(b[40:], top)
		}),
		patch("l1-top-bit-empty", false, func(b []byte) { be.PutUint64(b[40:], top) }),
		patch("l1-ends-past-2^63", false, func(b []byte) {
			be.PutUint32(b[36:], maxL1Bytes/8)
			be.PutUint64(b[40:], top-maxL1Bytes/2)
		}),
		patch("reftable-wraps", false, func(b []byte) {
			be.PutUint32(b[56:], uint32(maxRefTableBytes/cs))
			be.PutUint64(b[48:], below2to64(maxRefTableBytes))
		}),
		patch("reftable-top-bit", false, func(b []byte) { be.PutUint64(b[48:], top) }),
		patch("snapshots-wrap", false, func(b []byte) {
			be.PutUint32(b[60:], maxSnapshots)
			be.PutUint64(b[64:], below2to64(uint64(cs)))
		}),
		patch("backing-name-wraps", false, func(b []byte) {
			be.PutUint64(b[8:], below2to64(16))
			be.PutUint32(b[16:], 32)
		}),
		patch("size-wraps", false, func(b []byte) { be.PutUint64(b[24:], below2to64(512)) }),
	}
	// A bitmap directory whose end wraps: a corruption for Check.
	h, err := ParseHeader(m, int64(len(base)))
	if err != nil {
		tb.Fatal(err)
	}
	h.AutoclearFeatures |= AutoclearBitmaps
	h.Bitmaps = &BitmapsExtension{Count: 1, DirectorySize: 2 * uint64(cs), DirectoryOffset: below2to64(uint64(cs))}
	c0, err := h.marshal()
	if err != nil {
		tb.Fatal(err)
	}
	images = append(images, patch("bitmap-directory-wraps", true, func(b []byte) { copy(b, c0) }))
	return images
}

// below2to64 returns 2^64 - n.
func below2to64(n uint64) uint64 { return math.MaxUint64 - n + 1 }

// measureAlloc returns the bytes allocated while f runs. The qcow2 tests
// that would disturb it (t.Parallel ones) do not run at the same time as
// this package's sequential tests.
func measureAlloc(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHostileHeaders: offsets and lengths that wrap around 2^64 are
// refused with a *FormatError before anything large is allocated.
func TestHostileHeaders(t *testing.T) {
	const allocBound = 4 << 20 // the bug allocated 32 MiB
	for _, hi := range append(hostileImages(t, 64<<10), hostileImages(t, 512)...) {
		t.Run(fmt.Sprintf("%s-%dk", hi.name, len(hi.data)>>10), func(t *testing.T) {
			for _, readOnly := range []bool{true, false} {
				var err error
				start := time.Now()
				n := measureAlloc(func() {
					var img *Image
					img, err = Open(&checkMemFile{data: append([]byte(nil), hi.data...)}, Options{ReadOnly: readOnly})
					if err == nil {
						img.Close()
					}
				})
				var fe *FormatError
				switch {
				case hi.checks:
					// Open need not refuse it; it must not fail otherwise.
					if err != nil && !errors.As(err, &fe) {
						t.Errorf("Open(read-only %t): %v (%T), want nil or a *FormatError", readOnly, err, err)
					}
				case !errors.As(err, &fe):
					t.Errorf("Open(read-only %t): got %v (%T), want a *FormatError", readOnly, err, err)
				}
				if n > allocBound {
					t.Errorf("Open(read-only %t) allocated %d bytes, want at most %d", readOnly, n, allocBound)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("Open(read-only %t) took %v", readOnly, d)
				}
			}
			for _, mode := range []RepairMode{RepairNone, RepairAll} {
				var res *CheckResult
				var err error
				n := measureAlloc(func() {
					res, err = Check(t.Context(), &checkMemFile{data: append([]byte(nil), hi.data...)}, mode)
				})
				var fe *FormatError
				switch {
				case hi.checks:
					if res == nil || res.Corruptions == 0 {
						t.Errorf("Check(%d): got %+v, %v; want corruptions reported", mode, res, err)
					}
				case !errors.As(err, &fe):
					t.Errorf("Check(%d): got %v (%T), want a *FormatError", mode, err, err)
				}
				if n > allocBound {
					t.Errorf("Check(%d) allocated %d bytes, want at most %d", mode, n, allocBound)
				}
			}
		})
	}
}

// HostileImages returns the small (512-byte cluster) hostile images, for
// the fuzz targets' seed corpus.
func HostileImages(tb testing.TB) [][]byte {
	var out [][]byte
	for _, hi := range hostileImages(tb, 512) {
		out = append(out, hi.data)
	}
	return out
}
