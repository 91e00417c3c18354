package disk

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
)

// ImageInfo describes an image and its backing chain. The JSON keys are
// those of qemu-img info --output=json where the same fact exists.
type ImageInfo struct {
	Filename    string `json:"filename"`
	Format      Format `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	// ActualSize is the space allocated on disk: st_blocks × 512.
	ActualSize  int64 `json:"actual-size"`
	ClusterSize int64 `json:"cluster-size,omitempty"`
	// DirtyFlag reports a qcow2 image not cleanly closed (with lazy
	// refcounts, its refcounts may be stale).
	DirtyFlag bool `json:"dirty-flag"`
	// Encrypted reports an AES-encrypted qcow image, as qemu-img does.
	Encrypted bool `json:"encrypted,omitempty"`
	// BackingFilename is the backing file's name as stored in the image;
	// FullBackingFilename is where it is, relative to the image's directory.
	BackingFilename     string `json:"backing-filename,omitempty"`
	FullBackingFilename string `json:"full-backing-filename,omitempty"`
	// BackingFormat is the backing format the image records, if it does.
	BackingFormat  string          `json:"backing-filename-format,omitempty"`
	FormatSpecific *FormatSpecific `json:"format-specific,omitempty"`
	// BackingImage describes the backing file, and so on down the chain.
	BackingImage *ImageInfo `json:"backing-image,omitempty"`
	// BackingError says why the backing file could not be described
	// (missing, a loop, a chain too deep); the chain stops there.
	BackingError string `json:"backing-error,omitempty"`
	// Snapshots are a qcow2 image's internal snapshots (snapshot.go).
	Snapshots []SnapshotInfo `json:"snapshots,omitempty"`
	// snapshots are the same, for the text form.
	snapshots []Snapshot
}

// FormatSpecific holds what only one format has, as qemu-img's
// "format-specific" object: Type is "qcow2".
type FormatSpecific struct {
	Type string    `json:"type"`
	Data Qcow2Info `json:"data"`
}

// Qcow2Info is the qcow2 part of ImageInfo. The fields that are pointers
// exist in version 3 images (compat 1.1) only, and are nil for compat 0.10.
type Qcow2Info struct {
	Compat          string `json:"compat"` // "1.1" or "0.10"
	CompressionType string `json:"compression-type"`
	LazyRefcounts   *bool  `json:"lazy-refcounts,omitempty"`
	RefcountBits    int    `json:"refcount-bits"`
	Corrupt         *bool  `json:"corrupt,omitempty"`
	ExtendedL2      *bool  `json:"extended-l2,omitempty"`
}

// InfoOptions control Info.
type InfoOptions struct {
	// ForceShare describes images that a running QEMU writes, as
	// qemu-img info -U does: what it says may be changing.
	ForceShare bool
}

// Info describes the image at path and its backing chain. It reads headers
// only, so it works on images that are dirty or marked corrupt. A backing
// file that cannot be described ends the chain with BackingError set; only
// a problem with path itself is an error.
//
// Each image is locked while its header is read as qemu-img info locks it:
// an image that a running QEMU writes is refused with an error wrapping
// ErrInUse, unless opts.ForceShare. (A backing file so refused ends the
// chain with BackingError set.)
//
// A cancelled ctx stops Info before the next image, with an error wrapping
// ctx's.
func Info(ctx context.Context, path string, opts InfoOptions) (*ImageInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("info %q: %w", path, err)
	}
	lock := func(ft Format) lockMode { return headerLockFor(ft, opts.ForceShare) }
	top, id, err := describe(path, "", lock)
	if err != nil {
		return nil, fmt.Errorf("info %q: %w", path, err)
	}
	ids := []fileID{id}
	names := []string{filepath.Base(path)}
	for cur := top; cur.BackingFilename != ""; {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("info %q: %w", path, err)
		}
		if len(ids) >= MaxChainDepth {
			cur.BackingError = fmt.Sprintf("backing chain is longer than %d images", MaxChainDepth)
			break
		}
		ft, err := parseFormat(cur.BackingFormat)
		if err != nil {
			cur.BackingError = err.Error()
			break
		}
		next, id, err := describe(cur.FullBackingFilename, ft, lock)
		if err != nil {
			cur.BackingError = fmt.Sprintf("open backing file %q: %v", cur.FullBackingFilename, err)
			break
		}
		names = append(names, cur.BackingFilename)
		if i := indexID(ids, id); i >= 0 {
			cur.BackingError = "backing chain loops: " + strings.Join(names, " -> ")
			if names[i] != cur.BackingFilename {
				cur.BackingError += fmt.Sprintf(" (the same file as %s)", names[i])
			}
			break
		}
		ids = append(ids, id)
		cur.BackingImage = next
		cur = next
	}
	return top, nil
}

func indexID(ids []fileID, id fileID) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

// describe reads the facts of one image, of format ft ("" probes), with
// the image file locked as lock says for its format while it does (with no
// locks when lock is nil).
func describe(path string, ft Format, lock func(Format) lockMode) (*ImageInfo, fileID, error) {
	f, _, err := openImageFile(path, false, lockNone)
	if err != nil {
		return nil, fileID{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileID{}, PathCause(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fileID{}, fmt.Errorf("stat: no device and inode")
	}
	id := fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	size, err := f.Seek(0, 2)
	if err != nil {
		return nil, fileID{}, PathCause(err)
	}
	info := &ImageInfo{Filename: path, ActualSize: st.Blocks * 512}
	if ft == "" {
		if ft, err = probe(f); err != nil {
			return nil, fileID{}, err
		}
	}
	if lock != nil {
		if err := lockFile(f, path, id, lock(ft)); err != nil {
			return nil, fileID{}, err
		}
	}
	info.Format = ft
	if ft == FormatRaw {
		info.VirtualSize = rawSize(size)
		return info, id, nil
	}
	if ft == FormatQcow {
		if err := describeQcow(info, f, size); err != nil {
			return nil, fileID{}, err
		}
		return info, id, nil
	}
	h, err := qcow2.ParseHeader(f, size)
	if err != nil {
		return nil, fileID{}, err
	}
	// QEMU 7.2 rounds a size that is not a multiple of 512 down.
	info.VirtualSize = int64(min(h.Size, math.MaxInt64) &^ 511)
	info.ClusterSize = h.ClusterSize()
	info.DirtyFlag = h.Dirty()
	if h.BackingFile != "" {
		info.BackingFilename = h.BackingFile
		info.FullBackingFilename = backingPath(path, h.BackingFile)
		info.BackingFormat = h.BackingFormat
	}
	d := Qcow2Info{
		Compat:          "1.1",
		CompressionType: h.CompressionType.String(),
		RefcountBits:    h.RefcountBits(),
	}
	if h.Version == 2 {
		d.Compat = "0.10"
	} else {
		lazy, corrupt, ext := h.LazyRefcounts(), h.Corrupt(), h.ExtendedL2()
		d.LazyRefcounts, d.Corrupt, d.ExtendedL2 = &lazy, &corrupt, &ext
	}
	info.FormatSpecific = &FormatSpecific{Type: "qcow2", Data: d}
	if info.snapshots, err = qcow2.ReadSnapshots(f, h, size); err != nil {
		return nil, fileID{}, err
	}
	info.Snapshots = snapshotInfos(info.snapshots)
	return info, id, nil
}

// backingPath is where the backing file name of the image at parent
// points: as QEMU's path_combine, name itself when absolute or when parent
// has no directory, else name in parent's directory (not cleaned, so that
// ".." follows symbolic links as the kernel does).
func backingPath(parent, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	i := strings.LastIndexByte(parent, '/')
	if i < 0 {
		return name
	}
	return parent[:i+1] + name
}

// String renders the chain as qemu-img info --backing-chain does: one
// paragraph per image, top first.
func (info *ImageInfo) String() string {
	var b strings.Builder
	for i := info; i != nil; i = i.BackingImage {
		if i != info {
			b.WriteString("\n")
		}
		i.render(&b)
	}
	return b.String()
}

func (info *ImageInfo) render(b *strings.Builder) {
	fmt.Fprintf(b, "image: %s\n", info.Filename)
	fmt.Fprintf(b, "file format: %s\n", info.Format)
	fmt.Fprintf(b, "virtual size: %s (%d bytes)\n", FormatSize(info.VirtualSize), info.VirtualSize)
	fmt.Fprintf(b, "disk size: %s\n", FormatSize(info.ActualSize))
	if info.ClusterSize != 0 {
		fmt.Fprintf(b, "cluster_size: %d\n", info.ClusterSize)
	}
	if info.Encrypted {
		b.WriteString("encrypted: yes\n")
	}
	if info.DirtyFlag {
		b.WriteString("cleanly shut down: no\n")
	}
	if info.BackingFilename != "" {
		fmt.Fprintf(b, "backing file: %s", info.BackingFilename)
		if info.FullBackingFilename != info.BackingFilename {
			fmt.Fprintf(b, " (actual path: %s)", info.FullBackingFilename)
		}
		b.WriteString("\n")
		if info.BackingFormat != "" {
			fmt.Fprintf(b, "backing file format: %s\n", info.BackingFormat)
		}
	}
	if info.BackingError != "" {
		fmt.Fprintf(b, "backing file error: %s\n", info.BackingError)
	}
	if len(info.snapshots) > 0 {
		_ = WriteSnapshotList(b, info.snapshots, time.Local)
	}
	if fs := info.FormatSpecific; fs != nil {
		d := fs.Data
		b.WriteString("Format specific information:\n")
		fmt.Fprintf(b, "    compat: %s\n", d.Compat)
		fmt.Fprintf(b, "    compression type: %s\n", d.CompressionType)
		if d.LazyRefcounts != nil {
			fmt.Fprintf(b, "    lazy refcounts: %t\n", *d.LazyRefcounts)
		}
		fmt.Fprintf(b, "    refcount bits: %d\n", d.RefcountBits)
		if d.Corrupt != nil {
			fmt.Fprintf(b, "    corrupt: %t\n", *d.Corrupt)
		}
		if d.ExtendedL2 != nil {
			fmt.Fprintf(b, "    extended l2: %t\n", *d.ExtendedL2)
		}
	}
}

// FormatSize formats n as QEMU's size_to_str: three significant digits and
// a binary unit, switching unit at 1000 ("196 KiB", "1 GiB", "0.977 KiB"),
// as qemu-img info and qemu-img snapshot -l print sizes.
func FormatSize(n int64) string {
	units := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	_, exp := math.Frexp(float64(n) / (1000.0 / 1024.0))
	i := (exp - 1) / 10
	i = max(0, min(i, len(units)-1))
	v := float64(n) / float64(uint64(1)<<(10*i))
	return strconv.FormatFloat(v, 'g', 3, 64) + " " + units[i] + "B"
}
