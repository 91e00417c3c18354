package console

import (
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

var _ tea.ExecCommand = (*Cmd)(nil)

// execModel attaches at start through tea.Exec, then records what happens
// after: the end of the session and the keys bubbletea reads afterwards.
type execModel struct {
	cmd    *Cmd
	events chan string
}

// attachDoneMsg reports the end of the console session.
type attachDoneMsg struct{ err error }

func (m *execModel) Init() tea.Cmd {
	return tea.Exec(m.cmd, func(err error) tea.Msg { return attachDoneMsg{err} })
}

func (m *execModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case attachDoneMsg:
		if msg.err != nil {
			m.events <- "error: " + msg.err.Error()
		} else {
			m.events <- "detached"
		}
	case tea.KeyMsg:
		m.events <- "key " + msg.String()
		if msg.String() == "q" {
			return m, tea.Quit
		}
	}
	return m, nil
}

func (m *execModel) View() string { return "the table\n" }

// TestExecFromBubbletea attaches from a bubbletea program with tea.Exec,
// detaches with ~., and checks that the program gets the terminal back:
// the next key goes to bubbletea, not to the guest, and the terminal modes
// are those from before the program.
func TestExecFromBubbletea(t *testing.T) {
	vm, u, dir := newFakeVM(t), newUserTerm(t), t.TempDir()
	before := termios(t, u.slave)
	opts := userOpts(vm, u, dir)
	opts.Stdin, opts.Stdout, opts.Stderr = nil, nil, nil // tea.Exec sets them
	m := &execModel{cmd: Command(opts), events: make(chan string, 10)}
	p := tea.NewProgram(m, tea.WithInput(u.slave), tea.WithOutput(u.slave))
	done := make(chan error, 1)
	go func() { _, err := p.Run(); done <- err }()

	waitFor(t, "the console greeting", func() bool { return strings.Contains(u.screen.String(), "Connected to "+vm.tty) }, u.screen.String)
	vm.master.Write([]byte("guest says hi\r\n"))
	waitFor(t, "guest output", func() bool { return strings.Contains(u.screen.String(), "guest says hi") })
	u.master.Write([]byte("ls\r"))
	waitFor(t, "typed line at the guest", func() bool { return vm.got.String() == "ls\r" }, vm.got.String)
	u.master.Write([]byte("~."))
	next := func() string {
		select {
		case e := <-m.events:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("no event from the program")
			return ""
		}
	}
	if e := next(); e != "detached" {
		t.Fatalf("after ~.: %q, want detached", e)
	}
	u.master.Write([]byte("q"))
	if e := next(); e != "key q" {
		t.Errorf("key after detaching: %q, want key q", e)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("program: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("program did not quit")
	}
	if got := vm.got.String(); got != "ls\r" {
		t.Errorf("guest received %q, want only %q", got, "ls\r")
	}
	if after := termios(t, u.slave); after != before {
		t.Errorf("terminal not restored:\n got  %+v\n want %+v", after, before)
	}
}
