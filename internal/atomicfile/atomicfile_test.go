package atomicfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// modes runs f with O_TMPFILE and with named temporary files.
func modes(t *testing.T, f func(t *testing.T, named bool)) {
	for _, named := range []bool{false, true} {
		t.Run(map[bool]string{false: "O_TMPFILE", true: "named"}[named], func(t *testing.T) {
			prev := UseTmpfile(!named)
			t.Cleanup(func() { UseTmpfile(prev) })
			f(t, named)
		})
	}
}

// names lists the entries of dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := []string{}
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

// temps lists the temporary files in dir.
func temps(t *testing.T, dir string) []string {
	t.Helper()
	var tmp []string
	for _, n := range names(t, dir) {
		if strings.Contains(n, ".tmp") {
			tmp = append(tmp, n)
		}
	}
	return tmp
}

func assertOnly(t *testing.T, dir string, want ...string) {
	t.Helper()
	if got := names(t, dir); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

func TestCreateCommit(t *testing.T) {
	modes(t, func(t *testing.T, named bool) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "out.img")
		f, err := Create(dst, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("complete")); err != nil {
			t.Fatal(err)
		}
		// Until committed, nothing under dst's name; no name at all
		// with O_TMPFILE.
		if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("before Commit, Lstat(dst) = %v, want not exist", err)
		}
		if tmp := temps(t, dir); named && (len(tmp) != 1 || !strings.HasPrefix(tmp[0], ".out.img.tmp-")) {
			t.Errorf("while writing: temporary files %q, want one .out.img.tmp-*", tmp)
		} else if !named && len(names(t, dir)) != 0 {
			t.Errorf("while writing: %q, want nothing", names(t, dir))
		}
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != "complete" {
			t.Errorf("dst holds %q, %v", b, err)
		}
		if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("dst mode %v, %v; want 0600", fi.Mode(), err)
		}
		assertOnly(t, dir, "out.img")
	})
}

// TestCommitRefusesExisting: a file made under dst's name while writing is
// kept, Commit fails wrapping fs.ErrExist, and Abort leaves nothing.
func TestCommitRefusesExisting(t *testing.T) {
	modes(t, func(t *testing.T, named bool) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "out.img")
		f, err := Create(dst, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("new"))
		if err := os.WriteFile(dst, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := f.Commit(); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("Commit over an existing file: %v, want an error wrapping fs.ErrExist", err)
		}
		f.Abort()
		if b, _ := os.ReadFile(dst); string(b) != "keep me" {
			t.Errorf("the existing file changed to %q", b)
		}
		assertOnly(t, dir, "out.img")
	})
}

func TestCommitReplace(t *testing.T) {
	modes(t, func(t *testing.T, named bool) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "def.toml")
		if err := os.WriteFile(dst, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		// A reader holding the old file keeps reading the old file.
		old, err := os.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		f, err := Create(dst, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("new"))
		if err := f.CommitReplace(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if b, _ := os.ReadFile(dst); string(b) != "new" {
			t.Errorf("dst holds %q, want new", b)
		}
		if b, _ := io.ReadAll(old); string(b) != "old" {
			t.Errorf("the old file reads %q, want old", b)
		}
		if err := f.CommitReplace(); err == nil {
			t.Errorf("a second commit succeeded")
		}
		assertOnly(t, dir, "def.toml")
	})
}

func TestAbort(t *testing.T) {
	modes(t, func(t *testing.T, named bool) {
		dir := t.TempDir()
		f, err := Create(filepath.Join(dir, "out.img"), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("half"))
		f.Close() // as an owner of the *os.File may have
		f.Abort()
		assertOnly(t, dir)
	})
}

// TestStaleTemporaries: without O_TMPFILE, Create removes the temporary
// files of dst that no File holds (writers killed), and keeps those of
// writers still running, those of other files and what is not a regular file.
func TestStaleTemporaries(t *testing.T) {
	prev := UseTmpfile(false)
	t.Cleanup(func() { UseTmpfile(prev) })
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst.qcow2")
	running, err := Create(dst, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Abort()
	runningName := filepath.Base(running.name)
	stale := []string{".dst.qcow2.tmp-stale", ".dst.qcow2.tmpold"}
	for _, n := range append(stale, ".other.qcow2.tmp-stale") {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("half an image"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, ".dst.qcow2.tmp-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	f, err := Create(dst, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("whole"))
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := []string{".dst.qcow2.tmp-fifo", runningName, ".other.qcow2.tmp-stale", "dst.qcow2"}
	got := names(t, dir)
	if strings.Join(got, " ") != strings.Join(sorted(want), " ") {
		t.Errorf("after a Create: %q, want %q", got, sorted(want))
	}
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// TestConcurrentCreates: writers of one file that clean up after each other
// never remove each other's temporary files; the last commit wins, whole.
func TestConcurrentCreates(t *testing.T) {
	modes(t, func(t *testing.T, named bool) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "def.toml")
		const writers, each = 8, 20
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					data := bytes.Repeat([]byte{byte('a' + w)}, 1000+i)
					if err := WriteFile(dst, data, 0o600); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil || len(b) < 1000 || !bytes.Equal(b, bytes.Repeat(b[:1], len(b))) {
			t.Errorf("dst holds %d bytes (%v), not one writer's whole file", len(b), err)
		}
		assertOnly(t, dir, "def.toml")
	})
}

// TestReadersSeeWholeFiles: a reader of a file that WriteFile replaces
// again and again sees one whole version or another, never part of one.
func TestReadersSeeWholeFiles(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "def.toml")
	version := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%04d", i)), 1000+i) }
	if err := WriteFile(dst, version(0), 0o600); err != nil {
		t.Fatal(err)
	}
	const versions = 200
	done := make(chan struct{})
	read := make(chan int, 1)
	go func() {
		defer close(read)
		reads := 0
		for {
			select {
			case <-done:
				read <- reads
				return
			default:
			}
			b, err := os.ReadFile(dst)
			if err != nil {
				t.Errorf("read: %v", err)
				read <- reads
				return
			}
			var i int
			if _, err := fmt.Sscanf(string(b[:4]), "%04d", &i); err != nil || !bytes.Equal(b, version(i)) {
				t.Errorf("read %d bytes that are no whole version", len(b))
			}
			reads++
		}
	}()
	for i := 1; i <= versions; i++ {
		if err := WriteFile(dst, version(i), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if n := <-read; n == 0 {
		t.Log("the reader read nothing while the file was rewritten")
	}
	if b, _ := os.ReadFile(dst); !bytes.Equal(b, version(versions)) {
		t.Errorf("dst is not the last version")
	}
}

func TestWriteFileFailures(t *testing.T) {
	modes(t, func(t *testing.T, named bool) {
		dir := t.TempDir()
		if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("into a missing directory: %v, want an error wrapping fs.ErrNotExist", err)
		}
		// A directory in the way: the rename fails, and leaves nothing.
		sub := filepath.Join(dir, "def.toml")
		if err := os.MkdirAll(filepath.Join(sub, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		err := WriteFile(sub, []byte("x"), 0o600)
		if err == nil || !strings.Contains(err.Error(), sub) {
			t.Errorf("over a directory: %v, want an error naming %q", err, sub)
		}
		assertOnly(t, dir, "def.toml")
		if _, err := Create(dir+"/", 0o600); err == nil {
			t.Errorf("Create of a directory name succeeded")
		}
	})
}

// TestKilledWriter: a writer killed before it commits leaves nothing with
// O_TMPFILE, and a temporary file that the next Create removes without.
func TestKilledWriter(t *testing.T) {
	modes(t, func(t *testing.T, named bool) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "out.img")
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
		cmd.Env = append(os.Environ(), "ATOMICFILE_HELPER_DST="+dst, fmt.Sprintf("ATOMICFILE_HELPER_NAMED=%v", named))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "written\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper said %q, %v", line, err)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if !named {
			assertOnly(t, dir)
			return
		}
		if tmp := temps(t, dir); len(tmp) != 1 {
			t.Fatalf("after the kill: temporary files %q, want one", tmp)
		}
		f, err := Create(dst, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Abort()
		if tmp := temps(t, dir); len(tmp) != 1 || filepath.Join(dir, tmp[0]) != f.name {
			t.Errorf("after the next Create: temporary files %q, want only its own", tmp)
		}
	})
}

// TestHelperWriter is the writer TestKilledWriter kills.
func TestHelperWriter(t *testing.T) {
	dst := os.Getenv("ATOMICFILE_HELPER_DST")
	if dst == "" {
		t.Skip("run by TestKilledWriter")
	}
	UseTmpfile(os.Getenv("ATOMICFILE_HELPER_NAMED") != "true")
	f, err := Create(dst, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	fmt.Println("written")
	io.Copy(io.Discard, os.Stdin) // until killed
}
