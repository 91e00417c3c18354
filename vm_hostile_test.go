package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// Hostile input to the VM commands: empty names, definition files whose
// names are terminal escape sequences.

// TestEmptyVMName: an empty VM argument (a script's unset variable) is an
// error, never a silent success.
func TestEmptyVMName(t *testing.T) {
	home := t.TempDir()
	for _, args := range [][]string{
		{"start", ""}, {"start", "-m", "128M", ""}, {"define", ""}, {"define", "-b", "/k", ""},
		{"pause", ""}, {"unpause", ""}, {"wait", ""}, {"remove", ""}, {"console", ""},
		{"stop", ""}, {"stop", "-f", ""}, {"status", ""}, {"show", ""},
	} {
		r := vmcli(t, home, args...)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "empty vm name") {
			t.Errorf("vmtui %q: exit %d, stdout %q, stderr %q; want exit 1 and an error saying the name is empty", args, r.code, r.stdout, r.stderr)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(home, "vms")); len(ents) != 0 {
		t.Errorf("an empty name defined something: %v", ents)
	}
}

// controlChars returns the control characters in s other than newlines
// (C0, DEL and C1, which terminals obey), quoted, or "".
func controlChars(s string) string {
	var bad []rune
	for _, r := range s {
		if r != '\n' && unicode.IsControl(r) {
			bad = append(bad, r)
		}
	}
	if bad == nil {
		return ""
	}
	b, _ := json.Marshal(string(bad))
	return string(b)
}

// TestHostileDefinitionName: a definition file whose name holds escape
// sequences and a newline is listed with an error and its name escaped, in
// --list, --json and status; it can be removed; nothing vmtui prints holds
// a control character.
func TestHostileDefinitionName(t *testing.T) {
	home := t.TempDir()
	vmOK(t, home, `vmtui: defined vm 1 \(good\) in .*\n`, "define", "-b", "/boot/vmlinuz", "-m", "128M", "good")
	name := "e\x1b]0;owned\a\x1b[2J\u009b31m\xff\nx"
	quoted := `"e\x1b]0;owned\a\x1b[2J\u009b31m\xff\nx"`
	def := "id = 7\nname = \"x\"\nmemory = \"128M\"\nkernel = \"/boot/vmlinuz\"\n"
	if err := os.WriteFile(filepath.Join(home, "vms", name+".toml"), []byte(def), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(args []string, r result) {
		t.Helper()
		if bad := controlChars(r.stdout + r.stderr); bad != "" {
			t.Errorf("vmtui %q prints control characters %s:\nstdout %q\nstderr %q", args, bad, r.stdout, r.stderr)
		}
	}

	for _, args := range [][]string{{"--list"}, {"status"}, {"status", name}} {
		r := vmcli(t, home, args...)
		check(args, r)
		if r.code != 0 {
			t.Errorf("vmtui %q: exit %d, stderr %q", args, r.code, r.stderr)
			continue
		}
		var row string
		for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")[1:] {
			if !strings.HasSuffix(line, " good") {
				row = line
			}
		}
		if !strings.HasSuffix(row, " stopped "+quoted) {
			t.Errorf("vmtui %q: table %q; want a row ending in stopped %s", args, r.stdout, quoted)
		}
		if !strings.Contains(r.stderr, "vm "+quoted+": ") || !strings.Contains(r.stderr, "invalid VM name") {
			t.Errorf("vmtui %q: stderr %q; want the error of vm %s", args, r.stderr, quoted)
		}
	}

	r := vmcli(t, home, "--list", "--json")
	check([]string{"--list", "--json"}, r)
	var list []struct {
		ID    int    `json:"id"`
		Name  string `json:"name"`
		State string `json:"state"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || r.code != 0 {
		t.Fatalf("--list --json: exit %d, %v:\n%s", r.code, err, r.stdout)
	}
	found := false
	for _, st := range list {
		if st.Name != "good" {
			found = true
			if st.ID != 7 || st.State != "stopped" || !strings.Contains(st.Error, "invalid VM name") {
				t.Errorf("--list --json: %+v; want id 7, stopped, with an error", st)
			}
		}
	}
	if !found || len(list) != 2 {
		t.Errorf("--list --json: %+v; want good and the hostile file", list)
	}

	for _, args := range [][]string{{"start", name}, {"stop", name}} {
		r := vmcli(t, home, args...)
		check(args, r)
		if r.code != 1 || !strings.Contains(r.stderr, "invalid VM name") {
			t.Errorf("vmtui %q: exit %d, stderr %q; want exit 1 and the definition's error", args, r.code, r.stderr)
		}
	}
	r = vmcli(t, home, "remove", name)
	check([]string{"remove", name}, r)
	if r.code != 0 || r.stderr != "vmtui: removed vm "+quoted+" (id 7)\n" {
		t.Errorf("remove of the hostile file: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(home, "vms", name+".toml")); err == nil {
		t.Errorf("remove left the hostile file")
	}
}
