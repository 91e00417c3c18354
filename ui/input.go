package ui

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// Keys: the confirmation and the forms take them first; then the keys of
// every screen (quit, help, the forms); then the operations on the VM
// under the cursor, from the table of operations; the rest goes to the
// table.

func (m Model) updateKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	if c := m.confirm; c != nil {
		c.Update(msg)
		switch c.answer {
		case answerYes:
			m.confirm = nil
			return m, m.run(c.op, c.name)
		case answerNo:
			m.confirm = nil
			m.setStatus(false, "%s", c.op.failed(c.name, "cancelled"))
		}
		return m, nil
	}
	if m.screen == screenDetail && m.detail != nil && m.detail.live != nil {
		return m.updateLive(msg)
	}
	if cmd, ok := m.liveKey(msg); ok {
		return m, cmd
	}
	switch m.screen {
	case screenNewVM, screenDisk:
		if c := m.active(); c != nil {
			return m, c.Update(msg)
		}
	case screenSnapshots:
		if m.snapshots != nil {
			return m.updateSnapshots(msg)
		}
	case screenHelp:
		if key.Matches(msg, m.keys.Help, m.keys.Back, m.keys.Quit) {
			m.screen = screenTable
		}
		return m, nil
	case screenTable:
		if m.table.filtering {
			return m, m.table.Update(msg)
		}
	}

	k := m.keys
	switch {
	case key.Matches(msg, k.Quit):
		return m, tea.Quit
	case key.Matches(msg, k.Back) && m.screen == screenDetail:
		m.back()
		return m, nil
	case key.Matches(msg, k.Help):
		m.screen = screenHelp
		return m, nil
	case key.Matches(msg, k.New):
		m.newVM = newNewVM(m.common)
		m.show(screenNewVM, m.newVM)
		return m, nil
	case key.Matches(msg, k.Disks):
		m.disk = newDisk(m.common)
		m.show(screenDisk, m.disk)
		return m, nil
	}
	st, ok := m.current()
	if !ok {
		return m, m.table.Update(msg)
	}
	switch {
	case key.Matches(msg, k.Detail):
		if m.screen == screenDetail {
			m.back()
			return m, nil
		}
		m.detail = newDetail(m.common, st.Name)
		m.show(screenDetail, m.detail)
		return m, detailCmd(m.b, st.Name)
	case key.Matches(msg, k.Snapshots):
		name := st.Name
		if m.screen == screenDetail && m.detail != nil {
			name = m.detail.name
		}
		return m, m.openSnapshots(name)
	case key.Matches(msg, k.Console):
		if !st.Running() {
			m.setStatus(true, "console %s: vm is not running; start it with s", st.Name)
			return m, nil
		}
		if st.TTY == "" {
			m.setStatus(true, "console %s: vm has no serial console", st.Name)
			return m, nil
		}
		name := st.Name
		return m, tea.Exec(m.b.Console(st.Name, st.TTY), func(err error) tea.Msg {
			return consoleDoneMsg{name: name, err: err}
		})
	case key.Matches(msg, k.Edit):
		return m, editCmd(editorCommand(m.opts.Editor, ""), st.Name, m.b.DefinitionFile(st.Name))
	}
	if op, err := operationFor(*k, msg, st); op != nil {
		switch {
		case err != nil:
			m.setStatus(true, "%s %s: %v", op.verb, st.Name, err)
		case op.prompt != "":
			m.confirm = newConfirm(m.common, op, st.Name)
			m.confirm.SetSize(m.width, m.height)
		default:
			return m, m.run(op, st.Name)
		}
		return m, nil
	}
	if m.screen == screenTable {
		return m, m.table.Update(msg)
	}
	return m, nil
}

// editorCommand returns the command line of the editor of definition
// files: visual ($VISUAL), else editor ($EDITOR), else vi, each split on
// spaces. A blank variable (empty or only spaces) counts as unset.
func editorCommand(visual, editor string) []string {
	for _, v := range []string{visual, editor} {
		if args := strings.Fields(v); len(args) > 0 {
			return args
		}
	}
	return []string{"vi"}
}

// editCmd runs the editor args on file, the definition of VM name, in the
// terminal. An editor that cannot be found is reported (editedMsg) without
// giving the terminal away.
func editCmd(args []string, name, file string) tea.Cmd {
	return func() tea.Msg {
		path, err := exec.LookPath(args[0])
		if err != nil {
			var ee *exec.Error
			if errors.As(err, &ee) {
				err = ee.Err
			}
			return editedMsg{name: name, err: fmt.Errorf("editor %q: %w (set $VISUAL or $EDITOR)", args[0], err)}
		}
		cmd := exec.Command(path, append(args[1:], file)...)
		return tea.ExecProcess(cmd, func(err error) tea.Msg { return editedMsg{name: name, err: err} })()
	}
}

// run starts operation op on VM name, with the spinner.
func (m *Model) run(op *operation, name string) tea.Cmd {
	if cur, ok := m.vms.busy[name]; ok {
		m.setStatus(true, "%s", op.failed(name, strings.TrimSpace(cur.verb+" "+cur.object)+" is still under way"))
		return nil
	}
	first := len(m.vms.busy) == 0
	m.vms.busy[name] = op
	m.setStatus(false, "%s", op.doing(name))
	cmd := opCmd(m.b, op, name)
	if first {
		return tea.Batch(cmd, m.vms.spin.Tick)
	}
	return cmd
}

// oneLine joins a multi-line error into one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
