package qcow2

// Check on in-memory images: header failures, the fuzz seeds and FuzzCheck.

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// TestCheckRefusesNonQcow2 and other header failures come back as errors.
func TestCheckHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, nil},
		{"not qcow2", bytes.Repeat([]byte("x"), 512), ErrNotQcow2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Check(t.Context(), &checkMemFile{data: tc.data}, RepairNone)
			if err == nil {
				t.Fatalf("Check succeeded: %+v", res)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Check(t.Context(), &checkMemFile{}, RepairMode(7)); err == nil {
		t.Error("unknown repair mode accepted")
	}
}

// checkMemFile is an in-memory File.
type checkMemFile struct {
	data  []byte
	syncs int
}

func (m *checkMemFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *checkMemFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if end := off + int64(len(p)); end > int64(len(m.data)) {
		if end > 1<<30 {
			return 0, errors.New("checkMemFile: too large")
		}
		m.data = append(m.data, make([]byte, end-int64(len(m.data)))...)
	}
	return copy(m.data[off:], p), nil
}

func (m *checkMemFile) Sync() error { m.syncs++; return nil }

func (m *checkMemFile) Truncate(size int64) error {
	if size < int64(len(m.data)) {
		m.data = m.data[:size]
		return nil
	}
	_, err := m.WriteAt(nil, size)
	return err
}

func (m *checkMemFile) Stat() (fs.FileInfo, error) { return checkMemInfo{int64(len(m.data))}, nil }
func (m *checkMemFile) Close() error               { return nil }

type checkMemInfo struct{ size int64 }

func (i checkMemInfo) Name() string       { return "mem" }
func (i checkMemInfo) Size() int64        { return i.size }
func (i checkMemInfo) Mode() fs.FileMode  { return 0o600 }
func (i checkMemInfo) ModTime() time.Time { return time.Time{} }
func (i checkMemInfo) IsDir() bool        { return false }
func (i checkMemInfo) Sys() any           { return nil }

var updateCheckSeeds = flag.Bool("update-check-seeds", false, "regenerate testdata/check/*.qcow2 with qemu-img")

// checkSeeds are the small images FuzzCheck starts from.
var checkSeeds = []checkSpec{
	{name: "small", create: []string{"-o", "cluster_size=512"}, size: "64k", io: []string{"write -P 1 0 1k", "write -z 8k 1k", "write -P 2 40k 600"}},
	{name: "refcount1", create: []string{"-o", "cluster_size=512,refcount_bits=1"}, size: "64k", io: []string{"write -P 1 1k 2k"}},
	{name: "refcount64", create: []string{"-o", "cluster_size=512,refcount_bits=64"}, size: "64k", io: []string{"write -P 1 1k 2k"}},
	{name: "v2", create: []string{"-o", "cluster_size=512,compat=0.10"}, size: "64k", io: []string{"write -P 1 0 2k"}},
	{name: "extl2", create: []string{"-o", "cluster_size=16k,extended_l2=on"}, size: "64k", io: []string{"write -P 1 1k 1k", "write -z 20k 1k"}},
	{name: "snapshot", size: "64k", prepare: func(t *testing.T, dir, path string) {
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "64k")
		qemuimg.IO(t, path, "qcow2", "write -P 1 0 2k")
		qemuimg.Run(t, "snapshot", "-c", "s1", path)
		qemuimg.IO(t, path, "qcow2", "write -P 2 512 512")
	}},
	{name: "compressed", prepare: func(t *testing.T, dir, path string) {
		raw := filepath.Join(dir, "src.raw")
		qemuimg.Run(t, "create", "-q", "-f", "raw", raw, "64k")
		qemuimg.IO(t, raw, "raw", "write -P 1 0 8k", "write -P 2 32k 1k")
		qemuimg.Run(t, "convert", "-q", "-c", "-O", "qcow2", "-o", "cluster_size=512", raw, path)
	}},
	{name: "bitmap", prepare: func(t *testing.T, dir, path string) {
		qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "64k")
		qemuimg.Run(t, "bitmap", "--add", path, "b0")
		qemuimg.IO(t, path, "qcow2", "write -P 1 0 1k")
	}},
}

// TestCheckSeeds keeps the fuzz seeds honest: each is an image qemu-img
// calls clean, and Check agrees. With -update-check-seeds it remakes them.
func TestCheckSeeds(t *testing.T) {
	qemuimg.Require(t)
	for _, spec := range checkSeeds {
		t.Run(spec.name, func(t *testing.T) {
			dst := filepath.Join("testdata", "check", spec.name+".qcow2")
			if *updateCheckSeeds {
				path := buildCheckImage(t, spec)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dst, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Check a copy: qemu-img must not touch testdata.
			b, err := os.ReadFile(dst)
			if err != nil {
				t.Fatalf("%v (run with -update-check-seeds)", err)
			}
			path := filepath.Join(t.TempDir(), "seed.qcow2")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if got := compareCheckWithQemu(t, path); checkExitClass(got) != 0 {
				t.Errorf("seed is not clean: %+v", got)
			}
		})
	}
}

// FuzzCheck runs Check and both repairs on mutated images: no panics, no
// errors other than refusals, and a repair must never grow the file by
// more than one cluster (a short refcount block completed).
func FuzzCheck(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "check", "*.qcow2"))
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range HostileImages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4<<20 {
			return
		}
		for _, mode := range []RepairMode{RepairNone, RepairLeaks, RepairAll} {
			m := &checkMemFile{data: bytes.Clone(data)}
			res, err := Check(t.Context(), m, mode)
			if err != nil {
				continue
			}
			if res.Corruptions < 0 || res.Leaks < 0 || res.CheckErrors < 0 {
				t.Fatalf("negative counters: %+v", res)
			}
			h, _ := ParseHeader(&checkMemFile{data: data}, int64(len(data)))
			if h != nil && int64(len(m.data)) > int64(len(data))+h.ClusterSize() {
				t.Fatalf("repair grew the file from %d to %d bytes", len(data), len(m.data))
			}
		}
	})
}
