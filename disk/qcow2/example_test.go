package qcow2_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vmtui/vmtui/disk/qcow2"
)

// Create a 16 MiB image, write to it and read back.
func ExampleCreate() {
	dir, err := os.MkdirTemp("", "qcow2-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	f, err := os.OpenFile(filepath.Join(dir, "disk.qcow2"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	// The image owns f from now on, and closes it.
	img, err := qcow2.Create(f, qcow2.CreateOptions{Size: 16 << 20}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("hello, qcow2"), 1<<20); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 12)
	if _, err := img.ReadAt(buf, 1<<20); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", buf)
	// Close writes the metadata back and syncs; Flush does it without closing.
	if err := img.Close(); err != nil {
		log.Fatal(err)
	}
	// Output: "hello, qcow2"
}

// Open an existing image read-only and list what its virtual disk holds.
func ExampleOpen() {
	dir, path := exampleImage()
	defer os.RemoveAll(dir)

	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	img, err := qcow2.Open(f, qcow2.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err) // a *qcow2.FormatError says where a damaged image is damaged
	}
	defer img.Close()

	h := img.Header()
	fmt.Printf("version %d, %d-byte clusters, %d bytes\n", h.Version, h.ClusterSize(), img.Size())
	for off := int64(0); off < img.Size(); {
		e, err := img.Status(off, img.Size()-off)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%8d +%8d %s\n", e.Offset, e.Length, e.Kind)
		off += e.Length
	}
	// Output:
	// version 3, 65536-byte clusters, 16777216 bytes
	//        0 + 1048576 zero
	//  1048576 +   65536 data
	//  1114112 +15663104 zero
}

// Check an image's refcounts against its metadata, as qemu-img check does.
func ExampleCheck() {
	dir, path := exampleImage()
	defer os.RemoveAll(dir)

	// Read-only is enough without repairs; RepairLeaks and RepairAll write.
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	r, err := qcow2.Check(context.Background(), f, qcow2.RepairNone)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d corruptions, %d leaks, %d of %d clusters allocated\n",
		r.Corruptions, r.Leaks, r.AllocatedClusters, r.TotalClusters)
	for _, m := range r.Messages {
		fmt.Println(m) // qemu-img check's words: "Leaked cluster 9 refcount=1 reference=0"
	}
	// Output: 0 corruptions, 0 leaks, 1 of 256 clusters allocated
}

// exampleImage makes, in a new directory, the image ExampleCreate makes:
// 16 MiB with 12 bytes at 1 MiB.
func exampleImage() (dir, path string) {
	dir, err := os.MkdirTemp("", "qcow2-example")
	if err != nil {
		log.Fatal(err)
	}
	path = filepath.Join(dir, "disk.qcow2")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	img, err := qcow2.Create(f, qcow2.CreateOptions{Size: 16 << 20}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("hello, qcow2"), 1<<20); err != nil {
		log.Fatal(err)
	}
	if err := img.Close(); err != nil {
		log.Fatal(err)
	}
	return dir, path
}
