package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config/store"
)

// runInstanceCLI runs one vmtui command line on the state root home, in dir.
func runInstanceCLI(t *testing.T, home string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	c := New(strings.NewReader(""), &out, &errb, func() (*store.Paths, error) { return store.HomePaths(home), nil })
	code = c.Run(context.Background(), args)
	return out.String(), errb.String(), code
}

// TestDefineInstance: define -t makes an instance with the flags as
// overrides and -p giving host ports; show and --json name the template;
// the template's remove is refused, naming it; the instance's remove takes
// its overlay.
func TestDefineInstance(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	img := filepath.Join(dir, "base.qcow2")
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(args ...string) (string, string) {
		t.Helper()
		out, errs, code := runInstanceCLI(t, home, args...)
		if code != 0 {
			t.Fatalf("vmtui %q: exit %d: %s", args, code, errs)
		}
		return out, errs
	}
	must("create", "-s", "4M", img)
	must("define", "-b", kernel, "-m", "128M", "-d", img, "--net", "user,hostfwd=tcp::2222-:22,hostfwd=tcp::8080-:80,mac=52:54:00:00:00:01", "base")

	if _, errs, code := runInstanceCLI(t, home, "define", "-p", "2223:22", "web0"); code == 0 || !strings.Contains(errs, "use it with -t") {
		t.Errorf("-p without -t: exit %d: %s", code, errs)
	}
	_, errs := must("define", "-t", "base", "-m", "256M", "-p", "2223:22", "web1")
	if !strings.Contains(errs, "port forward tcp::8080-:80 of template base left out: give it a host port with -p HOSTPORT:80") ||
		!strings.Contains(errs, "defined vm 2 (web1)") {
		t.Errorf("define -t said:\n%s", errs)
	}
	data, err := os.ReadFile(filepath.Join(home, "vms", "web1.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"template = 'base'", "memory = '256M'", "hostfwd = ['tcp::2223-:22']", filepath.Join(home, "disks", "web1", "disk0.qcow2")} {
		if !strings.Contains(string(data), want) {
			t.Errorf("web1.toml has no %q:\n%s", want, data)
		}
	}
	if strings.Contains(string(data), "mac") {
		t.Errorf("web1.toml has the template's MAC:\n%s", data)
	}
	out, _ := must("show", "web1")
	if !strings.HasSuffix(out, "web1\ntemplate: base\n") {
		t.Errorf("show web1:\n%s", out)
	}
	out, _ = must("show", "--json", "web1")
	var list []struct{ Template string }
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].Template != "base" {
		t.Errorf("show --json web1: %v\n%s", err, out)
	}
	if out, _ = must("show", "base"); strings.Contains(out, "template") {
		t.Errorf("show base names a template:\n%s", out)
	}

	if _, errs, code := runInstanceCLI(t, home, "remove", "base"); code == 0 || !strings.Contains(errs, "vmtui: remove base: vm base is the template of web1: remove the instances first") {
		t.Errorf("remove of the template: exit %d: %s", code, errs)
	}
	if _, errs, code := runInstanceCLI(t, home, "define", "-t", "nosuch", "web2"); code == 0 || !strings.Contains(errs, "invalid template: nosuch: vm not found") {
		t.Errorf("define -t of an unknown template: exit %d: %s", code, errs)
	}
	must("remove", "web1")
	if _, err := os.Stat(filepath.Join(home, "disks", "web1")); !os.IsNotExist(err) {
		t.Errorf("web1's overlays after its removal: %v", err)
	}
	must("remove", "base")
	if _, err := os.Stat(img); err != nil {
		t.Errorf("the template's disk after its removal: %v", err)
	}
}
