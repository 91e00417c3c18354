package ui

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/units"
)

// Live changes from the detail view of a running VM: m sets its memory (a
// size form), a attaches a disk (a path form), u detaches one of the disks
// attached (chosen from a list when there are several, then asked y/n).
// The form takes the bottom of the detail view; the change runs as an
// operation (liveOp) with the spinner, its progress and result in the
// status line.

// liveKind is what a live form changes.
type liveKind int

const (
	liveMemory liveKind = iota
	liveAttach
	liveDetach
)

// liveForm is a live change being asked for in the detail view: a form
// (memory, attach) or a choice among the attached disks (detach).
type liveForm struct {
	kind liveKind
	*form
	// choices are the attached disks to detach one of, cursor the one
	// under the cursor.
	choices []string
	cursor  int
}

// liveOp returns the operation that makes a live change of a running VM:
// memory to size, or attach or detach the disk at path (detach asks
// first).
func liveOp(kind liveKind, size int64, path string) *operation {
	op := &operation{when: whenRunning}
	switch kind {
	case liveMemory:
		op.verb, op.ing, op.past = "set", "setting", "set"
		op.object = "memory to " + units.FormatSize(size)
		op.key = func(k KeyMap) key.Binding { return k.SetMemory }
		op.do = func(ctx context.Context, b Backend, name string) error { return b.SetMemory(ctx, name, size) }
	case liveAttach:
		op.verb, op.ing, op.past = "attach", "attaching", "attached"
		op.object, op.prep = "disk "+path, "to"
		op.key = func(k KeyMap) key.Binding { return k.AttachDisk }
		op.do = func(ctx context.Context, b Backend, name string) error { return b.AttachDisk(ctx, name, path) }
	case liveDetach:
		op.verb, op.ing, op.past = "detach", "detaching", "detached"
		op.object, op.prep = "disk "+path, "from"
		op.prompt = "detach disk " + strings.ReplaceAll(path, "%", "%%") + " from %s? (y/n)"
		op.key = func(k KeyMap) key.Binding { return k.DetachDisk }
		op.do = func(ctx context.Context, b Backend, name string) error { return b.DetachDisk(ctx, name, path) }
	}
	return op
}

// liveKey opens the form of a live change of the VM in the detail view,
// for a key that asks for one; handled says whether the key did.
func (m *Model) liveKey(msg tea.KeyMsg) (cmd tea.Cmd, handled bool) {
	k := m.keys
	var kind liveKind
	switch {
	case m.screen != screenDetail || m.detail == nil:
		return nil, false
	case key.Matches(msg, k.SetMemory):
		kind = liveMemory
	case key.Matches(msg, k.AttachDisk):
		kind = liveAttach
	case key.Matches(msg, k.DetachDisk):
		kind = liveDetach
	default:
		return nil, false
	}
	d := m.detail
	st, _ := m.vms.get(d.name)
	if err := whenRunning(st); err != nil {
		what := [...]string{liveMemory: "set memory of", liveAttach: "attach disk to", liveDetach: "detach disk from"}[kind]
		m.setStatus(true, "%s vm %s: %v; start it with s", what, st.Name, err)
		return nil, true
	}
	switch kind {
	case liveMemory:
		f := &form{title: "Memory of " + st.DisplayName(), fields: []field{
			newField("memory", units.FormatSize(st.MaxMem), "the guest's memory: between its memory and max_memory, in 2M blocks", func(v string) error {
				if v == "" {
					return errors.New("a size is needed")
				}
				_, err := config.ParseMemory(v)
				return err
			}),
		}}
		f.focusOn(0)
		d.live = &liveForm{kind: kind, form: f}
	case liveAttach:
		f := &form{title: "Attach a disk to " + st.DisplayName() + " (until it stops)", fields: []field{
			newField("disk", "disk.qcow2", "a qcow2, raw or qcow image no other vm uses", func(v string) error {
				if v == "" {
					return errors.New("a path is needed")
				}
				return nil
			}),
		}}
		f.focusOn(0)
		d.live = &liveForm{kind: kind, form: f}
	case liveDetach:
		switch len(st.Attached) {
		case 0:
			m.setStatus(true, "detach disk from vm %s: no disk is attached to it (a attaches one)", st.Name)
		case 1:
			m.askLive(liveOp(liveDetach, 0, st.Attached[0]), st.Name)
		default:
			d.live = &liveForm{kind: kind, choices: append([]string(nil), st.Attached...)}
		}
	}
	return nil, true
}

// askLive asks y/n for op on VM name.
func (m *Model) askLive(op *operation, name string) {
	m.confirm = newConfirm(m.common, op, name)
	m.confirm.SetSize(m.width, m.height)
}

// updateLive passes a key to the live form of the detail view.
func (m Model) updateLive(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	d := m.detail
	lf := d.live
	if lf.kind == liveDetach {
		k := m.keys
		switch {
		case key.Matches(msg, k.Form.Cancel):
			d.live = nil
		case key.Matches(msg, k.Up):
			lf.cursor = max(lf.cursor-1, 0)
		case key.Matches(msg, k.Down):
			lf.cursor = min(lf.cursor+1, len(lf.choices)-1)
		case key.Matches(msg, k.Form.Enter):
			d.live = nil
			m.askLive(liveOp(liveDetach, 0, lf.choices[lf.cursor]), d.name)
		}
		return m, nil
	}
	res, cmd := lf.update(m.keys.Form, msg)
	switch res {
	case formCancel:
		d.live = nil
		return m, nil
	case formSubmit:
		d.live = nil
		if lf.kind == liveMemory {
			size, _ := config.ParseMemory(lf.value(0)) // checked by the form
			return m, m.run(liveOp(liveMemory, size, ""), d.name)
		}
		return m, m.run(liveOp(liveAttach, 0, absPath(m.cwd, lf.value(0))), d.name)
	}
	return m, cmd
}

// view draws the live form in width columns.
func (lf *liveForm) view(s *Styles, width int) []string {
	if lf.kind != liveDetach {
		return strings.Split(strings.TrimRight(lf.form.view(s, width, ""), "\n"), "\n")
	}
	out := []string{s.Title.Render("Detach which disk?")}
	for i, c := range lf.choices {
		mark := "  "
		if i == lf.cursor {
			mark = "› "
			c = s.Focused.Render(c)
		}
		out = append(out, mark+c)
	}
	return out
}

// liveHelp is the keys of the live form.
func (lf *liveForm) liveHelp(k *KeyMap) []key.Binding {
	if lf.kind == liveDetach {
		return []key.Binding{k.Up, k.Down, key.NewBinding(key.WithKeys(k.Form.Enter.Keys()...), key.WithHelp(k.Form.Enter.Help().Key, "detach")), k.Form.Cancel}
	}
	return []key.Binding{k.Form.Enter, k.Form.Cancel}
}

// trimCause drops the "what: " a vm error starts with when the status line
// says it already: prefix, and what follows it up to the first ": " ("set
// memory of vm web to 512M: ...").
func trimCause(err error, prefix string) error {
	if err == nil {
		return nil
	}
	if rest, ok := strings.CutPrefix(err.Error(), prefix); ok {
		if _, cause, ok := strings.Cut(rest, ": "); ok {
			return &causeError{msg: cause, err: err}
		}
	}
	return err
}

// causeError is an error shown without its prefix.
type causeError struct {
	msg string
	err error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.err }

func (b *managerBackend) SetMemory(ctx context.Context, name string, size int64) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	_, err = b.m.SetMemory(ctx, def, size)
	return trimCause(err, "set memory of vm "+name)
}

func (b *managerBackend) AttachDisk(ctx context.Context, name, path string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	_, err = b.m.AttachDisk(ctx, def, path)
	return trimCause(err, fmt.Sprintf("attach %q to vm %s", path, name))
}

func (b *managerBackend) DetachDisk(ctx context.Context, name, path string) error {
	def, err := b.lookup(name)
	if err != nil {
		return err
	}
	_, err = b.m.DetachDisk(ctx, def, path)
	return trimCause(err, fmt.Sprintf("detach %q from vm %s", path, name))
}
