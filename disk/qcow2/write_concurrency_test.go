package qcow2_test

// Concurrency: writers and readers at once, the race detector watching.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestConcurrentWrites: goroutines writing disjoint pieces of the same
// unallocated clusters at once, overlapping writes, zero writes, reads and
// flushes, with and without a backing file. Run with -race.
func TestConcurrentWrites(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	writeRandomFile(t, filepath.Join(dir, "cbase.raw"), 8<<20, 41)
	for _, c := range []struct {
		name  string
		opts  qcow2.CreateOptions
		cache int64
	}{
		{"64k", qcow2.CreateOptions{Size: 8 << 20}, 0},
		{"cs512", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, 0},
		{"cs512-tiny-cache", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, 1024},
		{"64k-backing", qcow2.CreateOptions{Size: 8 << 20, BackingFile: "cbase.raw", BackingFormat: "raw"}, 0},
		{"4k-rb1-backing-tiny-cache", qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 4096, RefcountBits: 1, BackingFile: "cbase.raw", BackingFormat: "raw"}, 8192},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noPanic(t)
			path := filepath.Join(dir, c.name+".qcow2")
			img := createImage(t, path, c.opts)
			if c.cache != 0 {
				closeImage(t, c.name, img)
				var err error
				if img, err = tryOpenCache(path, false, c.cache); err != nil {
					t.Fatal(err)
				}
			}
			var want []byte
			if c.opts.BackingFile != "" {
				want = readFile(t, filepath.Join(dir, c.opts.BackingFile))
			} else {
				want = make([]byte, 8<<20)
			}
			const G = 8
			const piece = 3001 // not a divisor of any cluster size
			// Region 1, [0, 4 MiB): goroutine g writes pieces j*G+g: every
			// cluster is written by all goroutines at about the same time.
			// Region 2, [4 MiB, 6 MiB): overlapping writes of byte g+1.
			// Region 3, [6 MiB, 8 MiB): goroutine g owns a slice; writes then
			// zeroes part of it.
			type span struct{ off, n int64 }
			overl := make([][]span, G)
			var wg sync.WaitGroup
			errs := make(chan error, 4*G)
			stop := make(chan struct{})
			for g := 0; g < G; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 9))
					buf := make([]byte, piece)
					for j := 0; ; j++ {
						off := int64(j*G+g) * piece
						if off+piece > 4<<20 {
							break
						}
						fillData(buf, uint64(off))
						if _, err := img.WriteAt(buf, off); err != nil {
							errs <- fmt.Errorf("goroutine %d: WriteAt(off %d): %v", g, off, err)
							return
						}
						if j%10 == 0 {
							// Overlapping region.
							n := 1 + r.Int64N(100000)
							o := 4<<20 + r.Int64N(2<<20-n)
							if _, err := img.WriteAt(bytes.Repeat([]byte{byte(g + 1)}, int(n)), o); err != nil {
								errs <- fmt.Errorf("goroutine %d: WriteAt(off %d): %v", g, o, err)
								return
							}
							overl[g] = append(overl[g], span{o, n})
						}
					}
					// Region 3.
					own := int64(6<<20) + int64(g)*(2<<20)/G
					seg := make([]byte, (2<<20)/G)
					fillData(seg, uint64(own))
					if _, err := img.WriteAt(seg, own); err != nil {
						errs <- fmt.Errorf("goroutine %d: WriteAt(off %d): %v", g, own, err)
						return
					}
					if err := img.WriteZeroes(own+1000, int64(len(seg))/2); err != nil {
						errs <- fmt.Errorf("goroutine %d: WriteZeroes(off %d): %v", g, own+1000, err)
					}
				}(g)
			}
			// A reader and a flusher alongside.
			var aux sync.WaitGroup
			aux.Add(2)
			go func() {
				defer aux.Done()
				buf := make([]byte, 100000)
				for i := int64(0); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := img.ReadAt(buf, (i*7919*512)%(8<<20-100000)); err != nil {
						errs <- fmt.Errorf("concurrent ReadAt: %v", err)
						return
					}
				}
			}()
			go func() {
				defer aux.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := img.Flush(); err != nil {
						errs <- fmt.Errorf("concurrent Flush: %v", err)
						return
					}
				}
			}()
			wg.Wait()
			close(stop)
			aux.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if t.Failed() {
				img.Close()
				return
			}
			// Expected content of regions 1 and 3.
			for off := int64(0); off+piece <= 4<<20; off += piece {
				fillData(want[off:off+piece], uint64(off))
			}
			for g := 0; g < G; g++ {
				own := int64(6<<20) + int64(g)*(2<<20)/G
				seg := want[own : own+(2<<20)/G]
				fillData(seg, uint64(own))
				clear(want[own+1000 : own+1000+int64(len(seg))/2])
			}
			got := make([]byte, 8<<20)
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatalf("ReadAt: %v", err)
			}
			checkRegions := func(what string, got []byte) {
				for _, rg := range [][2]int64{{0, 4 << 20}, {6 << 20, 8 << 20}} {
					if !bytes.Equal(got[rg[0]:rg[1]], want[rg[0]:rg[1]]) {
						t.Errorf("%s: %s", what, describeDiff(got[rg[0]:rg[1]], want[rg[0]:rg[1]], rg[0], imgCS(img)))
					}
				}
				// Region 2: each byte is one of the writers' bytes, or the
				// original when nobody wrote it.
				writers := make([][]byte, 2<<20)
				for g := 0; g < G; g++ {
					for _, s := range overl[g] {
						for i := s.off - 4<<20; i < s.off-4<<20+s.n; i++ {
							writers[i] = append(writers[i], byte(g+1))
						}
					}
				}
				bad := 0
				for i := range writers {
					b := got[4<<20+i]
					ok := len(writers[i]) == 0 && b == want[4<<20+i] || bytes.IndexByte(writers[i], b) >= 0
					if !ok && bad < 3 {
						t.Errorf("%s: overlapping region, offset %d: got %#x, want one of % x (or original %#x)", what, 4<<20+i, b, writers[i], want[4<<20+i])
						bad++
					}
				}
			}
			checkRegions("in memory", got)
			closeImage(t, c.name, img)
			qemuimg.RequireClean(t, path, false)
			raw := qemuimg.ToRaw(t, path, path+".raw")
			checkRegions("qemu-img convert", raw)
		})
	}
}

// TestConcurrentReadWhileFreeing: readers must never see another cluster's
// data while writers zero clusters (freeing their host clusters), flush, and
// write them again (which may reuse freed host clusters). Every 8-byte word
// of guest cluster c holds c<<20|version or zero.
func TestConcurrentReadWhileFreeing(t *testing.T) {
	qemuimg.Require(t)
	defer noPanic(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "rf.qcow2")
	const cs, clusters = 4096, 256
	const compressed = 64 // clusters after the first 256 hold compressed data, read whole
	closeImage(t, "rf", createImage(t, path, qcow2.CreateOptions{Size: cs * (clusters + compressed), ClusterSize: cs}))
	// Reads of the file pause now and then, as a loaded disk would, so
	// that writes happen between a read's lookup and its I/O.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(&slowReadFile{File: f}, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fill := func(b []byte, c, v int64) {
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], uint64(c<<20|v))
		}
	}
	cbuf := make([]byte, cs)
	for c := int64(clusters); c < clusters+compressed; c++ {
		fill(cbuf, c, 0)
		if err := img.WriteCompressed(c*cs, cbuf); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for w := int64(0); w < 2; w++ {
		wg.Add(1)
		go func(w int64) {
			defer wg.Done()
			buf := make([]byte, cs)
			for v := int64(1); v < 40; v++ {
				for c := w; c < clusters; c += 2 {
					fill(buf, c, v)
					if _, err := img.WriteAt(buf, c*cs); err != nil {
						errs <- err
						return
					}
				}
				if err := img.Flush(); err != nil {
					errs <- err
					return
				}
				for c := w; c < clusters; c += 2 {
					if c%3 == v%3 {
						if err := img.WriteZeroes(c*cs, cs); err != nil {
							errs <- err
							return
						}
					}
				}
				if err := img.Flush(); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	var rg sync.WaitGroup
	rg.Add(1)
	go func() {
		// Whole compressed clusters while the writers grow the file.
		defer rg.Done()
		buf := make([]byte, cs)
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := clusters + i%compressed
			if _, err := img.ReadAt(buf, c*cs); err != nil {
				errs <- err
				return
			}
			for k := 0; k < cs; k += 8 {
				if word := binary.LittleEndian.Uint64(buf[k:]); word != uint64(c<<20) {
					errs <- fmt.Errorf("reader: compressed guest cluster %d holds %#x at byte %d, want %#x", c, word, k, c<<20)
					return
				}
			}
		}
	}()
	for rd := 0; rd < 2; rd++ {
		rg.Add(1)
		go func(rd int) {
			defer rg.Done()
			r := rand.New(rand.NewPCG(uint64(rd), 8))
			buf := make([]byte, 8*cs)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c0 := r.Int64N(clusters - 8)
				if _, err := img.ReadAt(buf, c0*cs); err != nil {
					errs <- err
					return
				}
				for i := 0; i < len(buf); i += 8 {
					word := binary.LittleEndian.Uint64(buf[i:])
					c := c0 + int64(i)/cs
					if word != 0 && int64(word>>20) != c {
						errs <- fmt.Errorf("reader: guest cluster %d (offset %d) holds a word of guest cluster %d (version %d)", c, c*cs+int64(i)%cs, word>>20, word&(1<<20-1))
						return
					}
				}
			}
		}(rd)
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	closeImage(t, "rf", img)
	qemuimg.RequireClean(t, path, false)
}
