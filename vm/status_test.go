package vm_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/vmtui/vmtui/vm"
)

// TestWriteTable checks the status table byte for byte on fixed data:
// vmctl's format, sizes as fmt_scaled(3) prints them, "-" for what a
// stopped VM lacks.
func TestWriteTable(t *testing.T) {
	list := []vm.Status{
		{ID: 1, Name: "web", PID: 4242, VCPUs: 2, MaxMem: 1 << 30, CurMem: 64 << 20, TTY: "/dev/pts/5", Owner: "root:wheel", State: vm.StateRunning},
		{ID: 2, Name: "db", VCPUs: 1, MaxMem: 512 << 20, Owner: "alice:alice", State: vm.StateStopped},
		{ID: 10, Name: "paused-one", PID: 99999, VCPUs: 16, MaxMem: 3 << 29, CurMem: 1536 << 10, TTY: "/dev/pts/12", Owner: "bob:users", State: vm.StatePaused},
		{ID: 123, Name: "stuck", PID: 7, VCPUs: 1, MaxMem: 128 << 20, CurMem: 100 << 20, Owner: "root:root", State: vm.StateBroken, Err: "qemu does not answer"},
		{ID: 124, Name: "new", VCPUs: 1, MaxMem: 128 << 20, Owner: "root:root", State: vm.StateStarting},
		// A definition file's name may hold anything: never printed raw.
		{ID: 0, Name: "evil\x1b]0;owned\a\x1b[2J\nx", VCPUs: 1, MaxMem: 128 << 20, Owner: "root:root", State: vm.StateStopped, Err: "invalid"},
	}
	want := "" +
		"   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n" +
		"    1  4242     2    1.0G   64.0M   pts/5   root:wheel  running web\n" +
		"    2     -     1    512M       -       -  alice:alice  stopped db\n" +
		"   10 99999    16    1.5G    1.5M  pts/12    bob:users   paused paused-one\n" +
		"  123     7     1    128M    100M       -    root:root   broken stuck\n" +
		"  124     -     1    128M       -       -    root:root starting new\n" +
		"    0     -     1    128M       -       -    root:root  stopped \"evil\\x1b]0;owned\\a\\x1b[2J\\nx\"\n"
	var b bytes.Buffer
	if err := vm.WriteTable(&b, list); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != want {
		t.Errorf("WriteTable:\ngot\n%s\nwant\n%s", got, want)
	}

	b.Reset()
	if err := vm.WriteTable(&b, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n"; got != want {
		t.Errorf("WriteTable of nothing: %q, want %q", got, want)
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := vm.WriteJSON(&b, nil); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "[]\n" {
		t.Errorf("WriteJSON of nothing: %q, want %q", got, "[]\n")
	}
	b.Reset()
	in := []vm.Status{{ID: 3, Name: "x", PID: 12, VCPUs: 1, MaxMem: 1 << 20, CurMem: 5, TTY: "/dev/pts/1", Owner: "a:b", State: vm.StatePaused}}
	if err := vm.WriteJSON(&b, in); err != nil {
		t.Fatal(err)
	}
	var out []vm.Status
	if err := json.Unmarshal(b.Bytes(), &out); err != nil {
		t.Fatalf("WriteJSON output does not parse: %v\n%s", err, b.String())
	}
	if len(out) != 1 || out[0].ID != 3 || out[0].State != vm.StatePaused || out[0].TTY != "/dev/pts/1" || out[0].MaxMem != 1<<20 {
		t.Errorf("WriteJSON round trip: %+v, want %+v", out, in)
	}
}
