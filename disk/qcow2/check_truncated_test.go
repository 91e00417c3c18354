package qcow2

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// truncationPoints returns where to cut the image in b: inside each kind of
// structure it holds, named by what the cut lands in.
func truncationPoints(t *testing.T, b []byte) map[string]int64 {
	t.Helper()
	h, err := ParseHeader(&checkMemFile{data: b}, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	cs := h.ClusterSize()
	size := int64(len(b))
	points := map[string]int64{
		"header cluster":   cs / 2,
		"refcount table":   int64(h.RefcountTableOffset) + 100,
		"L1 entry":         int64(h.L1TableOffset) + 4,
		"after L1 table":   int64(h.L1TableOffset) + int64(h.L1Size)*8,
		"one cluster less": size - cs,
		"last byte":        size - 1,
	}
	if rb := tableEntry[refTableEntry](b[h.RefcountTableOffset:], 0).blockOffset(); rb != 0 {
		points["refcount block"] = rb + cs/2 + 1
	}
	var l2 int64
	for i := int64(0); i < int64(h.L1Size) && l2 == 0; i++ {
		l2 = tableEntry[l1Entry](b[h.L1TableOffset:], i).l2Offset()
	}
	if l2 == 0 {
		t.Fatal("no L2 table")
	}
	points["L2 table"] = l2 + 3*h.l2EntrySize() + 3
	for j := int64(0); j < h.l2Entries(); j++ {
		e := l2At(b[l2:], j, h.ExtendedL2()).entry
		off := e.offset()
		if e.compressed() {
			off, _ = e.compressedRange(h.ClusterBits)
		}
		if off != 0 {
			points["data"] = off + cs/2 + 5
			break
		}
	}
	if _, ok := points["data"]; !ok {
		t.Fatal("no data cluster in the first L2 table")
	}
	for name, p := range points {
		if p <= 0 || p >= size {
			delete(points, name)
		}
	}
	return points
}

// TestCheckTruncatedMatchesQemuImg: a truncated image is damaged, not a
// reason for the check to fail. Check reports what qemu-img check reports,
// with its counters and exit code (2: corruptions).
func TestCheckTruncatedMatchesQemuImg(t *testing.T) {
	qemuimg.Require(t)
	specs := []checkSpec{
		{name: "default", io: []string{"write -P 0x55 0 3M", "write -P 0x66 5M 64k", "write -z 6M 64k"}},
		{name: "cs4k", create: []string{"-o", "cluster_size=4k"}, io: checkScatter},
		{name: "cs512-refcount1", create: []string{"-o", "cluster_size=512,refcount_bits=1"}, io: checkScatter},
		{name: "refcount64", create: []string{"-o", "cluster_size=4k,refcount_bits=64"}, io: checkScatter},
		{name: "extendedL2", create: []string{"-o", "extended_l2=on,cluster_size=16k"}, io: checkScatter},
		{name: "compat010", create: []string{"-o", "compat=0.10,cluster_size=4k"}, io: checkScatter},
		{name: "compressed", prepare: checkCompressedImage("cluster_size=4k")},
		{name: "snapshots", prepare: checkWithSnapshots("cluster_size=4k")},
	}
	for _, spec := range specs {
		t.Run(spec.name, func(t *testing.T) {
			full := buildCheckImage(t, spec)
			b, err := os.ReadFile(full)
			if err != nil {
				t.Fatal(err)
			}
			points := truncationPoints(t, b)
			if spec.name == "default" {
				points["the issue's 100,000 bytes"] = 100000
			}
			names := make([]string, 0, len(points))
			for name := range points {
				names = append(names, name)
			}
			sort.Strings(names)
			corrupt := 0
			for _, name := range names {
				n := points[name]
				t.Run(fmt.Sprintf("%s at %d", name, n), func(t *testing.T) {
					path := filepath.Join(t.TempDir(), "cut.qcow2")
					if err := os.WriteFile(path, b[:n], 0o644); err != nil {
						t.Fatal(err)
					}
					if got := compareCheckWithQemu(t, path); checkExitClass(got) == 2 {
						corrupt++
					}
				})
			}
			if corrupt == 0 {
				t.Errorf("no truncation point gave a corrupt image: the test cuts in the wrong places")
			}
		})
	}
}
