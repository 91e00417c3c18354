package qcow

import (
	"bytes"
	"context"
	"testing"
)

// op is one operation a crashFile saw: a write, a truncate or a sync.
type op struct {
	kind byte // 'w', 't' or 's'
	off  int64
	data []byte
}

// crashFile is a memFile that logs what is done to it, to replay any
// prefix of it as what a crash would leave.
type crashFile struct {
	memFile
	ops []op
}

func (c *crashFile) WriteAt(p []byte, off int64) (int, error) {
	c.ops = append(c.ops, op{'w', off, bytes.Clone(p)})
	return c.memFile.WriteAt(p, off)
}

func (c *crashFile) Truncate(n int64) error {
	c.ops = append(c.ops, op{kind: 't', off: n})
	return c.memFile.Truncate(n)
}

func (c *crashFile) Sync() error {
	c.ops = append(c.ops, op{kind: 's'})
	return nil
}

// Crash models: which writes since the last sync reach the disk.
const (
	allWrites    = iota // every write, in order
	syncedOnly          // none
	metadataOnly        // the table writes only (8-byte L1 entries, 512-byte L2 tables), not the data
)

// replay applies ops to a copy of start, keeping the writes after the last
// sync as model says.
func replay(start []byte, ops []op, model int) []byte {
	last := 0
	for i, o := range ops {
		if o.kind == 's' {
			last = i + 1
		}
	}
	var kept []op
	for i, o := range ops {
		if i < last || model == allWrites || model == metadataOnly && o.kind == 'w' && (len(o.data) == 8 || len(o.data) == 512) {
			kept = append(kept, o)
		}
	}
	ops = kept
	m := &memFile{bytes.Clone(start)}
	for _, o := range ops {
		switch o.kind {
		case 'w':
			m.WriteAt(o.data, o.off)
		case 't':
			m.Truncate(o.off)
		}
	}
	return m.b
}

// patternBacking is a backing image whose byte i is byte(i*7).
type patternBacking struct{ size int64 }

func (p patternBacking) ReadAt(b []byte, off int64) (int, error) {
	for i := range b {
		b[i] = byte((off + int64(i)) * 7)
	}
	return len(b), nil
}
func (p patternBacking) Size() int64  { return p.size }
func (p patternBacking) Close() error { return nil }

// TestCrashSafety kills the writer at every step of a sequence of writes
// (the data and tables written so far on disk, or only what was synced) and
// checks that the image opens, checks with no corruption, and reads each
// 512-byte block as one of the states the writes went through.
func TestCrashSafety(t *testing.T) {
	const size = 1 << 20
	base := &memFile{}
	if err := Create(base, CreateOptions{Size: size, BackingFile: "b", ClusterBits: 12, L2Bits: 6}); err != nil {
		t.Fatal(err)
	}
	opener := Options{OpenBacking: func(string) (Backing, error) { return patternBacking{size}, nil }}
	// A first generation, flushed: a plain cluster and a compressed one.
	img, err := Open(base, opener)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteCompressed(8192, bytes.Repeat([]byte{2}, 4096)); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	start := bytes.Clone(base.b)

	// The states each block may be in: before, and after each write.
	read := func(b []byte) []byte {
		img, err := Open(&memFile{bytes.Clone(b)}, Options{ReadOnly: true, OpenBacking: opener.OpenBacking})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer img.Close()
		out := make([]byte, size)
		if _, err := img.ReadAt(out, 0); err != nil {
			t.Fatalf("read: %v", err)
		}
		return out
	}
	states := [][]byte{read(start)}
	cf := &crashFile{memFile: memFile{bytes.Clone(start)}}
	img, err = Open(cf, opener)
	if err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		off  int64
		data []byte
	}{
		{100, bytes.Repeat([]byte{3}, 200)},        // in place
		{8192 + 50, bytes.Repeat([]byte{4}, 100)},  // over the compressed cluster
		{20000, bytes.Repeat([]byte{5}, 9000)},     // copy-on-write from the base, three clusters
		{700 << 10, bytes.Repeat([]byte{6}, 5000)}, // a new L2 table
	}
	cur := bytes.Clone(states[0])
	for i, w := range writes {
		if _, err := img.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
		copy(cur[w.off:], w.data)
		states = append(states, bytes.Clone(cur))
		if i == 1 {
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	for k := range len(cf.ops) + 1 {
		for _, synced := range []int{allWrites, syncedOnly, metadataOnly} {
			b := replay(start, cf.ops[:k], synced)
			res, err := Check(context.Background(), &memFile{b})
			if err != nil || res.Corruptions != 0 {
				t.Fatalf("crash after %d of %d steps (crash model %d): check %+v, %v", k, len(cf.ops), synced, res, err)
			}
			got := read(b)
			for blk := 0; blk < size; blk += 512 {
				okState := false
				for _, s := range states {
					if bytes.Equal(got[blk:blk+512], s[blk:blk+512]) {
						okState = true
						break
					}
				}
				if !okState {
					t.Fatalf("crash after %d of %d steps (crash model %d): block at %d reads as no state the writes went through", k, len(cf.ops), synced, blk)
				}
			}
		}
	}
	if final := read(cf.b); !bytes.Equal(final, states[len(states)-1]) {
		t.Fatal("the image after Close does not read as written")
	}
}
