package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/internal/qemuimg"
)

// These tests build the vmtui binary once and run it as a user would,
// checking its output and exit status, and checking the images it writes
// with QEMU's qemu-img and qemu-io.

var vmtuiBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "vmtui-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtui tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	vmtuiBin = filepath.Join(dir, "vmtui")
	if out, err := exec.Command("go", "build", "-o", vmtuiBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "vmtui tests: go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// result is what one run of vmtui did.
type result struct {
	stdout, stderr string
	code           int
}

// vmtui runs the binary in dir with args.
func vmtui(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(vmtuiBin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("vmtui %q: %v", args, err)
	}
	return r
}

// ok runs vmtui and fails the test unless it exits 0.
func ok(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := vmtui(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("vmtui %q: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// fails runs vmtui, expects exit status code and a stderr that contains want,
// and an empty stdout.
func fails(t *testing.T, dir string, code int, want string, args ...string) result {
	t.Helper()
	r := vmtui(t, dir, args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Fatalf("vmtui %q: exit %d, stderr %q; want exit %d and stderr containing %q", args, r.code, r.stderr, code, want)
	}
	if r.stdout != "" {
		t.Errorf("vmtui %q: stdout %q, want nothing", args, r.stdout)
	}
	return r
}

// requireQEMU skips the test when qemu-img or qemu-io is missing, except in
// CI, where it fails: CI installs qemu-utils.
func requireQEMU(t *testing.T) { qemuimg.Require(t) }

// tool runs a QEMU tool in dir and returns stdout, stderr and the exit code.
func tool(t *testing.T, dir, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s %q: %v", name, args, err)
	}
	return stdout.String(), stderr.String(), 0
}

// qemuImg runs qemu-img and fails the test unless it exits 0.
func qemuImg(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, code := tool(t, dir, "qemu-img", args...)
	if code != 0 {
		t.Fatalf("qemu-img %q: exit %d: %s%s", args, code, out, errOut)
	}
	return out
}

// qemuIO runs qemu-io commands on an image and fails the test if one fails
// (qemu-io reports failed commands on stdout and still exits 0).
func qemuIO(t *testing.T, dir, image, format string, cmds ...string) {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, errOut, code := tool(t, dir, "qemu-io", append(args, image)...)
	if code != 0 || strings.Contains(out, "failed") || strings.Contains(out, "error") || errOut != "" {
		t.Fatalf("qemu-io %q: exit %d: %s%s", args, code, out, errOut)
	}
}

// imageInfo is the part of info --json compared with qemu-img's.
type imageInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	ClusterSize     int64  `json:"cluster-size"`
	BackingFilename string `json:"backing-filename"`
	BackingFormat   string `json:"backing-filename-format"`
	FormatSpecific  struct {
		Data struct {
			CompressionType string `json:"compression-type"`
		} `json:"data"`
	} `json:"format-specific"`
}

// qemuInfo is qemu-img info --output=json of an image in dir.
func qemuInfo(t *testing.T, dir, image string) qemuimg.Info {
	t.Helper()
	return qemuimg.ImageInfo(t, filepath.Join(dir, image))
}

// imageSize returns the format qemu-img detects and the virtual size: for
// raw, the file's size, which qemu-img rounds up to 512 bytes.
func imageSize(t *testing.T, dir, image string) (string, int64) {
	t.Helper()
	info := qemuInfo(t, dir, image)
	if info.Format != "raw" {
		return info.Format, info.VirtualSize
	}
	fi, err := os.Stat(filepath.Join(dir, image))
	if err != nil {
		t.Fatal(err)
	}
	return info.Format, fi.Size()
}

// requireClean fails the test unless qemu-img check finds nothing wrong.
func requireClean(t *testing.T, dir, image string) qemuimg.CheckResult {
	t.Helper()
	return qemuimg.RequireClean(t, filepath.Join(dir, image), false)
}

// requireSame fails the test unless qemu-img compare finds the images'
// contents identical.
func requireSame(t *testing.T, dir, a, b string) {
	t.Helper()
	if out, errOut, code := tool(t, dir, "qemu-img", "compare", a, b); code != 0 {
		t.Fatalf("qemu-img compare %s %s: exit %d: %s%s", a, b, code, out, errOut)
	}
}

// makeSource makes a qcow2 image with qemu-img and writes a few patterns
// into it with qemu-io: data, a zeroed range and unallocated space.
func makeSource(t *testing.T, dir, name, size string) {
	t.Helper()
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", name, size)
	qemuIO(t, dir, name, "qcow2",
		"write -P 0xa5 0 1M",
		"write -P 0x5a 3M 64k",
		"write -z 5M 128k",
		"write -P 0x11 7M 1000")
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	usageLine := "\tvmtui create [-c] [-b base | -i input] [-f qcow2|raw|qcow] [-s size] disk\n"
	// No arguments and no terminal: the usage on stderr and exit 1, as vmctl does.
	r := fails(t, dir, 1, usageLine, []string{}...)
	if !strings.HasPrefix(r.stderr, "usage:\tvmtui ") {
		t.Errorf("stderr starts %q, want the usage", r.stderr)
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"he"}} {
		r := ok(t, dir, args...)
		for _, cmd := range []string{"create", "disk check", "disk commit", "disk convert", "disk info", "disk resize", "help"} {
			if !strings.Contains(r.stdout, "\tvmtui "+cmd+" ") && !strings.Contains(r.stdout, "\tvmtui "+cmd+"\n") {
				t.Errorf("vmtui %q: usage lacks %q:\n%s", args, cmd, r.stdout)
			}
		}
		if r.stderr != "" {
			t.Errorf("vmtui %q: stderr %q, want nothing", args, r.stderr)
		}
	}
	// One command's help: its usage line and flags, on stdout.
	for _, args := range [][]string{{"help", "create"}, {"create", "-h"}, {"cr", "--help"}} {
		r := ok(t, dir, args...)
		if !strings.HasPrefix(r.stdout, "usage:"+usageLine) || !strings.Contains(r.stdout, "-s size") {
			t.Errorf("vmtui %q: stdout %q, want the create usage and its flags", args, r.stdout)
		}
	}
	r = ok(t, dir, "help", "disk", "conv")
	if !strings.Contains(r.stdout, "--compression-type type") {
		t.Errorf("vmtui help disk conv: %q, want the convert flags", r.stdout)
	}
	// A subcommand group alone: its usage, exit 1.
	fails(t, dir, 1, "usage:\tvmtui disk check [-U | -r leaks|all] disk\n\tvmtui disk commit [-p] overlay\n", "disk")
}

func TestCommandPrefixes(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "src.qcow2", "16M")
	// Unambiguous prefixes of commands and subcommands.
	ok(t, dir, "cr", "-s", "1M", "a.qcow2") // "c" alone will be ambiguous once console exists
	ok(t, dir, "cre", "-s", "1M", "b.qcow2")
	ok(t, dir, "create", "-s", "1M", "c.qcow2")
	for _, args := range [][]string{{"di", "i", "a.qcow2"}, {"disk", "inf", "a.qcow2"}, {"di", "info", "a.qcow2"}} {
		if r := ok(t, dir, args...); !strings.Contains(r.stdout, "file format: qcow2\n") {
			t.Errorf("vmtui %q: %q", args, r.stdout)
		}
	}
	ok(t, dir, "disk", "conv", "src.qcow2", "out.qcow2")
	ok(t, dir, "disk", "ch", "out.qcow2")
	ok(t, dir, "disk", "r", "a.qcow2", "2M")

	// Ambiguous and unknown words: the error, the usage, exit 1.
	r := fails(t, dir, 1, `vmtui: ambiguous command "co": could be commit or convert`+"\nusage:\tvmtui disk check", "disk", "co", "x")
	if strings.Contains(r.stderr, "vmtui create") {
		t.Errorf("the disk usage should list only disk commands:\n%s", r.stderr)
	}
	fails(t, dir, 1, `vmtui: ambiguous command "c": could be check, commit or convert`, "disk", "c")
	fails(t, dir, 1, "vmtui: unknown command \"frobnicate\"\nusage:\tvmtui start", "frobnicate")
	fails(t, dir, 1, `vmtui: unknown disk command "frob"`, "disk", "frob")
	fails(t, dir, 1, `vmtui: unknown command "createx"`, "createx")
	fails(t, dir, 1, "vmtui: unknown option -x\nusage:", "-x")
}

func TestCreate(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	tests := []struct {
		args   []string
		file   string
		format string
		size   int64
	}{
		{[]string{"-s", "64M", "a.qcow2"}, "a.qcow2", "qcow2", 64 << 20},
		{[]string{"-s", "1.5G", "noext"}, "noext", "qcow2", 3 << 29},
		{[]string{"b.img", "-s", "10M"}, "b.img", "raw", 10 << 20}, // flags after the disk
		{[]string{"-s", "1m", "c.RAW"}, "c.RAW", "raw", 1 << 20},
		{[]string{"-f", "raw", "-s", "2M", "d.qcow2"}, "d.qcow2", "raw", 2 << 20},
		{[]string{"-f", "qcow2", "-s", "2M", "e.img"}, "e.img", "qcow2", 2 << 20},
		{[]string{"-s", "4M", "raw:f.disk"}, "f.disk", "raw", 4 << 20},
		{[]string{"-s", "4M", "qcow2:g.img"}, "g.img", "qcow2", 4 << 20},
		{[]string{"-s", "1000", "h.qcow2"}, "h.qcow2", "qcow2", 1024}, // rounded up to 512
		{[]string{"-s", "1000", "i.raw"}, "i.raw", "raw", 1000},
		{[]string{"-s", "2T", "big.qcow2"}, "big.qcow2", "qcow2", 2 << 40},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := ok(t, dir, append([]string{"create"}, tt.args...)...)
			if want := "vmtui: " + tt.format + " imagefile created\n"; r.stderr != want || r.stdout != "" {
				t.Errorf("stdout %q, stderr %q; want nothing and %q", r.stdout, r.stderr, want)
			}
			if format, size := imageSize(t, dir, tt.file); format != tt.format || size != tt.size {
				t.Errorf("%s: format %s, size %d; want %s, %d", tt.file, format, size, tt.format, tt.size)
			}
			if tt.format == "qcow2" {
				requireClean(t, dir, tt.file)
				qemuIO(t, dir, tt.file, "qcow2", "write -P 0x33 0 512", "read -P 0x33 0 512")
				requireClean(t, dir, tt.file)
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "exists.qcow2"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	makeSource(t, dir, "base.qcow2", "16M")
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"-s", "1G", "exists.qcow2"}, `vmtui: create "exists.qcow2": file already exists`},
		{[]string{"-s", "1G", "-i", "base.qcow2", "exists.qcow2"}, `file already exists`},
		{[]string{"new.qcow2"}, "vmtui: could not create new.qcow2: missing size argument\nusage:\tvmtui create "},
		{[]string{"-s", "10X", "new.qcow2"}, `vmtui: create: invalid size "10X": unknown unit "X"`},
		{[]string{"-s", "-1G", "new.qcow2"}, `vmtui: create: invalid size "-1G": negative`},
		{[]string{"-s", "1GB", "new.qcow2"}, `invalid size "1GB": unexpected "B" after the unit`},
		{[]string{"-s", "9E", "new.qcow2"}, `invalid size "9E": too large`},
		{[]string{"-s", "0", "new.qcow2"}, "could not create new.qcow2: disk size must be more than 0 bytes"},
		{[]string{"-b", "base.qcow2", "-i", "base.qcow2", "new.qcow2"}, "vmtui: conflicting -b and -i arguments"},
		{[]string{"-b", "base.qcow2", "new.raw"}, "vmtui: base images require qcow2 disk format"},
		{[]string{"-b", "base.qcow2", "-s", "1G", "new.qcow2"}, "differs from the size of the backing file"},
		{[]string{"-b", "missing.qcow2", "new.qcow2"}, "missing.qcow2"},
		{[]string{"-c", "-s", "1G", "new.qcow2"}, "-c compresses an imported image: use it with -i"},
		{[]string{"-i", "base.qcow2", "-c", "new.raw"}, "-c needs the qcow2 or qcow format, not raw"},
		{[]string{"-i", "missing.qcow2", "new.qcow2"}, "missing.qcow2"},
		{[]string{"-i", "base.qcow2", "-s", "1M", "new.qcow2"}, "cannot be smaller than input disk size 16.0M"},
		{[]string{"-f", "vmdk", "-s", "1G", "new.qcow2"}, `unknown image format "vmdk" (want qcow2, raw or qcow)`},
		{[]string{"-f", "qcow2", "-s", "1G", "raw:new"}, "conflicts with the format qcow2"},
		{[]string{"-s", "1G"}, "usage:\tvmtui create"},
		{[]string{"-s", "1G", "a", "b"}, "usage:\tvmtui create"},
		{[]string{"-x", "new.qcow2"}, "vmtui: create: flag provided but not defined: -x\nusage:\tvmtui create"},
		{[]string{"-s"}, "vmtui: create: flag needs an argument: -s\nusage:"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fails(t, dir, 1, tt.want, append([]string{"create"}, tt.args...)...)
		})
	}
	if b, err := os.ReadFile(filepath.Join(dir, "exists.qcow2")); err != nil || string(b) != "precious" {
		t.Errorf("exists.qcow2 holds %q, %v after create refused it; want it untouched", b, err)
	}
	for _, name := range []string{"new.qcow2", "new.raw", "new"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s exists after failed creates", name)
		}
	}
}

func TestCreateOverlay(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "base.qcow2", "16M")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The base is named relative to the current directory, and stored
	// relative to the overlay's.
	r := ok(t, dir, "create", "-b", "base.qcow2", "sub/overlay.qcow2")
	if r.stderr != "vmtui: qcow2 imagefile created\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	info := qemuInfo(t, dir, "sub/overlay.qcow2")
	if info.BackingFilename != "../base.qcow2" || info.BackingFormat != "qcow2" || info.VirtualSize != 16<<20 {
		t.Errorf("qemu-img info: backing %q (%s), size %d; want ../base.qcow2 (qcow2), %d", info.BackingFilename, info.BackingFormat, info.VirtualSize, 16<<20)
	}
	requireClean(t, dir, "sub/overlay.qcow2")
	requireSame(t, dir, "base.qcow2", "sub/overlay.qcow2")

	// The same size as the base is accepted; an overlay on a raw base.
	ok(t, dir, "create", "-b", "base.qcow2", "-s", "16M", "same.qcow2")
	ok(t, dir, "create", "-s", "8M", "raw.img")
	qemuIO(t, dir, "raw.img", "raw", "write -P 0x77 1M 64k")
	ok(t, dir, "create", "-b", "raw.img", "on-raw.qcow2")
	if info := qemuInfo(t, dir, "on-raw.qcow2"); info.BackingFormat != "raw" || info.BackingFilename != "raw.img" {
		t.Errorf("overlay on raw: backing %q (%s)", info.BackingFilename, info.BackingFormat)
	}
	requireSame(t, dir, "raw.img", "on-raw.qcow2")

	// An absolute base stays absolute.
	abs := filepath.Join(dir, "base.qcow2")
	ok(t, dir, "create", "-b", abs, "abs.qcow2")
	if info := qemuInfo(t, dir, "abs.qcow2"); info.BackingFilename != abs {
		t.Errorf("backing %q, want %q", info.BackingFilename, abs)
	}
}

func TestCreateImport(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "src.qcow2", "16M")
	qemuImg(t, dir, "convert", "-O", "raw", "src.qcow2", "src.raw")
	// A chain: the import flattens it.
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", "src.qcow2", "-F", "qcow2", "top.qcow2")
	qemuIO(t, dir, "top.qcow2", "qcow2", "write -P 0xee 512k 64k")

	tests := []struct {
		args     []string
		out, in  string
		format   string
		size     int64
		compress bool
	}{
		{[]string{"-i", "src.qcow2"}, "a.qcow2", "src.qcow2", "qcow2", 16 << 20, false},
		{[]string{"-i", "src.raw"}, "b.qcow2", "src.raw", "qcow2", 16 << 20, false},
		{[]string{"-i", "src.qcow2"}, "c.raw", "src.qcow2", "raw", 16 << 20, false},
		{[]string{"-c", "-i", "src.raw"}, "d.qcow2", "src.raw", "qcow2", 16 << 20, true},
		{[]string{"-i", "top.qcow2"}, "e.qcow2", "top.qcow2", "qcow2", 16 << 20, false},
		{[]string{"-i", "src.qcow2", "-s", "32M"}, "f.qcow2", "src.qcow2", "qcow2", 32 << 20, false},
		{[]string{"-i", "src.qcow2", "-s", "32M"}, "g.img", "src.qcow2", "raw", 32 << 20, false},
		{[]string{"-i", "src.qcow2", "-s", "16M"}, "h.qcow2", "src.qcow2", "qcow2", 16 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.out, func(t *testing.T) {
			r := ok(t, dir, append(append([]string{"create"}, tt.args...), tt.out)...)
			if want := "vmtui: " + tt.format + " imagefile created\n"; r.stderr != want {
				t.Errorf("stderr %q, want %q", r.stderr, want)
			}
			info := qemuInfo(t, dir, tt.out)
			if info.Format != tt.format || info.VirtualSize != tt.size || info.BackingFilename != "" {
				t.Errorf("qemu-img info: %+v; want format %s, size %d, no backing file", info, tt.format, tt.size)
			}
			requireSame(t, dir, tt.in, tt.out) // a larger output's tail is zeros
			if tt.format == "qcow2" {
				c := requireClean(t, dir, tt.out)
				if tt.compress != (c.CompressedClusters > 0) {
					t.Errorf("%d compressed clusters; want compression %t", c.CompressedClusters, tt.compress)
				}
			}
		})
	}
}

func TestDiskInfo(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "base.qcow2", "16M")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,compression_type=zstd", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")

	r := ok(t, dir, "disk", "info", "top.qcow2")
	for _, want := range []string{
		"image: top.qcow2\n",
		"file format: qcow2\n",
		"virtual size: 16 MiB (16777216 bytes)\n",
		"cluster_size: 4096\n",
		"backing file: base.qcow2\n",
		"backing file format: qcow2\n",
		"    compression type: zstd\n",
		"image: base.qcow2\n",
		"cluster_size: 65536\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("disk info lacks %q:\n%s", want, r.stdout)
		}
	}
	if r.stderr != "" {
		t.Errorf("stderr %q", r.stderr)
	}

	// --json has qemu-img's keys and values.
	for _, image := range []string{"top.qcow2", "base.qcow2"} {
		r = ok(t, dir, "disk", "info", "--json", image)
		var got imageInfo
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("disk info --json %s: %v\n%s", image, err, r.stdout)
		}
		var want imageInfo
		if err := json.Unmarshal([]byte(qemuImg(t, dir, "info", "--output=json", image)), &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("disk info --json %s:\n got %+v\nwant %+v (qemu-img)", image, got, want)
		}
	}
	r = ok(t, dir, "disk", "info", "-json", "base.qcow2") // one dash works too
	if !strings.HasPrefix(r.stdout, "{") {
		t.Errorf("disk info -json: %q", r.stdout)
	}

	fails(t, dir, 1, `vmtui: info "missing.qcow2"`, "disk", "info", "missing.qcow2")
	fails(t, dir, 1, "usage:\tvmtui disk info [-U] [--json] disk", "disk", "info")
}

// refcountBlock returns the offset of the first refcount block of a qcow2
// image, from its header and refcount table.
func refcountBlock(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], 48); err != nil { // refcount_table_offset
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b[:], int64(binary.BigEndian.Uint64(b[:]))); err != nil {
		t.Fatal(err)
	}
	return int64(binary.BigEndian.Uint64(b[:]))
}

// setRefcount sets the 16-bit refcount of a cluster of a qcow2 image.
func setRefcount(t *testing.T, path string, cluster int64, refcount uint16) {
	t.Helper()
	off := refcountBlock(t, path) + 2*cluster
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], refcount)
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func TestDiskCheck(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "clean.qcow2", "16M")

	// A leak: a refcount on a cluster nothing uses, inside the file.
	makeSource(t, dir, "leak.qcow2", "16M")
	if err := os.Truncate(filepath.Join(dir, "leak.qcow2"), 4<<20); err != nil {
		t.Fatal(err)
	}
	setRefcount(t, filepath.Join(dir, "leak.qcow2"), 60, 1)

	// A corruption: the refcount of the first data cluster dropped to 0.
	makeSource(t, dir, "corrupt.qcow2", "16M")
	var extents []struct {
		Data   bool  `json:"data"`
		Offset int64 `json:"offset"`
	}
	if err := json.Unmarshal([]byte(qemuImg(t, dir, "map", "--output=json", "corrupt.qcow2")), &extents); err != nil {
		t.Fatal(err)
	}
	if len(extents) == 0 || !extents[0].Data {
		t.Fatalf("qemu-img map: %+v, want data first", extents)
	}
	setRefcount(t, filepath.Join(dir, "corrupt.qcow2"), extents[0].Offset>>16, 0)

	ok(t, dir, "create", "-s", "1M", "plain.raw")

	tests := []struct {
		image      string
		code       int
		stderrHas  string
		stdoutHead string
	}{
		{"clean.qcow2", 0, "", "No errors were found on the image.\n"},
		{"leak.qcow2", 3, "Leaked cluster 60 refcount=1 reference=0\n", "\n1 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n"},
		{"corrupt.qcow2", 2, "ERROR cluster ", "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			r := vmtui(t, dir, "disk", "check", tt.image)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderrHas) || !strings.HasPrefix(r.stdout, tt.stdoutHead) {
				t.Errorf("disk check %s: exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout starting %q, stderr with %q",
					tt.image, r.code, r.stdout, r.stderr, tt.code, tt.stdoutHead, tt.stderrHas)
			}
			// The summary and exit status are qemu-img check's.
			qout, qerr, qcode := tool(t, dir, "qemu-img", "check", tt.image)
			if r.stdout != qout || r.code != qcode {
				t.Errorf("disk check %s: exit %d, stdout:\n%s\nqemu-img check: exit %d, stdout:\n%s", tt.image, r.code, r.stdout, qcode, qout)
			}
			if r.stderr != qerr {
				t.Errorf("disk check %s: stderr:\n%s\nqemu-img check: stderr:\n%s", tt.image, r.stderr, qerr)
			}
		})
	}

	// A raw image has nothing to check: 63, as qemu-img.
	fails(t, dir, 63, "vmtui: check \"plain.raw\": disk: format does not support checks", "disk", "check", "plain.raw")
	fails(t, dir, 1, `vmtui: check "missing.qcow2"`, "disk", "check", "missing.qcow2")
	fails(t, dir, 1, `vmtui: disk check: -r "everything": want leaks or all`, "disk", "check", "-r", "everything", "leak.qcow2")

	// -r leaks repairs the leak; the image is then clean for qemu-img.
	r := vmtui(t, dir, "disk", "check", "-r", "leaks", "leak.qcow2")
	if r.code != 0 || !strings.Contains(r.stdout, "No errors were found on the image.") {
		t.Errorf("disk check -r leaks: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	requireClean(t, dir, "leak.qcow2")
}

func TestDiskConvert(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "src.qcow2", "16M")
	tests := []struct {
		args        []string
		out, format string
		compressed  bool
		ctype       string
	}{
		{nil, "a.qcow2", "qcow2", false, "zlib"},
		{[]string{"-O", "raw"}, "b.qcow2", "raw", false, ""},
		{nil, "c.img", "raw", false, ""},
		{[]string{"-O", "qcow2"}, "d.img", "qcow2", false, "zlib"},
		{[]string{"-c"}, "e.qcow2", "qcow2", true, "zlib"},
		{[]string{"-c", "--compression-type", "zstd"}, "f.qcow2", "qcow2", true, "zstd"},
		{[]string{"-c", "-compression-type=zlib"}, "g.qcow2", "qcow2", true, "zlib"},
	}
	for _, tt := range tests {
		t.Run(tt.out, func(t *testing.T) {
			r := ok(t, dir, append(append([]string{"disk", "convert"}, tt.args...), "src.qcow2", tt.out)...)
			if r.stdout != "" || r.stderr != "" {
				t.Errorf("stdout %q, stderr %q; want nothing", r.stdout, r.stderr)
			}
			info := qemuInfo(t, dir, tt.out)
			if info.Format != tt.format || info.VirtualSize != 16<<20 || info.FormatSpecific.Data.CompressionType != tt.ctype {
				t.Errorf("qemu-img info %s: %+v; want %s with compression type %q", tt.out, info, tt.format, tt.ctype)
			}
			requireSame(t, dir, "src.qcow2", tt.out)
			if tt.format == "qcow2" {
				if c := requireClean(t, dir, tt.out); (c.CompressedClusters > 0) != tt.compressed {
					t.Errorf("%d compressed clusters, want compression %t", c.CompressedClusters, tt.compressed)
				}
			}
		})
	}

	// -p draws the progress on stderr, ending at 100% and a newline.
	r := ok(t, dir, "disk", "convert", "-p", "-O", "raw", "src.qcow2", "p.raw")
	if !strings.HasPrefix(r.stderr, "\r    (0.00/100%)") || !strings.HasSuffix(r.stderr, "\r    (100.00/100%)\n") || r.stdout != "" {
		t.Errorf("disk convert -p: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	requireSame(t, dir, "src.qcow2", "p.raw")

	fails(t, dir, 1, `file already exists`, "disk", "convert", "src.qcow2", "a.qcow2")
	fails(t, dir, 1, "-c needs qcow2 or qcow output, not raw", "disk", "convert", "-c", "src.qcow2", "x.raw")
	fails(t, dir, 1, "--compression-type needs qcow2 output, not raw", "disk", "convert", "--compression-type", "zstd", "-O", "raw", "src.qcow2", "x.qcow2")
	fails(t, dir, 1, `unknown compression type "lz4"`, "disk", "convert", "--compression-type", "lz4", "src.qcow2", "x.qcow2")
	fails(t, dir, 1, `unknown image format "vdi"`, "disk", "convert", "-O", "vdi", "src.qcow2", "x.qcow2")
	fails(t, dir, 1, "missing.qcow2", "disk", "convert", "missing.qcow2", "x.qcow2")
	fails(t, dir, 1, "usage:\tvmtui disk convert", "disk", "convert", "src.qcow2")
	for _, name := range []string{"x.qcow2", "x.raw"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s exists after a failed convert", name)
		}
	}
}

func TestDiskCommit(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "base.qcow2", "16M")
	ok(t, dir, "create", "-b", "base.qcow2", "top.qcow2")
	qemuIO(t, dir, "top.qcow2", "qcow2", "write -P 0xc3 64k 64k", "write -z 3M 64k", "write -P 0x3c 15M 4k")
	r := ok(t, dir, "disk", "commit", "top.qcow2")
	if r.stdout != "Image committed.\n" || r.stderr != "" {
		t.Errorf("disk commit: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	qemuIO(t, dir, "base.qcow2", "qcow2", "read -P 0xc3 64k 64k", "read -P 0 3M 64k", "read -P 0x3c 15M 4k", "read -P 0xa5 0 64k")
	requireClean(t, dir, "base.qcow2")
	requireSame(t, dir, "base.qcow2", "top.qcow2")

	// Into a raw base.
	ok(t, dir, "create", "-s", "4M", "base.raw")
	ok(t, dir, "create", "-b", "base.raw", "on-raw.qcow2")
	qemuIO(t, dir, "on-raw.qcow2", "qcow2", "write -P 0x42 1M 8k")
	ok(t, dir, "disk", "commit", "on-raw.qcow2")
	qemuIO(t, dir, "base.raw", "raw", "read -P 0x42 1M 8k")

	fails(t, dir, 1, "no backing file", "disk", "commit", "base.qcow2")
	fails(t, dir, 1, "usage:\tvmtui disk commit [-p] overlay", "disk", "commit")
}

func TestDiskResize(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	makeSource(t, dir, "a.qcow2", "16M")
	ok(t, dir, "create", "-s", "1M", "b.raw")
	tests := []struct {
		image, size string
		want        int64
		format      string
	}{
		{"a.qcow2", "32M", 32 << 20, "qcow2"},
		{"a.qcow2", "+0.5G", 32<<20 + 1<<29, "qcow2"},
		{"a.qcow2", "+1000", 32<<20 + 1<<29 + 1024, "qcow2"}, // rounded up to 512
		{"b.raw", "+1M", 2 << 20, "raw"},
		{"b.raw", "2097153", 2<<20 + 1, "raw"},
	}
	for _, tt := range tests {
		r := ok(t, dir, "disk", "resize", tt.image, tt.size)
		if r.stdout != "Image resized.\n" || r.stderr != "" {
			t.Errorf("disk resize %s %s: stdout %q, stderr %q", tt.image, tt.size, r.stdout, r.stderr)
		}
		if _, size := imageSize(t, dir, tt.image); size != tt.want {
			t.Errorf("disk resize %s %s: %d bytes, want %d", tt.image, tt.size, size, tt.want)
		}
		if tt.format == "qcow2" {
			requireClean(t, dir, tt.image)
		}
	}
	// The data is where it was, the growth reads as zeros.
	qemuIO(t, dir, "a.qcow2", "qcow2", "read -P 0xa5 0 1M", "read -P 0 100M 1M")

	fails(t, dir, 1, "shrinking an image is not supported", "disk", "resize", "a.qcow2", "1M")
	fails(t, dir, 1, "shrinking an image is not supported", "disk", "resize", "a.qcow2", "-1M")
	fails(t, dir, 1, `invalid size "1Q"`, "disk", "resize", "a.qcow2", "1Q")
	fails(t, dir, 1, `invalid size "++1M"`, "disk", "resize", "a.qcow2", "++1M")
	fails(t, dir, 1, "is too large", "disk", "resize", "a.qcow2", "+7.99999999999999999999E")
	fails(t, dir, 1, "missing.qcow2", "disk", "resize", "missing.qcow2", "+1M")
	fails(t, dir, 1, "usage:\tvmtui disk resize disk [+]size", "disk", "resize", "a.qcow2")
}

// TestConvertInterrupted interrupts a conversion as Ctrl-C does and expects
// vmtui to stop, say so, exit 130 and leave neither output nor temporary
// file behind.
func TestConvertInterrupted(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	// 64 MiB of text-like data: compressing it takes a while, unlike
	// zeros (skipped) or random data (given up on at once).
	words := strings.Fields("qcow2 cluster refcount table header backing chain overlay snapshot sector guest vmtui")
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < 64<<20 {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(" \n"[rng.IntN(2)])
	}
	if err := os.WriteFile(filepath.Join(dir, "text.raw"), b.Bytes()[:64<<20], 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(vmtuiBin, "disk", "convert", "-p", "-c", "text.raw", "out.qcow2")
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first progress line comes once the conversion has started, and
	// with it the signal handler.
	var seen bytes.Buffer
	buf := make([]byte, 256)
	for !strings.Contains(seen.String(), "(0.00/100%)") {
		n, err := stderr.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading vmtui's stderr before any progress: %v (got %q)", err, seen.String())
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stderr)
	seen.Write(rest)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted convert: %v, want exit status 130 (did it finish before the interrupt?)\nstderr: %q", err, seen.String())
	}
	if !strings.Contains(seen.String(), "\nvmtui: convert \"text.raw\" to \"out.qcow2\": ") || !strings.Contains(seen.String(), "(interrupted)\n") {
		t.Errorf("stderr %q, want the progress ended by a newline, then the error and (interrupted)", seen.String())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "text.raw" {
			t.Errorf("%s left behind by an interrupted convert", e.Name())
		}
	}
}

// TestDefine: define saves a definition without starting anything, with
// start's flags and config's checks.
func TestDefine(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("VMTUI_HOME", filepath.Join(dir, "home"))
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := ok(t, dir, "define", "-b", "vmlinuz", "-m", "256M", "--cpus", "2", "--net", "user,hostfwd=tcp::2222-:22", "web")
	if !strings.Contains(r.stderr, "vmtui: defined vm 1 (web) in ") {
		t.Errorf("define: stderr %q, want the defined message", r.stderr)
	}
	def, err := os.ReadFile(filepath.Join(dir, "home", "vms", "web.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kernel = '" + kernel + "'", "memory = '256M'", "cpus = 2", "tcp::2222-:22"} {
		if !strings.Contains(string(def), want) {
			t.Errorf("web.toml lacks %q:\n%s", want, def)
		}
	}
	r = ok(t, dir, "--list")
	if !regexp.MustCompile(`(?m)^ +1 +- +2 +256M +- +- +\S+ +stopped web$`).MatchString(r.stdout) {
		t.Errorf("--list after define:\n%s", r.stdout)
	}
	fails(t, dir, 1, "vm already exists", "define", "-b", "vmlinuz", "web")
	fails(t, dir, 1, "no kernel or disk/cdrom specified", "define", "other")
	fails(t, dir, 1, "invalid VM name", "define", "-b", "vmlinuz", "--", "_bad")
	fails(t, dir, 1, `ambiguous command "d": could be define, detach-disk or disk`, "d")
}
