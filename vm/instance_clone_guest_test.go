package vm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/testguest"
	"github.com/vmtui/vmtui/vm"
)

// TestInstantClones: a value held only in the RAM of a saved template
// appears in its instances, which resume the template's guest instead of
// booting; two instances then change it independently; the template's RAM
// file is unchanged; an instance's second start boots.
func TestInstantClones(t *testing.T) {
	e := newGuestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*opTimeout)
	defer cancel()
	tpl := &config.VM{
		Name: "tpl", Memory: testguest.MemoryBytes, CPUs: 1, Machine: testguest.Machine,
		Kernel: e.kernel, Initrd: e.initrd, Append: testguest.Cmdline,
		Networks: []config.Network{{Type: config.NetUser, HostFwd: []string{"tcp:127.0.0.1:0-:22"}}},
	}
	tpl.Networks = nil // user networking without forwards: nothing to bind
	if err := e.m.Store().Create(tpl); err != nil {
		t.Fatal(err)
	}
	st := e.start(tpl, vm.StartOptions{})
	token := fmt.Sprintf("ram-only-%d", time.Now().UnixNano())
	sh := e.shell("tpl", st.TTY)
	// Idle before the save: the guest has printed its prompt after the
	// command's output.
	sh.send("echo "+token+" > /tmp/val; echo stored-$((40+2))", 30*time.Second, func(out string) (string, bool) {
		i := strings.Index(out, "stored-42")
		return "", i >= 0 && strings.Contains(out[i:], testguest.Prompt)
	})
	if err := e.m.Save(ctx, tpl, vm.SendOptions{}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if !e.m.HasSavedState("tpl") {
		t.Fatal("no saved state after save")
	}

	var shells []*guestShell
	for _, name := range []string{"c1", "c2"} {
		inst, notes, err := e.m.CreateInstance(ctx, "tpl", name, vm.InstanceOptions{})
		if err != nil {
			t.Fatalf("instance %s: %v\nqemu log:\n%s", name, err, readFile(e.paths.QEMULog(name)))
		}
		if len(notes) > 0 {
			t.Errorf("instance %s: notes %q", name, notes)
		}
		ist := e.start(inst, vm.StartOptions{})
		s := e.attachShell(name, ist.TTY)
		took := s.expect("cat /tmp/val", token, 30*time.Second)
		t.Logf("instance %s answered on its console %v after its start returned", name, took)
		shells = append(shells, s)
		if log := readFile(e.paths.SerialLog(name)); strings.Contains(log, testguest.Banner) {
			t.Errorf("instance %s booted instead of resuming:\n%s", name, log)
		}
	}
	ram := filepath.Join(e.paths.TemplateCloneDir("tpl"), "ram")
	sum := sha256File(t, ram)
	shells[0].expect("echo one > /tmp/val; cat /tmp/val", "one\r\n", 30*time.Second)
	shells[1].expect("echo two > /tmp/val; cat /tmp/val", "two\r\n", 30*time.Second)
	shells[0].expect("cat /tmp/val; echo end-$((1+1))", "one\r\nend-2", 30*time.Second)
	shells[1].expect("cat /tmp/val; echo end-$((2+1))", "two\r\nend-3", 30*time.Second)
	if got := sha256File(t, ram); got != sum {
		t.Errorf("the template's RAM file changed under its instances")
	}

	// The template stays saved, and refused, while it has instances.
	if _, err := e.m.Start(ctx, tpl, vm.StartOptions{}); !errors.Is(err, vm.ErrTemplateInUse) {
		t.Errorf("start of the template: %v", err)
	}
	// An instance's second start boots: its disks are its own by now.
	c1, err := e.m.Store().Lookup("c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Stop(ctx, c1, vm.StopOptions{Force: true, Wait: true}); err != nil {
		t.Fatal(err)
	}
	e.start(c1, vm.StartOptions{})
	e.waitSerial("c1", testguest.Banner, testguest.BootTimeout)

	// An instance whose definition was edited before its first start
	// boots: the saved guest fits the machine it was made for only.
	c3, _, err := e.m.CreateInstance(ctx, "tpl", "c3", vm.InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c3.Append += " vmtui.edited=1"
	if err := e.m.Store().Save(c3); err != nil {
		t.Fatal(err)
	}
	e.start(c3, vm.StartOptions{})
	e.waitSerial("c3", testguest.Banner, testguest.BootTimeout)

	// Once the instances are gone, the template resumes its own guest,
	// and the state made for them goes.
	for _, name := range []string{"c1", "c2", "c3"} {
		d, err := e.m.Store().Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.m.Stop(ctx, d, vm.StopOptions{Force: true, Wait: true}); err != nil && !errors.Is(err, vm.ErrNotRunning) {
			t.Fatal(err)
		}
		if _, err := e.m.Remove(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	tst := e.start(tpl, vm.StartOptions{})
	if _, err := os.Stat(e.paths.TemplateCloneDir("tpl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the instances' state after the template's start: %v", err)
	}
	e.attachShell("tpl", tst.TTY).expect("cat /tmp/val", token, 30*time.Second)
}

// TestInstantCloneBridgedRefused: an instance of a saved template on a
// bridged network is refused, naming the bridge, and nothing is left.
func TestInstantCloneBridgedRefused(t *testing.T) {
	e := newTemplateEnv(t)
	// Any saved state will do: the refusal comes before it is read.
	saved := e.paths.SavedStateFile("base")
	if err := os.MkdirAll(filepath.Dir(saved), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, []byte("saved"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.m.CreateInstance(context.Background(), "base", "web1", vm.InstanceOptions{})
	if err == nil || !strings.Contains(err.Error(), "on the bridged network br0") {
		t.Fatalf("instance of a saved bridged template: %v", err)
	}
	if _, err := e.m.Store().Lookup("web1"); err == nil {
		t.Error("refused instance defined")
	}
	if _, err := os.Stat(e.paths.InstanceDisksDir("web1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused instance's disks: %v", err)
	}
	// With networks of its own it boots instead, and says so.
	_, notes, err := e.m.CreateInstance(context.Background(), "base", "web2", vm.InstanceOptions{Networks: []config.Network{{Type: config.NetUser}}})
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "the instance differs from it in networks: it boots instead") {
		t.Errorf("instance with its own networks: %v, notes %q", err, notes)
	}
	_, notes, err = e.m.CreateInstance(context.Background(), "base", "web3", vm.InstanceOptions{Memory: 256 << 20, Ports: []vm.PortMap{{Host: 2223, Guest: 22}}})
	if err != nil || !strings.Contains(strings.Join(notes, "\n"), "the instance differs from it in memory: it boots instead") {
		t.Errorf("instance with more memory: %v, notes %q", err, notes)
	}
	if _, err := os.Stat(filepath.Join(e.paths.InstanceDisksDir("web3"), "resume-template")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an instance that boots is marked to resume: %v", err)
	}
}
