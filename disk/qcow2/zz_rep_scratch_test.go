package qcow2_test

import (
	"os"
	"testing"

	"vmtui/disk/qcow2"
)

func TestZZRep(t *testing.T) {
	for _, mem := range []bool{false, true} {
		p := t.TempDir() + "/r.qcow2"
		var f qcow2.File
		if mem {
			f = &memRW{}
		} else {
			f, _ = os.Create(p)
		}
		img, err := qcow2.Create(f, qcow2.CreateOptions{Size: 1 << 20, ClusterSize: 512, RefcountBits: 32}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0xe6e00, 0xa0000} {
			b := make([]byte, 512)
			fillData(b, 110)
			if err := img.WriteCompressed(off, b); err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			t.Logf("mem %v: after compressed write at %#x: file %d bytes", mem, off, st.Size())
		}
		got := make([]byte, 1<<20)
		if _, err := img.ReadAt(got, 0); err != nil {
			t.Errorf("mem %v: ReadAt: %v", mem, err)
		}
		img.Close()
	}
}
