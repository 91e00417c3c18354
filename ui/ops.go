package ui

import (
	"context"
	"fmt"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/vm"
)

// operation is a lifecycle operation on one VM: the words the status line
// says it with, the question it asks first, the key that starts it, when it
// applies, and what it does. The TUI has one table of them (operations).
type operation struct {
	verb string // "force stop": in refusals and errors
	ing  string // "force stopping": while it runs
	past string // "stopped (forced)": once it succeeded
	// prompt asks to confirm, with %s for the VM's name; "" runs at once.
	prompt string
	key    func(KeyMap) key.Binding
	// when says why the operation does not apply to a VM in this state,
	// or nil when it does.
	when func(vm.Status) error
	do   func(ctx context.Context, b Backend, name string) error
	// gone is set when the VM is gone afterwards: its detail view closes.
	gone bool
	// object, when set, is the part of the VM the operation acts on ("snapshot
	// pre-upgrade"): the status line names it, "taking snapshot pre-upgrade
	// of vm web…".
	object string
	// prep joins object and the VM in those words: "of" when empty
	// ("attaching disk d.qcow2 to vm web…").
	prep string
}

// of is the word between the object and the VM.
func (op *operation) of() string {
	if op.prep != "" {
		return op.prep
	}
	return "of"
}

// doing is what the status line says while op runs on VM name.
func (op *operation) doing(name string) string {
	if op.object != "" {
		return fmt.Sprintf("%s %s %s vm %s…", op.ing, op.object, op.of(), name)
	}
	return fmt.Sprintf("%s: %s…", name, op.ing)
}

// done is what the status line says once op succeeded on VM name.
func (op *operation) done(name string) string {
	if op.object != "" {
		return fmt.Sprintf("%s %s %s vm %s", op.past, op.object, op.of(), name)
	}
	return fmt.Sprintf("%s: %s", name, op.past)
}

// failed is what the status line says when op on VM name failed (or was
// refused, or cancelled) with why.
func (op *operation) failed(name string, why any) string {
	if op.object != "" {
		return fmt.Sprintf("%s %s %s vm %s: %v", op.verb, op.object, op.of(), name, why)
	}
	return fmt.Sprintf("%s %s: %v", op.verb, name, why)
}

// busy is what the title says while op runs on a VM shown as name.
func (op *operation) busy(name string) string {
	if op.object != "" {
		return op.ing + " " + op.object + " " + op.of() + " " + name
	}
	return op.ing + " " + name
}

var errNotRunning = fmt.Errorf("vm is not running")

func whenRunning(st vm.Status) error {
	if !st.Running() {
		return errNotRunning
	}
	return nil
}

// operations is every lifecycle operation. Keys shared by several (p:
// pause or unpause) start the first that applies.
var operations = []*operation{
	{
		verb: "start", ing: "starting", past: "started",
		key: func(k KeyMap) key.Binding { return k.Start },
		when: func(st vm.Status) error {
			if st.Running() {
				return vm.ErrAlreadyRunning
			}
			return nil
		},
		do: func(ctx context.Context, b Backend, name string) error { return b.Start(ctx, name) },
	},
	{
		verb: "stop", ing: "stopping", past: "stopped", prompt: "stop %s (power down)? (y/n)",
		key:  func(k KeyMap) key.Binding { return k.Stop },
		when: whenRunning,
		do:   func(ctx context.Context, b Backend, name string) error { return b.Stop(ctx, name, false) },
	},
	{
		verb: "force stop", ing: "force stopping", past: "stopped (forced)", prompt: "force stop %s (kill QEMU)? (y/n)",
		key:  func(k KeyMap) key.Binding { return k.ForceStop },
		when: whenRunning,
		do:   func(ctx context.Context, b Backend, name string) error { return b.Stop(ctx, name, true) },
	},
	{
		verb: "pause", ing: "pausing", past: "paused",
		key: func(k KeyMap) key.Binding { return k.Pause },
		when: func(st vm.Status) error {
			if st.State != vm.StateRunning {
				return fmt.Errorf("vm is %s", st.State)
			}
			return nil
		},
		do: func(ctx context.Context, b Backend, name string) error { return b.Pause(ctx, name) },
	},
	{
		verb: "unpause", ing: "unpausing", past: "unpaused",
		key: func(k KeyMap) key.Binding { return k.Pause },
		when: func(st vm.Status) error {
			if st.State != vm.StatePaused {
				return fmt.Errorf("vm is %s", st.State)
			}
			return nil
		},
		do: func(ctx context.Context, b Backend, name string) error { return b.Unpause(ctx, name) },
	},
	{
		verb: "save", ing: "saving to disk", past: "saved to disk (s resumes it)",
		prompt: "save %s to disk and stop it (s resumes it)? (y/n)",
		key:    func(k KeyMap) key.Binding { return k.Save },
		when: func(st vm.Status) error {
			if st.State != vm.StateRunning && st.State != vm.StatePaused {
				return fmt.Errorf("vm is %s", st.State)
			}
			return nil
		},
		do: func(ctx context.Context, b Backend, name string) error { return b.Save(ctx, name) },
	},
	{
		verb: "remove", ing: "removing", past: "definition removed (disks kept)",
		prompt: "remove the definition of %s (disks are kept)? (y/n)", gone: true,
		key:  func(k KeyMap) key.Binding { return k.Remove },
		when: vm.Status.Removable,
		do:   func(ctx context.Context, b Backend, name string) error { return b.Remove(ctx, name) },
	},
}

// operationFor returns the operation key starts on a VM in state st: the
// first that applies, else the first of that key with the reason it does
// not apply. It returns nil when no operation has that key.
func operationFor(keys KeyMap, msg tea.KeyMsg, st vm.Status) (*operation, error) {
	var first *operation
	var refusal error
	for _, op := range operations {
		if !key.Matches(msg, op.key(keys)) {
			continue
		}
		err := op.when(st)
		if err == nil {
			return op, nil
		}
		if first == nil {
			first, refusal = op, err
		}
	}
	return first, refusal
}
