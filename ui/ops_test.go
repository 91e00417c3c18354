package ui

import (
	"context"
	"fmt"
	"testing"

	"github.com/vmtui/vmtui/vm"
)

// TestOperationsTable: every key starts the operation of the table that
// applies to the VM's state, or says why none does, with the table's words.
func TestOperationsTable(t *testing.T) {
	keys := DefaultKeyMap()
	running := vm.Status{Name: "web", PID: 1, State: vm.StateRunning}
	paused := vm.Status{Name: "web", PID: 1, State: vm.StatePaused}
	stopped := vm.Status{Name: "web", State: vm.StateStopped}
	broken := vm.Status{Name: "web", PID: 1, State: vm.StateBroken}
	for _, tc := range []struct {
		key    string
		st     vm.Status
		verb   string // the operation chosen
		refuse string // its refusal, "" when it applies
	}{
		{"s", stopped, "start", ""},
		{"s", running, "start", "vm is already running"},
		{"x", running, "stop", ""},
		{"x", paused, "stop", ""},
		{"x", stopped, "stop", "vm is not running"},
		{"X", broken, "force stop", ""},
		{"X", stopped, "force stop", "vm is not running"},
		{"p", running, "pause", ""},
		{"p", paused, "unpause", ""},
		{"p", stopped, "pause", "vm is stopped"},
		{"p", broken, "pause", "vm is broken"},
		{"z", running, "save", ""},
		{"z", paused, "save", ""},
		{"z", stopped, "save", "vm is stopped"},
		{"D", stopped, "remove", ""},
		{"D", running, "remove", "vm is running (pid 1); stop it first"},
		{"j", stopped, "", ""},
	} {
		t.Run(fmt.Sprintf("%s_%s", tc.key, tc.st.State), func(t *testing.T) {
			op, err := operationFor(keys, splitKeys(tc.key)[0], tc.st)
			verb, refuse := "", ""
			if op != nil {
				verb = op.verb
			}
			if err != nil {
				refuse = err.Error()
			}
			if verb != tc.verb || refuse != tc.refuse {
				t.Errorf("got %q (refused: %q), want %q (refused: %q)", verb, refuse, tc.verb, tc.refuse)
			}
		})
	}
}

// TestOperationsComplete: every operation has its words, a key, and an
// action that reaches the backend as itself.
func TestOperationsComplete(t *testing.T) {
	keys := DefaultKeyMap()
	want := map[string]string{"start": "start web", "stop": "stop web", "force stop": "force stop web",
		"pause": "pause web", "unpause": "unpause web", "remove": "remove web", "save": "save web"}
	for _, op := range operations {
		if op.verb == "" || op.ing == "" || op.past == "" || op.do == nil || op.when == nil || len(op.key(keys).Keys()) == 0 {
			t.Errorf("operation %+v: missing words, key or action", op)
			continue
		}
		if op.prompt != "" && fmt.Sprintf(op.prompt, "web") == op.prompt {
			t.Errorf("%s: prompt %q does not name the vm", op.verb, op.prompt)
		}
		f := newFake()
		if err := op.do(context.Background(), f, "web"); err != nil {
			t.Errorf("%s: %v", op.verb, err)
		}
		if calls := f.Calls(); len(calls) != 1 || calls[0] != want[op.verb] {
			t.Errorf("%s: backend calls %q, want %q", op.verb, calls, want[op.verb])
		}
		delete(want, op.verb)
	}
	if len(want) > 0 {
		t.Errorf("operations missing: %v", want)
	}
}
