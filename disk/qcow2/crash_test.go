package qcow2_test

// The kill -9 test: the test binary runs itself as a writer subprocess
// (TestCrashChild, which does nothing unless crashChildEnv is set), doing a
// deterministic random workload with a Flush every few operations and
// printing "flushed N" after each completed Flush (N = operations done).
// The parent SIGKILLs it at a random moment, then requires qemu-img check to
// find no corruption (leaks are allowed) and every operation before the
// last completed Flush to read back; bytes touched by later operations may
// hold old or new data. The next round reopens the same crashed image.
//
// Also here: TestPowerCutReplay (every state a power cut could leave, from a
// log of the engine's writes and syncs) and TestTransientWriteErrors (one
// failing write or sync at a time, the workload going on).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

const crashChildEnv = "VMTUI_QCOW2_CRASH_CHILD"

// crashJob is what the parent tells the child.
type crashJob struct {
	Image  string
	Seed   uint64
	Size   int64
	CS     int64
	MaxLen int64
	// FakeFlush makes the child report flushes without doing them; only
	// TestCrashDetectsLostFlush sets it.
	FakeFlush bool
	CacheSize int64 // L2 cache of the child; 0 for the default
}

// crashOps is the deterministic workload of a round: writes and zero writes
// with a flush after every 1 to 5 of them.
func crashOps(j crashJob) []wop {
	base := genWorkload(j.Seed, j.Size, j.CS, j.MaxLen, 4000)
	r := rand.New(rand.NewPCG(j.Seed, 3))
	var ops []wop
	next := 1 + r.IntN(5)
	for _, o := range base {
		if o.kind == 'f' {
			continue
		}
		ops = append(ops, o)
		if next--; next == 0 {
			ops = append(ops, wop{kind: 'f'})
			next = 1 + r.IntN(5)
		}
	}
	return ops
}

// TestCrashChild is the writer subprocess; it skips unless run by TestCrash.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv(crashChildEnv)
	if spec == "" {
		t.Skip("runs only as TestCrash's subprocess")
	}
	var j crashJob
	if err := json.Unmarshal([]byte(spec), &j); err != nil {
		fmt.Fprintln(os.Stderr, "child: bad job:", err)
		os.Exit(2)
	}
	img, err := tryOpenCache(j.Image, false, j.CacheSize)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open after crash:", err)
		os.Exit(3)
	}
	fmt.Println("ready")
	for i, o := range crashOps(j) {
		if o.kind == 'f' && j.FakeFlush {
			fmt.Printf("flushed %d\n", i+1)
			continue
		}
		if err := applyImage(img, o); err != nil {
			fmt.Fprintf(os.Stderr, "child: op %d %v: %v\n", i, o, err)
			os.Exit(4)
		}
		if o.kind == 'f' {
			fmt.Printf("flushed %d\n", i+1)
		}
	}
	if err := img.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "child: close:", err)
		os.Exit(5)
	}
	fmt.Println("done")
	os.Exit(0)
}

// crashRound runs one child, kills it after delay and returns the number of
// operations acknowledged by the last completed flush, and whether the
// child was killed (rather than finishing).
func crashRound(t *testing.T, j crashJob, delay time.Duration) (acked int, killed bool) {
	t.Helper()
	spec, _ := json.Marshal(j)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+string(spec))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var all []string
	select {
	case l, ok := <-lines:
		if !ok || l != "ready" {
			cmd.Wait()
			t.Fatalf("child did not start (line %q): %s", l, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child not ready after 30s: %s", stderr.String())
	}
	time.Sleep(delay)
	killErr := cmd.Process.Signal(syscall.SIGKILL)
	for l := range lines {
		all = append(all, l)
	}
	werr := cmd.Wait()
	done := false
	for _, l := range all {
		if n, ok := strings.CutPrefix(l, "flushed "); ok {
			acked, _ = strconv.Atoi(n)
		}
		done = done || l == "done"
	}
	if !done {
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("child exited by itself (%v, kill: %v): %s", werr, killErr, stderr.String())
		}
	}
	return acked, !done
}

// crashConfig is one image the crash test hammers.
type crashConfig struct {
	name   string
	setup  func(t *testing.T, dir string) (image string, model []byte)
	maxLen int64
	cache  int64
}

func TestCrash(t *testing.T) {
	qemuimg.Require(t)
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	const roundsPer = 40
	var total atomic.Int64
	fresh := func(opts qcow2.CreateOptions, base string) func(t *testing.T, dir string) (string, []byte) {
		return func(t *testing.T, dir string) (string, []byte) {
			path := filepath.Join(dir, "crash.qcow2")
			var model []byte
			if base != "" {
				src := filepath.Join(dir, base)
				switch base {
				case "base.raw":
					writeRandomFile(t, src, int(opts.Size), 77)
				case "base.qcow2":
					qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", src, fmt.Sprint(opts.Size))
					qemuimg.IO(t, src, "qcow2", "write -P 0x6b 0 3000000", "write -z 1000000 500000")
				}
				model = qemuimg.ToRaw(t, src, src+".raw")
				opts.BackingFile = base
				opts.BackingFormat = strings.TrimPrefix(filepath.Ext(base), ".")
			} else {
				model = make([]byte, opts.Size)
			}
			closeImage(t, "create", createImage(t, path, opts))
			return path, model
		}
	}
	configs := []crashConfig{
		{"64k", fresh(qcow2.CreateOptions{Size: 16 << 20}, ""), 256 << 10, 0},
		{"cs512", fresh(qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, ""), 32 << 10, 0},
		{"cs512-tiny-cache", fresh(qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, ""), 32 << 10, 2048},
		{"64k-backing-raw", fresh(qcow2.CreateOptions{Size: 16 << 20}, "base.raw"), 256 << 10, 0},
		{"cs512-backing-qcow2", fresh(qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512}, "base.qcow2"), 32 << 10, 4096},
		{"4k-compressed-snapshot", func(t *testing.T, dir string) (string, []byte) {
			// A qemu-made image with compressed clusters and an internal
			// snapshot: rewrites decompress, COW shared clusters, free.
			src := filepath.Join(dir, "src.raw")
			makeMixedRaw(t, src, 8<<20, 4096)
			path := filepath.Join(dir, "crash.qcow2")
			qemuimg.Run(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", src, path)
			qemuimg.Run(t, "snapshot", "-c", "s1", path)
			return path, readFile(t, src)
		}, 64 << 10, 0},
	}
	for ci, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			defer noPanic(t)
			dir := t.TempDir()
			path, model := c.setup(t, dir)
			size := int64(len(model))
			img := openImage(t, path, true)
			cs := imgCS(img)
			img.Close()
			r := rand.New(rand.NewPCG(uint64(ci), 42))
			kills, leaks := 0, 0
			var ackedAll []int
			for round := 0; round < roundsPer; round++ {
				j := crashJob{Image: path, Seed: uint64(ci)<<32 | uint64(round), Size: size, CS: cs, MaxLen: c.maxLen, CacheSize: c.cache}
				delay := time.Duration(r.Int64N(int64(40 * time.Millisecond)))
				acked, killed := crashRound(t, j, delay)
				if killed {
					kills++
					total.Add(1)
				}
				ackedAll = append(ackedAll, acked)
				label := fmt.Sprintf("%s round %d (seed %#x, killed after %v, %d ops acknowledged)", c.name, round, j.Seed, delay, acked)
				res, err := verifyCrash(t, j, acked, model, label)
				if err != nil {
					t.Fatal(err)
				}
				leaks += res.Leaks
			}
			slices.Sort(ackedAll)
			t.Logf("%s: %d rounds, %d kills, %d leaked clusters reported over all rounds; operations acknowledged per round: min %d, median %d, max %d",
				c.name, roundsPer, kills, leaks, ackedAll[0], ackedAll[len(ackedAll)/2], ackedAll[len(ackedAll)-1])
		})
	}
	t.Cleanup(func() { t.Logf("total kills: %d", total.Load()) })
}

// verifyCrash checks the image of a crashed round: qemu-img check finds no
// corruption, and every operation before the last acknowledged flush reads
// back. It advances model (the content acknowledged so far) to the image's
// state: bytes the crash left undetermined take what the image holds.
func verifyCrash(t *testing.T, j crashJob, acked int, model []byte, label string) (qemuimg.CheckResult, error) {
	t.Helper()
	return verifyState(t, j.Image, crashOps(j), acked, model, j.CS, label, fmt.Sprintf("vmtui-crash-%x.qcow2", j.Seed))
}

// verifyState is verifyCrash for an image at path after ops, of which the
// first acked are acknowledged by a flush. A failing image is kept in the
// temporary directory as keep.
func verifyState(t *testing.T, path string, ops []wop, acked int, model []byte, cs int64, label, keep string) (qemuimg.CheckResult, error) {
	t.Helper()
	size := int64(len(model))
	res := qemuimg.Check(t, path)
	if res.Corruptions != 0 || res.CheckErrors != 0 {
		keep := filepath.Join(os.TempDir(), keep)
		os.WriteFile(keep, readFile(t, path), 0o644)
		return res, fmt.Errorf("%s: qemu-img check: %d corruptions, %d check errors (image kept at %s)\n%s",
			label, res.Corruptions, res.CheckErrors, keep, res.Stderr)
	}
	// The model: everything up to the last acknowledged flush; bytes
	// touched between it and the next flush are unknown.
	for _, o := range ops[:acked] {
		applyMem(model, o)
	}
	touched := make([]bool, size)
	for i := acked; i < len(ops); i++ {
		o := ops[i]
		if o.kind == 'f' {
			break
		}
		for k := o.off; k < o.off+o.n; k++ {
			touched[k] = true
		}
	}
	img, err := tryOpen(path, true)
	if err != nil {
		return res, fmt.Errorf("%s: open after crash: %v", label, err)
	}
	got := make([]byte, size)
	_, err = img.ReadAt(got, 0)
	img.Close()
	if err != nil && err != io.EOF {
		return res, fmt.Errorf("%s: read after crash: %v", label, err)
	}
	bad, first := 0, -1
	for k := range got {
		if touched[k] {
			model[k] = got[k] // adopt whatever the crash left
			continue
		}
		if got[k] != model[k] {
			if first < 0 {
				first = k
			}
			bad++
		}
	}
	if bad > 0 {
		k := first
		end := min(k+16, len(got))
		return res, fmt.Errorf("%s: acknowledged data lost: %d bytes differ, the first at virtual offset %d (cluster %d + %d): got % x, want % x",
			label, bad, k, int64(k)/cs, int64(k)%cs, got[k:end], model[k:end])
	}
	return res, nil
}

// TestCrashDetectsLostFlush checks the crash test itself: a child that
// claims flushes it never did must be caught (the engine keeps metadata in
// memory until Flush, so the writes are lost at the kill).
func TestCrashDetectsLostFlush(t *testing.T) {
	qemuimg.Require(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "lie.qcow2")
	closeImage(t, "create", createImage(t, path, qcow2.CreateOptions{Size: 4 << 20}))
	model := make([]byte, 4<<20)
	for round := 0; round < 5; round++ {
		j := crashJob{Image: path, Seed: uint64(round), Size: 4 << 20, CS: 65536, MaxLen: 64 << 10, FakeFlush: true}
		acked, _ := crashRound(t, j, 30*time.Millisecond)
		if acked == 0 {
			continue
		}
		if _, err := verifyCrash(t, j, acked, model, "fake flush"); err != nil {
			t.Logf("detected as it should be: %v", err)
			return
		}
	}
	t.Fatalf("the crash test did not notice a child that never flushed")
}

// applyMem applies an operation to an in-memory model.
func applyMem(model []byte, o wop) {
	switch o.kind {
	case 'w':
		fillData(model[o.off:o.off+o.n], o.seed)
	case 'z':
		clear(model[o.off : o.off+o.n])
	}
}

// recFile records the writes, truncations and syncs an image makes.
type recFile struct {
	*os.File
	mu  sync.Mutex
	log []logEntry
}

type logEntry struct {
	kind byte // 'w' write, 't' truncate, 's' sync
	off  int64
	data []byte
}

func (r *recFile) WriteAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	r.log = append(r.log, logEntry{kind: 'w', off: off, data: bytes.Clone(p)})
	r.mu.Unlock()
	return r.File.WriteAt(p, off)
}

func (r *recFile) Truncate(n int64) error {
	r.mu.Lock()
	r.log = append(r.log, logEntry{kind: 't', off: n})
	r.mu.Unlock()
	return r.File.Truncate(n)
}

func (r *recFile) Sync() error {
	r.mu.Lock()
	r.log = append(r.log, logEntry{kind: 's'})
	r.mu.Unlock()
	return r.File.Sync()
}

func (r *recFile) syncs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.log {
		if e.kind == 's' {
			n++
		}
	}
	return n
}

// TestPowerCutReplay records every write and sync the engine makes during a
// workload, then rebuilds the file as a power cut could leave it: all
// writes before some sync, plus any subset of the writes issued after it
// (the disk may persist them in any order). Every such state must pass
// qemu-img check without corruption and hold all data acknowledged by a
// Flush that completed before that sync. Unlike kill -9, this also tests
// that the engine syncs between dependent writes.
func TestPowerCutReplay(t *testing.T) {
	qemuimg.Require(t)
	if testing.Short() {
		t.Skip("power-cut replay skipped in -short mode")
	}
	type config struct {
		name   string
		setup  func(t *testing.T, dir string) (string, []byte)
		cache  int64
		maxLen int64
		ops    int
		gen    func(size, cs int64) []wop // instead of genWorkload
	}
	configs := []config{
		{"64k", func(t *testing.T, dir string) (string, []byte) {
			p := filepath.Join(dir, "pc.qcow2")
			closeImage(t, "create", createImage(t, p, qcow2.CreateOptions{Size: 8 << 20}))
			return p, make([]byte, 8<<20)
		}, 0, 200 << 10, 40, nil},
		{"cs512-rb64-tiny-cache", func(t *testing.T, dir string) (string, []byte) {
			// 64-bit refcounts in 512-byte clusters: the refcount table
			// grows after 2 MiB of file.
			p := filepath.Join(dir, "pc.qcow2")
			closeImage(t, "create", createImage(t, p, qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 512, RefcountBits: 64}))
			return p, make([]byte, 8<<20)
		}, 2048, 0, 0, func(size, cs int64) []wop {
			// Spread 128 KiB writes: 3 MiB of new clusters.
			var ops []wop
			for i := int64(0); i < 24; i++ {
				ops = append(ops, wop{kind: 'w', off: (i*5%24)*(320<<10) + 1000, n: 128 << 10, seed: uint64(i)})
				if i%6 == 5 {
					ops = append(ops, wop{kind: 'z', off: (i*5%24)*(320<<10) + 4096, n: 8192})
				}
			}
			return ops
		}},
		{"extl2-backing", func(t *testing.T, dir string) (string, []byte) {
			base := filepath.Join(dir, "base.raw")
			writeRandomFile(t, base, 4<<20, 92)
			p := filepath.Join(dir, "pc.qcow2")
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536,extended_l2=on", "-b", "base.raw", "-F", "raw", p, fmt.Sprint(4<<20))
			qemuimg.IO(t, p, "qcow2", "write -P 0x18 20480 4096", "write -z 131072 8192", "write -c -P 0x19 262144 65536")
			return p, qemuimg.ToRaw(t, p, p+".raw")
		}, 0, 100 << 10, 30, nil},
		{"4k-snapshot-compressed-backing", func(t *testing.T, dir string) (string, []byte) {
			base := filepath.Join(dir, "base.raw")
			writeRandomFile(t, base, 4<<20, 91)
			src := filepath.Join(dir, "src.raw")
			makeMixedRaw(t, src, 4<<20, 4096)
			p := filepath.Join(dir, "pc.qcow2")
			qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw", p, fmt.Sprint(4<<20))
			qemuimg.IO(t, p, "qcow2", "write -c -s "+src+" 0 1048576", "write -P 0x17 2000000 300000", "write -z 3000000 100000")
			qemuimg.Run(t, "snapshot", "-c", "s1", p)
			return p, qemuimg.ToRaw(t, p, p+".raw")
		}, 0, 64 << 10, 40, nil},
	}
	for ci, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			defer noPanic(t)
			dir := t.TempDir()
			path, model0 := c.setup(t, dir)
			initial := readFile(t, path)
			size := int64(len(model0))

			// Record.
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			rec := &recFile{File: f}
			img, err := qcow2.Open(rec, qcow2.Options{OpenBacking: chainOpener(dir), CacheSize: c.cache})
			if err != nil {
				t.Fatal(err)
			}
			cs := imgCS(img)
			var ops []wop
			if c.gen != nil {
				ops = c.gen(size, cs)
			} else {
				ops = genWorkload(uint64(900+ci), size, cs, c.maxLen, c.ops)
			}
			ops = slices.DeleteFunc(ops, func(o wop) bool { return o.kind == 'f' })
			var withFlush []wop
			for i, o := range ops {
				withFlush = append(withFlush, o)
				if i%3 == 2 {
					withFlush = append(withFlush, wop{kind: 'f'})
				}
			}
			ops = withFlush
			type ack struct{ ops, syncs int }
			var acks []ack
			for i, o := range ops {
				if err := applyImage(img, o); err != nil {
					t.Fatalf("op %d %v: %v", i, o, err)
				}
				if o.kind == 'f' {
					acks = append(acks, ack{i + 1, rec.syncs()})
				}
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			log := rec.log
			var syncAt []int // log index of each sync
			for i, e := range log {
				if e.kind == 's' {
					syncAt = append(syncAt, i)
				}
			}
			switches := 0
			for _, e := range log {
				if e.kind == 'w' && (e.off == 48 || e.off == 36) && len(e.data) == 12 {
					switches++
				}
			}
			st, _ := os.Stat(path)
			t.Logf("%d operations made %d writes and %d syncs; %d header table switches; file %d bytes", len(ops), len(log)-len(syncAt), len(syncAt), switches, st.Size())

			// Replay.
			r := rand.New(rand.NewPCG(uint64(ci), 5))
			state := filepath.Join(dir, "state.qcow2")
			states, worst := 0, 0
			// At most about maxStates states: every stride-th sync.
			maxStates := 250
			if raceEnabled() {
				maxStates = 50
			}
			stride := max(1, ((len(syncAt)+1)*3+maxStates-1)/maxStates)
			for k := r.IntN(stride); k <= len(syncAt); k += stride {
				start := 0
				if k > 0 {
					start = syncAt[k-1] + 1
				}
				end := len(log)
				if k < len(syncAt) {
					end = syncAt[k]
				}
				acked := 0
				for _, a := range acks {
					if a.syncs <= k {
						acked = a.ops
					}
				}
				window := end - start
				subsets := 2
				if window == 0 {
					subsets = 0
				}
				for s := -1; s < subsets; s++ {
					// s == -1: none of the window's writes.
					b := bytes.Clone(initial)
					apply := func(e logEntry) {
						switch e.kind {
						case 'w':
							if need := e.off + int64(len(e.data)); need > int64(len(b)) {
								b = append(b, make([]byte, need-int64(len(b)))...)
							}
							copy(b[e.off:], e.data)
						case 't':
							if e.off < int64(len(b)) {
								b = b[:e.off]
							} else {
								b = append(b, make([]byte, e.off-int64(len(b)))...)
							}
						}
					}
					for _, e := range log[:start] {
						apply(e)
					}
					var kept []int
					if s >= 0 {
						for i := start; i < end; i++ {
							if r.IntN(2) == 0 {
								apply(log[i])
								kept = append(kept, i-start)
							}
						}
					}
					if err := os.WriteFile(state, b, 0o644); err != nil {
						t.Fatal(err)
					}
					model := bytes.Clone(model0)
					label := fmt.Sprintf("%s: power cut after sync %d of %d with writes %v of the %d after it (%d ops acknowledged)",
						c.name, k, len(syncAt), kept, window, acked)
					if _, err := verifyState(t, state, ops, acked, model, cs, label, fmt.Sprintf("vmtui-powercut-%s-%d-%d.qcow2", c.name, k, s)); err != nil {
						t.Error(err)
						if worst++; worst >= 3 {
							t.FailNow()
						}
					}
					states++
				}
			}
			t.Logf("%s: %d power-cut states checked", c.name, states)
		})
	}
}

// faultFile fails the failAt-th mutating call (WriteAt, Truncate or Sync,
// counted from 1) once with EIO, without doing it; all other calls pass.
type faultFile struct {
	*os.File
	mu     sync.Mutex
	calls  int
	failAt int
	failed bool
}

var errInjected = errors.New("injected I/O error")

func (f *faultFile) fail() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls == f.failAt {
		f.failed = true
		return true
	}
	return false
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fail() {
		return 0, errInjected
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Truncate(n int64) error {
	if f.fail() {
		return errInjected
	}
	return f.File.Truncate(n)
}

func (f *faultFile) Sync() error {
	if f.fail() {
		return errInjected
	}
	return f.File.Sync()
}

// TestTransientWriteErrors makes one write or sync of the file fail (each in
// turn) during a workload that goes on afterwards. The operation that saw
// the error may or may not have happened, but the engine must not lose
// track of its own state: every operation that succeeded reads back after a
// final successful Flush and Close, and qemu-img check finds no corruption.
func TestTransientWriteErrors(t *testing.T) {
	qemuimg.Require(t)
	if testing.Short() {
		t.Skip("skipped in -short mode")
	}
	type config struct {
		name  string
		setup func(t *testing.T, dir string) (string, []byte)
		cache int64
	}
	configs := []config{
		{"64k", func(t *testing.T, dir string) (string, []byte) {
			p := filepath.Join(dir, "ei.qcow2")
			closeImage(t, "create", createImage(t, p, qcow2.CreateOptions{Size: 4 << 20}))
			return p, make([]byte, 4<<20)
		}, 0},
		{"cs512-snapshot-compressed-tiny-cache", func(t *testing.T, dir string) (string, []byte) {
			src := filepath.Join(dir, "src.raw")
			makeMixedRaw(t, src, 2<<20, 512)
			p := filepath.Join(dir, "ei.qcow2")
			qemuimg.Run(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512,refcount_bits=64", src, p)
			qemuimg.Run(t, "snapshot", "-c", "s1", p)
			return p, readFile(t, src)
		}, 1024},
	}
	for ci, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			defer noPanic(t)
			dir := t.TempDir()
			path, model0 := c.setup(t, dir)
			initial := readFile(t, path)
			size := int64(len(model0))
			ops := genWorkload(uint64(1000+ci), size, 65536, 128<<10, 40)
			run := func(failAt int) (calls int, failed bool) {
				if err := os.WriteFile(path, initial, 0o644); err != nil {
					t.Fatal(err)
				}
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				ff := &faultFile{File: f, failAt: failAt}
				img, err := qcow2.Open(ff, qcow2.Options{OpenBacking: chainOpener(dir), CacheSize: c.cache})
				if err != nil {
					f.Close()
					if ff.failed {
						return ff.calls, true // Open itself saw the error: fine
					}
					t.Fatalf("open: %v", err)
				}
				model := bytes.Clone(model0)
				known := make([]bool, size)
				for i := range known {
					known[i] = true
				}
				var opErrs []string
				for i, o := range ops {
					err := applyImage(img, o)
					if o.kind == 'f' {
						if err != nil {
							opErrs = append(opErrs, fmt.Sprintf("op %d %v: %v", i, o, err))
						}
						continue
					}
					if err != nil {
						opErrs = append(opErrs, fmt.Sprintf("op %d %v: %v", i, o, err))
						for k := o.off; k < o.off+o.n; k++ {
							known[k] = false
						}
						continue
					}
					applyMem(model, o)
					for k := o.off; k < o.off+o.n; k++ {
						known[k] = true
					}
				}
				var ferr error
				for try := 0; try < 3; try++ {
					if ferr = img.Flush(); ferr == nil {
						break
					}
				}
				cerr := img.Close()
				label := fmt.Sprintf("%s, mutating call %d failed (errors seen: %q)", c.name, failAt, opErrs)
				if ferr != nil || cerr != nil {
					t.Errorf("%s: Flush after the error: %v; Close: %v", label, ferr, cerr)
				}
				if ff.failed && len(opErrs) == 0 && ferr == nil && cerr == nil {
					// The engine swallowed an I/O error: only acceptable if
					// it retried successfully, which the checks below test.
					label += " (no error reported)"
				}
				res := qemuimg.Check(t, path)
				if res.Corruptions != 0 || res.CheckErrors != 0 {
					t.Fatalf("%s: qemu-img check: %d corruptions, %d check errors\n%s", label, res.Corruptions, res.CheckErrors, res.Stderr)
				}
				img2, err := tryOpen(path, true)
				if err != nil {
					t.Fatalf("%s: reopen: %v", label, err)
				}
				got := make([]byte, size)
				_, err = img2.ReadAt(got, 0)
				img2.Close()
				if err != nil {
					t.Fatalf("%s: read: %v", label, err)
				}
				for k := range got {
					if known[k] && got[k] != model[k] {
						end := min(k+16, len(got))
						t.Fatalf("%s: data of a successful operation lost at virtual offset %d: got % x, want % x", label, k, got[k:end], model[k:end])
					}
				}
				return ff.calls, ff.failed
			}
			total, _ := run(0)
			maxRuns := 80
			if raceEnabled() {
				maxRuns = 25
			}
			stride := max(1, total/maxRuns)
			runs := 0
			for n := 1; n <= total; n += stride {
				run(n)
				runs++
			}
			t.Logf("%s: %d mutating calls in the workload; %d runs with one of them failing", c.name, total, runs)
		})
	}
}
