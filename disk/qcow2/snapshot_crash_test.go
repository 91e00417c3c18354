package qcow2_test

// Crash safety of snapshot operations: the file as a kill -9 at every
// instant of CreateSnapshot, ApplySnapshot and DeleteSnapshot would leave it
// (every prefix of the engine's writes) must pass qemu-img check with
// leaks at worst, and read as the state before or after the operation.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

// snapshotOp is one operation under test, on an open image.
type snapshotOp struct {
	name string
	run  func(img *qcow2.Image) error
}

func TestSnapshotCrash(t *testing.T) {
	qemuimg.Require(t)
	// 512-byte clusters with 64-bit refcounts: 64 refcounts a block, a
	// refcount table that grows, many blocks copied at each switch.
	for _, opts := range []string{"cluster_size=4096", "cluster_size=512,refcount_bits=64"} {
		t.Run(opts, func(t *testing.T) { snapshotCrash(t, opts) })
	}
}

func snapshotCrash(t *testing.T, createOpts string) {
	defer noPanic(t)
	dir := t.TempDir()
	// The starting image: data, a snapshot made by qemu-img, more data
	// (copied on write), compressed clusters.
	start := filepath.Join(dir, "start.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", createOpts, start, fmt.Sprint(snapDisk))
	qemuimg.IO(t, start, "qcow2", "write -P 0x11 0 3M", "write -c -P 0x12 3M 64k")
	qemuimg.Run(t, "snapshot", "-c", "old", start)
	qemuimg.IO(t, start, "qcow2", "write -P 0x21 100k 300k", "write -z 2M 64k")
	active := qemuContents(t, start)
	qemuimg.Run(t, "snapshot", "-a", "old", start)
	old := qemuContents(t, start)
	qemuimg.Run(t, "snapshot", "-c", "tmp", start) // so that applying old changes the disk
	qemuimg.IO(t, start, "qcow2", "write -P 0x21 100k 300k", "write -z 2M 64k")
	qemuimg.Run(t, "snapshot", "-d", "tmp", start)
	requireSame(t, "start", qemuContents(t, start), active)

	ops := []snapshotOp{
		{"create", func(img *qcow2.Image) error {
			_, err := img.CreateSnapshot(qcow2.Snapshot{Name: "new", Date: time.Unix(1796183238, 0)})
			return err
		}},
		{"apply", func(img *qcow2.Image) error { return img.ApplySnapshot("old") }},
		{"delete", func(img *qcow2.Image) error { return img.DeleteSnapshot("old") }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			defer noPanic(t)
			work := filepath.Join(t.TempDir(), "work.qcow2")
			copyFile(t, start, work)
			before := readFile(t, work)
			f, err := os.OpenFile(work, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			rf := &recFile{File: f}
			img, err := qcow2.Open(rf, qcow2.Options{})
			if err != nil {
				t.Fatal(err)
			}
			rf.mu.Lock()
			rf.log = nil // opening may clear autoclear bits: not the operation
			rf.mu.Unlock()
			if err := op.run(img); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuimg.RequireClean(t, work, false)
			want := [][]byte{active}
			if op.name == "apply" {
				want = append(want, old)
			}
			// Every prefix of the writes is what a kill at that instant leaves.
			state := bytes.Clone(before)
			statePath := filepath.Join(t.TempDir(), "state.qcow2")
			writes, checked := 0, 0
			// Every state of small logs; of long ones (the 512-byte image
			// copies hundreds of blocks, all before the switch) a sample,
			// with the first and the last states always.
			stride := max(1, len(rf.log)/40)
			for i := 0; i <= len(rf.log); i++ {
				if i > 0 {
					e := rf.log[i-1]
					switch e.kind {
					case 'w':
						if end := e.off + int64(len(e.data)); end > int64(len(state)) {
							state = append(state, make([]byte, end-int64(len(state)))...)
						}
						copy(state[e.off:], e.data)
						writes++
					case 't':
						if e.off < int64(len(state)) {
							state = state[:e.off]
						} else {
							state = append(state, make([]byte, e.off-int64(len(state)))...)
						}
						continue
					default:
						continue
					}
				}
				if i%stride != 0 && i < len(rf.log)-4 {
					continue
				}
				checked++
				if err := os.WriteFile(statePath, state, 0o644); err != nil {
					t.Fatal(err)
				}
				label := fmt.Sprintf("%s killed after %d writes", op.name, writes)
				r := qemuimg.Check(t, statePath)
				if r.Corruptions != 0 || r.CheckErrors != 0 {
					t.Fatalf("%s: %d corruptions, %d check errors:\n%s", label, r.Corruptions, r.CheckErrors, r.Stderr)
				}
				img := openImage(t, statePath, true)
				got := readAll(t, img)
				img.Close()
				ok := false
				for _, w := range want {
					ok = ok || bytes.Equal(got, w)
				}
				if !ok {
					t.Fatalf("%s: the disk reads neither as before nor as after", label)
				}
			}
			t.Logf("%s: %d of %d states checked", op.name, checked, writes+1)
		})
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.WriteFile(dst, readFile(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
}
