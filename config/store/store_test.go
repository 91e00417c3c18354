package store

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(HomePaths(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// create defines a small VM called name and returns its ID.
func create(t *testing.T, s *Store, name string) int {
	t.Helper()
	vm := &config.VM{Name: name, Kernel: "/boot/vmlinuz"}
	if err := s.Create(vm); err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	return vm.ID
}

// ids returns the IDs and names of the listed VMs, failing on broken ones.
func ids(t *testing.T, s *Store) []string {
	t.Helper()
	vms, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, vm := range vms {
		if vm.Err != nil {
			t.Errorf("List: %s: %v", vm.Name, vm.Err)
		}
		out = append(out, fmt.Sprintf("%d:%s", vm.ID, vm.Name))
	}
	return out
}

// assertNoTemp fails if a temporary file is left in dir.
func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", filepath.Join(dir, e.Name()))
		}
	}
}

func TestCreateLookup(t *testing.T) {
	s := newStore(t)
	vm := &config.VM{Name: "web", Memory: 1 << 30, Disks: []config.Disk{{Path: "/vm/web.qcow2"}},
		Networks: []config.Network{{HostFwd: []string{"tcp::2222-:22"}}}}
	if err := s.Create(vm); err != nil {
		t.Fatal(err)
	}
	want := &config.VM{ID: 1, Name: "web", Memory: 1 << 30, CPUs: 1, Disks: []config.Disk{{Path: "/vm/web.qcow2"}},
		Networks: []config.Network{{Type: config.NetUser, HostFwd: []string{"tcp::2222-:22"}}},
		File:     s.Paths().DefinitionFile("web")}
	if !reflect.DeepEqual(vm, want) {
		t.Errorf("Create left\n%+v\nwant\n%+v", vm, want)
	}
	for _, key := range []string{"web", "1", "01"} {
		got, err := s.Lookup(key)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Lookup(%q) = %+v, %v\nwant %+v", key, got, err, want)
		}
	}
	for _, key := range []string{"db", "2", "0", "", "99999999999999999999999", "../web", ".web", "web/x", "/etc/passwd"} {
		got, err := s.Lookup(key)
		if !errors.Is(err, ErrNotFound) || got != nil || err.Error() != key+": vm not found" {
			t.Errorf("Lookup(%q) = %v, %v; want %q, matching ErrNotFound", key, got, err, key+": vm not found")
		}
	}
	if err := s.Create(&config.VM{Name: "web", Kernel: "/k"}); err != ErrExists {
		t.Errorf("Create of an existing name: got %v, want ErrExists", err)
	}
	if err := s.Create(&config.VM{Name: "-web"}); err == nil || err.Error() != "name: invalid VM name \"-web\": starts with '-'\nno kernel or disk/cdrom specified" {
		t.Errorf("Create of an invalid VM: got %v", err)
	}

	fi, err := os.Stat(vm.File)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("definition file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	fi, err = os.Stat(s.Paths().VMsDir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("definitions directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	assertNoTemp(t, s.Paths().VMsDir())
	assertNoTemp(t, s.Paths().ConfigDir)
}

func TestIDsAreNeverReused(t *testing.T) {
	s := newStore(t)
	for i, name := range []string{"a", "b", "c"} {
		if id := create(t, s, name); id != i+1 {
			t.Fatalf("Create(%s) assigned %d, want %d", name, id, i+1)
		}
	}
	// Removing the VM with the highest ID does not give its ID back.
	if err := s.Remove("c"); err != nil {
		t.Fatal(err)
	}
	if id := create(t, s, "d"); id != 4 {
		t.Errorf("after removing c (3), d got %d, want 4", id)
	}
	// Nor does removing one in the middle.
	if err := s.Remove("b"); err != nil {
		t.Fatal(err)
	}
	if id := create(t, s, "e"); id != 5 {
		t.Errorf("after removing b (2), e got %d, want 5", id)
	}
	if got, want := ids(t, s), []string{"1:a", "4:d", "5:e"}; !slices.Equal(got, want) {
		t.Errorf("List: got %v, want %v", got, want)
	}
	if got, _ := os.ReadFile(s.Paths().LastIDFile()); string(got) != "5\n" {
		t.Errorf("last-id holds %q, want \"5\\n\"", got)
	}

	// A lost or damaged counter never lets a defined VM's ID be given
	// again.
	for _, counter := range []string{"", "1\n", "garbage"} {
		if counter == "" {
			os.Remove(s.Paths().LastIDFile())
		} else if err := os.WriteFile(s.Paths().LastIDFile(), []byte(counter), 0o600); err != nil {
			t.Fatal(err)
		}
		vms, _ := s.List()
		maxID := vms[len(vms)-1].ID
		if id := create(t, s, "n"+strconv.Itoa(maxID)); id != maxID+1 {
			t.Errorf("with last-id %q and ids up to %d, Create assigned %d", counter, maxID, id)
		}
	}
}

func TestCreateCountsBrokenDefinitions(t *testing.T) {
	s := newStore(t)
	create(t, s, "a")
	// A definition with an unknown key still has a readable ID.
	os.WriteFile(s.Paths().DefinitionFile("odd"), []byte("id = 40\nkernel = '/k'\ncolor = 'red'\n"), 0o600)
	os.Remove(s.Paths().LastIDFile())
	if id := create(t, s, "b"); id != 41 {
		t.Errorf("Create assigned %d, want 41 (after the broken definition's 40)", id)
	}
}

func TestListBroken(t *testing.T) {
	s := newStore(t)
	create(t, s, "web")
	create(t, s, "db")
	dir := s.Paths().VMsDir()
	files := map[string]string{
		"syntax.toml":      "id = \n",
		"unknown.toml":     "id = 9\nkernel = '/k'\nmemroy = '1G'\n",
		"Bad Name.toml":    "id = 8\nkernel = '/k'\n",
		"dup.toml":         "id = 2\nkernel = '/k'\n",
		".hidden.toml":     "not read",
		"notes.txt":        "not read",
		".web.toml.tmp-12": "not read",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	vms, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, vm := range vms {
		line := fmt.Sprintf("%d %s", vm.ID, vm.Name)
		if vm.Err != nil {
			line += ": " + strings.ReplaceAll(vm.Err.Error(), dir+"/", "")
		}
		got = append(got, line)
	}
	want := []string{
		"1 web",
		`2 db: db.toml: id: 2 is also the id of "dup.toml"`,
		`2 dup: dup.toml: id: 2 is also the id of "db.toml"`,
		"8 Bad Name: Bad Name.toml: name: invalid VM name \"Bad Name\": only letters, digits, '.', '-' and '_' are allowed (it is the file's name: rename the file)",
		"9 unknown: unknown.toml:3: memroy: unknown key",
		"0 syntax: syntax.toml:1: unexpected character U+000A at start of value",
	}
	if !slices.Equal(got, want) {
		t.Errorf("List:\ngot  %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}

	// A broken definition can be looked up, with its error.
	vm, err := s.Lookup("syntax")
	if vm == nil || err == nil || vm.Err != err || vm.File != filepath.Join(dir, "syntax.toml") {
		t.Errorf("Lookup(syntax) = %+v, %v; want the VM and its error", vm, err)
	}
	if vm, err := s.Lookup("Bad Name"); vm == nil || vm.ID != 8 || err == nil {
		t.Errorf("Lookup(Bad Name) = %+v, %v; want the VM and its error", vm, err)
	}
	if _, err := s.Lookup("2"); err == nil || !strings.Contains(err.Error(), "vm id 2 is ambiguous") {
		t.Errorf("Lookup(2) = %v, want an ambiguous id", err)
	}
	if err := s.Remove("Bad Name"); err != nil {
		t.Errorf("Remove(Bad Name): %v", err)
	}
}

// TestListSpecialFiles: a FIFO or a device among the definitions is
// listed as broken, at once: opening a FIFO for reading would wait for a
// writer for ever.
func TestListSpecialFiles(t *testing.T) {
	s := newStore(t)
	create(t, s, "web")
	dir := s.Paths().VMsDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.toml"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.toml")); err != nil {
		t.Fatal(err)
	}
	done := make(chan []*config.VM, 1)
	go func() {
		vms, err := s.List()
		if err != nil {
			t.Error(err)
		}
		done <- vms
	}()
	var vms []*config.VM
	select {
	case vms = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("List hangs on a FIFO among the definitions")
	}
	errs := map[string]string{}
	for _, vm := range vms {
		if vm.Err != nil {
			errs[vm.Name] = vm.Err.Error()
		}
	}
	for _, name := range []string{"fifo", "zero"} {
		if !strings.Contains(errs[name], "not a regular file") {
			t.Errorf("List: %s: %q, want an error saying it is not a regular file", name, errs[name])
		}
	}
	if vm, err := s.Lookup("fifo"); vm == nil || err == nil {
		t.Errorf("Lookup(fifo) = %v, %v; want the definition and its error", vm, err)
	}
}

func TestSave(t *testing.T) {
	s := newStore(t)
	create(t, s, "web")
	vm, err := s.Lookup("web")
	if err != nil {
		t.Fatal(err)
	}
	vm.Memory, vm.CPUs = 2<<30, 2
	vm.CDROM = "/iso/install.iso"
	if err := s.Save(vm); err != nil {
		t.Fatal(err)
	}
	got, err := s.Lookup("web")
	if err != nil || !reflect.DeepEqual(got, vm) {
		t.Errorf("after Save, Lookup = %+v, %v\nwant %+v", got, err, vm)
	}
	assertNoTemp(t, s.Paths().VMsDir())

	before, _ := os.ReadFile(vm.File)
	bad := *vm
	bad.CPUs = 100
	if err := s.Save(&bad); err == nil || err.Error() != vm.File+": cpus: 100 is out of range (1 to 64)" {
		t.Errorf("Save of an invalid VM: got %v", err)
	}
	other := *vm
	other.ID = 5
	if err := s.Save(&other); err == nil || err.Error() != fmt.Sprintf("save web: %s has id 1, not 5", vm.File) {
		t.Errorf("Save with another ID: got %v", err)
	}
	if after, _ := os.ReadFile(vm.File); string(after) != string(before) {
		t.Errorf("a refused Save changed the file")
	}
	missing := *vm
	missing.Name = "db"
	if err := s.Save(&missing); !errors.Is(err, ErrNotFound) || err.Error() != "db: vm not found" {
		t.Errorf("Save of an undefined VM: got %v, want db: vm not found (ErrNotFound)", err)
	}
}

func TestSaveFailureKeepsOldFile(t *testing.T) {
	s := newStore(t)
	create(t, s, "web")
	vm, _ := s.Lookup("web")
	before, err := os.ReadFile(vm.File)
	if err != nil {
		t.Fatal(err)
	}
	vm.CPUs = 4

	t.Run("failed commit", func(t *testing.T) {
		testHookBeforeCommit = func(f *os.File) error {
			if fi, err := f.Stat(); err != nil || fi.Size() == 0 {
				t.Errorf("new file at commit: %v, %v; want it written", fi, err)
			}
			return errors.New("disk on fire")
		}
		defer func() { testHookBeforeCommit = nil }()
		err := s.Save(vm)
		if want := fmt.Sprintf("save web: write %q: disk on fire", vm.File); err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		if os.Getuid() == 0 {
			t.Skip("root writes to read-only directories")
		}
		dir := s.Paths().VMsDir()
		os.Chmod(dir, 0o500)
		defer os.Chmod(dir, 0o700)
		if err := s.Save(vm); err == nil {
			t.Errorf("Save to a read-only directory succeeded")
		}
	})
	if after, _ := os.ReadFile(vm.File); string(after) != string(before) {
		t.Errorf("a failed Save changed the file:\n%s", after)
	}
	assertNoTemp(t, s.Paths().VMsDir())
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	create(t, s, "web")
	if err := s.Remove("web"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup("web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after Remove: got %v, want ErrNotFound", err)
	}
	for _, name := range []string{"web", "", "../vms/web", ".lock"} {
		if err := s.Remove(name); !errors.Is(err, ErrNotFound) || err.Error() != name+": vm not found" {
			t.Errorf("Remove(%q): got %v, want ErrNotFound", name, err)
		}
	}
}

func TestConcurrentCreate(t *testing.T) {
	s := newStore(t)
	const workers, each = 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			// Each worker opens its own Store, as another process would.
			s, err := Open(s.Paths())
			if err != nil {
				errs <- err
				return
			}
			for i := range each {
				if err := s.Create(&config.VM{Name: fmt.Sprintf("w%d-%d", w, i), Kernel: "/k"}); err != nil {
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
	checkIDs(t, s, workers*each)
}

// checkIDs checks that the store holds n VMs with the IDs 1 to n.
func checkIDs(t *testing.T, s *Store, n int) {
	t.Helper()
	vms, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != n {
		t.Fatalf("List: %d VMs, want %d", len(vms), n)
	}
	for i, vm := range vms {
		if vm.Err != nil || vm.ID != i+1 {
			t.Errorf("List[%d] = %d %s (%v), want ID %d", i, vm.ID, vm.Name, vm.Err, i+1)
		}
	}
}

// TestCreateTwoProcesses creates VMs from two processes at once: this test
// binary, run again as TestHelperCreate.
func TestCreateTwoProcesses(t *testing.T) {
	s := newStore(t)
	const each = 15
	start := filepath.Join(t.TempDir(), "start")
	var cmds []*exec.Cmd
	for _, prefix := range []string{"p", "q"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCreate$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			"VMTUI_CONFIG_HELPER="+prefix,
			"VMTUI_CONFIG_HELPER_START="+start,
			"VMTUI_CONFIG_HELPER_COUNT="+strconv.Itoa(each),
			"VMTUI_HOME="+s.Paths().ConfigDir)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s:\n%s", prefix, out.String())
			}
		})
		cmds = append(cmds, cmd)
	}
	// Both are running: let them go together.
	if err := os.WriteFile(start, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}
	checkIDs(t, s, 2*each)
}

func TestHelperCreate(t *testing.T) {
	prefix := os.Getenv("VMTUI_CONFIG_HELPER")
	if prefix == "" {
		t.Skip("run by TestCreateTwoProcesses")
	}
	n, _ := strconv.Atoi(os.Getenv("VMTUI_CONFIG_HELPER_COUNT"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(os.Getenv("VMTUI_CONFIG_HELPER_START")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never told to start")
		}
	}
	p, err := DefaultPaths()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := s.Create(&config.VM{Name: fmt.Sprintf("%s%d", prefix, i), Kernel: "/k"}); err != nil {
			t.Fatal(err)
		}
	}
}
