package cli

import (
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config/store"
)

// TestLiveCommandsRefuse: set, attach-disk and detach-disk check their
// arguments, and refuse a VM that is not running, naming it. (The guest
// tests of package vm change running guests through the binary.)
func TestLiveCommandsRefuse(t *testing.T) {
	dir := t.TempDir()
	paths := func() (*store.Paths, error) { return store.HomePaths(dir), nil }
	if code, _, errOut := runIn(t, dir, paths, "define", "-b", "/k", "-m", "256M", "web"); code != 0 {
		t.Fatalf("define: %s", errOut)
	}
	tests := []struct {
		args []string
		err  string // the first line of stderr
	}{
		{[]string{"set", "web"}, "vmtui: set: -m is required"},
		{[]string{"set", "-m", "1G"}, "usage:\tvmtui set -m size id|name"},
		{[]string{"set", "-m", "12Q", "web"}, "vmtui: set web: -m: "},
		{[]string{"set", "-m", "1G", "web"}, "vmtui: set memory of vm web: vm is not running"},
		{[]string{"set", "-m", "1G", "nosuch"}, "vmtui: nosuch: vm not found"},
		{[]string{"attach-disk", "web"}, "usage:\tvmtui attach-disk id|name disk"},
		{[]string{"attach-disk", "web", ""}, "vmtui: attach-disk: empty disk path"},
		{[]string{"attach-disk", "", "d.qcow2"}, "vmtui: attach-disk: empty vm name: give a vm name or id"},
		{[]string{"attach-disk", "web", "d.qcow2"}, `vmtui: attach "` + dir + `/d.qcow2" to vm web: vm is not running`},
		{[]string{"detach-disk", "1", "d.qcow2"}, `vmtui: detach "d.qcow2" from vm web: vm is not running`},
		{[]string{"detach-disk", "web", "a", "b"}, "usage:\tvmtui detach-disk id|name disk"},
	}
	for _, tt := range tests {
		code, _, errOut := runIn(t, dir, paths, tt.args...)
		if code == 0 || !strings.HasPrefix(errOut, tt.err) {
			t.Errorf("vmtui %q: exit %d, stderr:\n%s\nwant it to start with %q", tt.args, code, errOut, tt.err)
		}
	}
	code, out, _ := runIn(t, dir, paths, "help", "attach-disk")
	if code != 0 || !strings.Contains(out, "not added to the definition") {
		t.Errorf("help attach-disk: exit %d:\n%s", code, out)
	}
}
