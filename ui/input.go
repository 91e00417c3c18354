package ui

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/vm"
)

// Keys and the mouse: what each does on each screen, the confirmations,
// and the operations they start.

func (m Model) updateMouse(msg tea.MouseMsg) (tea.Model, tea.Cmd) {
	if m.screen != screenTable || m.mode != modeNormal {
		return m, nil
	}
	switch {
	case msg.Button == tea.MouseButtonWheelUp:
		m.moveTo(m.cursor - 1)
	case msg.Button == tea.MouseButtonWheelDown:
		m.moveTo(m.cursor + 1)
	case msg.Button == tea.MouseButtonLeft && msg.Action == tea.MouseActionPress:
		row := msg.Y - tableTop + m.offset
		if msg.Y >= tableTop && msg.Y < tableTop+m.tableHeight() && row < len(m.rows) {
			m.moveTo(row)
		}
	}
	return m, nil
}

func (m Model) updateKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch m.screen {
	case screenNewVM, screenDisk:
		return m.updateForms(msg)
	case screenHelp:
		if key.Matches(msg, m.keys.Help, m.keys.Back, m.keys.Quit) {
			m.screen = screenTable
		}
		return m, nil
	}
	switch m.mode {
	case modeFilter:
		switch msg.Type {
		case tea.KeyEnter:
			m.mode = modeNormal
			m.filter.Blur()
			return m, nil
		case tea.KeyEsc:
			m.mode = modeNormal
			m.filter.Blur()
			m.filter.SetValue("")
			m.applyFilter()
			return m, nil
		}
		var cmd tea.Cmd
		m.filter, cmd = m.filter.Update(msg)
		m.applyFilter()
		return m, cmd
	case modeConfirm:
		c := m.confirm
		switch {
		case key.Matches(msg, m.keys.Yes):
			m.mode, m.confirm = modeNormal, nil
			return m, m.run(c.verb, c.name)
		case key.Matches(msg, m.keys.No), key.Matches(msg, m.keys.Quit):
			m.mode, m.confirm = modeNormal, nil
			m.setStatus(false, "%s %s: cancelled", c.verb, c.name)
		}
		return m, nil
	}

	k := m.keys
	switch {
	case key.Matches(msg, k.Quit):
		return m, tea.Quit
	case key.Matches(msg, k.Back):
		if m.screen == screenDetail {
			m.screen, m.detail = screenTable, nil
		} else if m.filter.Value() != "" {
			m.filter.SetValue("")
			m.applyFilter()
		}
		return m, nil
	case key.Matches(msg, k.Help):
		m.screen = screenHelp
		return m, nil
	case key.Matches(msg, k.New):
		m.vmForm = newVMForm(m.opts.Cwd)
		m.screen = screenNewVM
		return m, nil
	case key.Matches(msg, k.Disks):
		m.diskForm = newDiskForm(m.opts.Cwd)
		m.screen = screenDisk
		return m, nil
	}
	if m.screen == screenTable {
		switch {
		case key.Matches(msg, k.Up):
			m.moveTo(m.cursor - 1)
			return m, nil
		case key.Matches(msg, k.Down):
			m.moveTo(m.cursor + 1)
			return m, nil
		case key.Matches(msg, k.Top):
			m.moveTo(0)
			return m, nil
		case key.Matches(msg, k.Bottom):
			m.moveTo(len(m.rows) - 1)
			return m, nil
		case key.Matches(msg, k.Filter):
			m.mode = modeFilter
			return m, m.filter.Focus()
		case key.Matches(msg, k.Sort):
			m.order = (m.order + 1) % numSortOrders
			m.applyFilter()
			m.setStatus(false, "sorted by %s", m.order)
			return m, nil
		}
	}
	st, ok := m.current()
	if !ok {
		return m, nil
	}
	switch {
	case key.Matches(msg, k.Detail):
		if m.screen == screenDetail {
			m.screen, m.detail = screenTable, nil
			return m, nil
		}
		m.screen, m.detail = screenDetail, nil
		return m, detailCmd(m.b, st.Name)
	case key.Matches(msg, k.Start):
		if st.Running() {
			m.setStatus(true, "start %s: vm is already running", st.Name)
			return m, nil
		}
		return m, m.run("start", st.Name)
	case key.Matches(msg, k.Stop), key.Matches(msg, k.ForceStop):
		verb := "stop"
		if key.Matches(msg, k.ForceStop) {
			verb = "force stop"
		}
		if !st.Running() {
			m.setStatus(true, "%s %s: vm is not running", verb, st.Name)
			return m, nil
		}
		m.ask(verb, st.Name)
		return m, nil
	case key.Matches(msg, k.Pause):
		switch st.State {
		case vm.StatePaused:
			return m, m.run("unpause", st.Name)
		case vm.StateRunning:
			return m, m.run("pause", st.Name)
		}
		m.setStatus(true, "pause %s: vm is %s", st.Name, st.State)
		return m, nil
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
	case key.Matches(msg, k.Remove):
		if st.Running() {
			m.setStatus(true, "remove %s: vm is running; stop it first", st.Name)
			return m, nil
		}
		m.ask("remove", st.Name)
		return m, nil
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

// ask asks to confirm verb on VM name.
func (m *Model) ask(verb, name string) {
	prompt := fmt.Sprintf("%s %s? (y/n)", verb, name)
	switch verb {
	case "stop":
		prompt = fmt.Sprintf("stop %s (power down)? (y/n)", name)
	case "force stop":
		prompt = fmt.Sprintf("force stop %s (kill QEMU)? (y/n)", name)
	case "remove":
		prompt = fmt.Sprintf("remove the definition of %s (disks are kept)? (y/n)", name)
	}
	m.mode = modeConfirm
	m.confirm = &confirmation{prompt: printable(prompt), name: name, verb: verb}
}

// run starts operation verb on VM name, with the spinner.
func (m *Model) run(verb, name string) tea.Cmd {
	if op, ok := m.busy[name]; ok {
		m.setStatus(true, "%s %s: %s is still under way", verb, name, op)
		return nil
	}
	first := len(m.busy) == 0
	m.busy[name] = verb
	m.setStatus(false, "%s: %s…", name, progressive(verb))
	cmd := opCmd(m.b, verb, name)
	if first {
		return tea.Batch(cmd, m.spin.Tick)
	}
	return cmd
}

// progressive is verb's "-ing" form for the status line.
func progressive(verb string) string {
	switch verb {
	case "start":
		return "starting"
	case "stop":
		return "stopping"
	case "force stop":
		return "force stopping"
	case "pause":
		return "pausing"
	case "unpause":
		return "unpausing"
	case "remove":
		return "removing"
	}
	return verb
}

// pastTense is what the status line says when verb succeeded.
func pastTense(verb string) string {
	switch verb {
	case "start":
		return "started"
	case "stop":
		return "stopped"
	case "force stop":
		return "stopped (forced)"
	case "pause":
		return "paused"
	case "unpause":
		return "unpaused"
	case "remove":
		return "definition removed (disks kept)"
	}
	return verb + " done"
}

// oneLine joins a multi-line error into one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
