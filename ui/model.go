// Package ui is vmtui's full-screen terminal interface, a bubbletea
// program: a live table of the VMs with keys to start, stop, pause and
// attach to them, a detail view, and forms to define VMs and make disks.
//
// Each screen is a component (table, detail, help, the new-VM and disk
// forms, the confirmation in the status line) with its own Update, View,
// size and keys; the Model routes messages to them and keeps the picture of
// the VMs they share. That picture follows QEMU's events (a vm.Watcher):
// a VM is read again when an event names it, its CPU and memory come from
// /proc alone, and the whole list is read only now and then.
//
// All I/O (the VM list, QMP, /proc, disks) happens in tea.Cmds through a
// [Backend]; Update and View only compute. Quitting leaves every VM running.
package ui

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/vmtui/vmtui/vm"
)

// screen is what the TUI shows.
type screen int

const (
	screenTable screen = iota
	screenDetail
	screenHelp
	screenNewVM
	screenDisk
	screenSnapshots
)

func (s screen) String() string {
	switch s {
	case screenTable:
		return "table"
	case screenDetail:
		return "detail"
	case screenHelp:
		return "help"
	case screenNewVM:
		return "new vm"
	case screenDisk:
		return "disk"
	case screenSnapshots:
		return "snapshots"
	}
	return fmt.Sprintf("screen(%d)", int(s))
}

// Default sizes, before the terminal reports its own.
const (
	defaultWidth  = 80
	defaultHeight = 24
)

// renderFPS is how often bubbletea may redraw. Each frame costs a wake-up
// even when nothing changed: at bubbletea's default of 60 an idle TUI used
// 0.7% of a core with no VM at all, at 30 about half that; a key still
// shows within a frame (33 ms).
const renderFPS = 30

// Options configure a Model.
type Options struct {
	// Backend is where the VMs come from; required.
	Backend Backend
	// Refresh is the interval between /proc samples of the running VMs
	// (and, without a Watcher, full lists); 0 means DefaultRefresh.
	Refresh time.Duration
	// FullRefresh is the interval between full lists of the VMs when a
	// Watcher follows them; 0 means DefaultFullRefresh.
	FullRefresh time.Duration
	// Cwd resolves relative paths typed in forms; "" means "/".
	Cwd string
	// Editor is the command that edits a definition file (split on
	// spaces); blank means vi.
	Editor string
	// Keys and Styles; zero values mean the defaults.
	Keys   *KeyMap
	Styles *Styles
}

// Model is the TUI: the screens, the status line, and the picture of the
// VMs they share.
type Model struct {
	common
	opts   Options
	help   help.Model
	width  int
	height int
	screen screen

	table      *tableModel
	detail     *detailModel  // on screenDetail
	helpScreen *helpModel    // on screenHelp
	newVM      *newVMModel   // on screenNewVM
	disk       *diskModel    // on screenDisk
	confirm    *confirmModel // a question in the status line, or nil
	// snapshots is the snapshot screen, on screenSnapshots.
	snapshots *snapshotModel

	status    string
	statusErr bool

	refresher
}

// New returns the TUI model for opts.
func New(opts Options) Model {
	if opts.Refresh == 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.FullRefresh == 0 {
		opts.FullRefresh = DefaultFullRefresh
	}
	if opts.Cwd == "" {
		opts.Cwd = "/"
	}
	if opts.Editor == "" {
		opts.Editor = "vi"
	}
	keys := DefaultKeyMap()
	if opts.Keys != nil {
		keys = *opts.Keys
	}
	styles := DefaultStyles()
	if opts.Styles != nil {
		styles = *opts.Styles
	}
	c := common{b: opts.Backend, keys: &keys, styles: &styles, cwd: opts.Cwd, vms: newFleet()}
	m := Model{
		common:     c,
		opts:       opts,
		help:       help.New(),
		table:      newTable(c),
		helpScreen: newHelp(c),
		refresher:  newRefresher(opts.Backend.Watcher()),
	}
	m.setSize(defaultWidth, defaultHeight)
	// Init's list is under way.
	m.refreshing = true
	return m
}

// Init reads the list, starts the ticks and follows the events.
func (m Model) Init() tea.Cmd {
	cmds := []tea.Cmd{listCmd(m.b, m.watcher), tickCmd(m.opts.Refresh, m.tickGen)}
	if m.watcher != nil {
		cmds = append(cmds, waitWatch(m.watcher))
	}
	return tea.Batch(cmds...)
}

// Run runs the TUI on the terminal until the user quits.
func Run(ctx context.Context, b Backend) error {
	cwd, _ := os.Getwd()
	editor := strings.Join(editorCommand(os.Getenv("VISUAL"), os.Getenv("EDITOR")), " ")
	m := New(Options{Backend: b, Cwd: cwd, Editor: editor})
	if w := b.Watcher(); w != nil {
		defer w.Close()
	}
	// Decided here, never by asking the terminal: lipgloss would write
	// ESC]11;? and wait up to 5 s for an answer that some terminals never
	// give, and a late answer would reach the program as keystrokes.
	lipgloss.SetHasDarkBackground(darkBackground(os.Getenv("COLORFGBG")))
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithMouseCellMotion(), tea.WithContext(ctx), tea.WithFPS(renderFPS))
	_, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// setStatus puts a message in the status line. Control characters (of a
// hostile definition file's name, say) are shown escaped, never sent to the
// terminal.
func (m *Model) setStatus(isErr bool, format string, args ...any) {
	m.status = printable(fmt.Sprintf(format, args...))
	m.statusErr = isErr
}

// printable returns s with its control characters escaped as Go escapes
// them ("\x1b", "\n").
func printable(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// current returns the VM under the table's cursor.
func (m *Model) current() (vm.Status, bool) { return m.table.current() }

// setSize gives every screen its size.
func (m *Model) setSize(width, height int) {
	m.width, m.height = width, height
	m.help.Width = width
	// The title above the table, the status line and help bar below.
	m.table.SetSize(width, height-3)
	if m.detail != nil {
		m.detail.SetSize(width, height)
	}
	if m.newVM != nil {
		m.newVM.SetSize(width, height)
	}
	if m.disk != nil {
		m.disk.SetSize(width, height)
	}
	if m.snapshots != nil {
		m.snapshots.SetSize(width, height)
	}
	if m.confirm != nil {
		m.confirm.SetSize(width, height)
	}
	m.helpScreen.SetSize(width, height)
}

// show opens screen s (its component c already made), sized.
func (m *Model) show(s screen, c component) {
	m.screen = s
	c.SetSize(m.width, m.height)
}

// back returns to the table, dropping the screen that was shown.
func (m *Model) back() {
	m.screen = screenTable
	m.detail, m.newVM, m.disk, m.snapshots = nil, nil, nil, nil
}

// active is the component shown, other than the table.
func (m *Model) active() component {
	switch {
	case m.screen == screenNewVM && m.newVM != nil:
		return m.newVM
	case m.screen == screenDisk && m.disk != nil:
		return m.disk
	case m.screen == screenDetail && m.detail != nil:
		return m.detail
	case m.screen == screenSnapshots && m.snapshots != nil:
		return m.snapshots
	}
	return nil
}

// Update handles a message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.setSize(msg.Width, msg.Height)
		return m, nil
	case tickMsg:
		return m, m.onTick(msg)
	case listMsg:
		return m, m.applyList(msg)
	case statusMsg:
		return m, m.applyStatus(msg)
	case sampleMsg:
		return m, m.applySample(msg)
	case watchMsg:
		return m, m.applyWatch(msg)
	case spinner.TickMsg:
		if len(m.vms.busy) == 0 {
			return m, nil
		}
		var cmd tea.Cmd
		m.vms.spin, cmd = m.vms.spin.Update(msg)
		return m, cmd
	case opDoneMsg:
		delete(m.vms.busy, msg.name)
		if msg.err != nil {
			m.setStatus(true, "%s", msg.op.failed(msg.name, msg.err))
		} else {
			m.setStatus(false, "%s", msg.op.done(msg.name))
		}
		if msg.op.gone && msg.err == nil && m.screen == screenDetail {
			m.back()
		}
		if m.snapshots != nil && m.snapshots.name == msg.name {
			return m, tea.Batch(m.inspect(msg.name), m.snapshots.load())
		}
		return m, m.inspect(msg.name)
	case consoleDoneMsg:
		if msg.err != nil {
			m.setStatus(true, "console %s: %v", msg.name, msg.err)
		} else {
			m.setStatus(false, "detached from the console of %s", msg.name)
		}
		return m, m.inspect(msg.name)
	case editedMsg:
		if msg.err != nil {
			m.setStatus(true, "edit %s: %v", msg.name, msg.err)
			return m, nil
		}
		return m, checkCmd(m.b, msg.name)
	case checkedMsg:
		if msg.err != nil {
			m.setStatus(true, "%s: the definition is not valid: %v", msg.name, oneLine(msg.err))
		} else {
			m.setStatus(false, "%s: definition saved and valid", msg.name)
		}
		return m, m.refresh()
	case snapshotsMsg:
		if m.snapshots != nil {
			return m, m.snapshots.Update(msg)
		}
		return m, nil
	case detailMsg:
		if m.detail != nil {
			return m, m.detail.Update(msg)
		}
		return m, nil
	case createdMsg:
		if m.newVM == nil || !m.newVM.created(msg) {
			return m, nil
		}
		m.back()
		m.table.selected = msg.def.Name
		m.setStatus(false, "defined vm %s (id %d): press s to start it", msg.def.Name, msg.def.ID)
		return m, m.refresh()
	case diskDoneMsg:
		if m.disk == nil || !m.disk.finish(msg) {
			return m, nil
		}
		m.back()
		m.setStatus(false, "%s %s", msg.verb, msg.path)
		return m, nil
	case progressMsg:
		if m.disk != nil {
			return m, m.disk.Update(msg)
		}
		return m, nil
	case closeMsg:
		if m.screen == screenNewVM || m.screen == screenDisk {
			m.back()
		}
		return m, nil
	case noticeMsg:
		m.setStatus(msg.isErr, "%s", msg.text)
		return m, nil
	case tea.MouseMsg:
		m.quiet = 0
		if m.screen == screenTable && m.confirm == nil && !m.table.filtering {
			return m, m.table.Update(msg)
		}
		return m, nil
	case tea.KeyMsg:
		m.quiet = 0
		return m.updateKey(msg)
	}
	if c := m.active(); c != nil {
		return m, c.Update(msg)
	}
	return m, nil
}

// View draws the screen shown.
func (m Model) View() string {
	switch m.screen {
	case screenHelp:
		return m.helpScreen.View()
	case screenSnapshots:
		if m.snapshots != nil {
			return m.snapshotsView()
		}
	case screenDetail, screenNewVM, screenDisk:
		if c := m.active(); c != nil {
			return c.View()
		}
	}
	var b strings.Builder
	b.WriteString(m.line(m.titleLine()))
	b.WriteByte('\n')
	b.WriteString(m.table.View())
	b.WriteByte('\n')
	b.WriteString(m.footer(m.table, m.help))
	return b.String()
}

// footer is how the table and the snapshot screen end: the status line,
// then keys (the question's, when one is asked) as h shows them.
func (m Model) footer(keys help.KeyMap, h help.Model) string {
	if m.confirm != nil {
		keys = m.confirm
	}
	return m.line(m.statusLine()) + "\n" + m.line(h.ShortHelpView(keys.ShortHelp()))
}

// line cuts s to the width of the screen.
func (m Model) line(s string) string {
	return ansi.Truncate(s, m.width, "")
}

// titleLine is the first line: counts, the filter and the spinner.
func (m Model) titleLine() string {
	counts := map[vm.State]int{}
	for _, s := range m.vms.all {
		counts[s.State]++
	}
	var parts []string
	for _, st := range []vm.State{vm.StateStarting, vm.StateRunning, vm.StatePaused, vm.StateStopping, vm.StateSaved, vm.StateStopped, vm.StateBroken} {
		if n := counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	title := m.styles.Title.Render("vmtui")
	text := fmt.Sprintf("%s  %d vms", title, len(m.vms.all))
	if len(parts) > 0 {
		text += ": " + strings.Join(parts, ", ")
	}
	text += m.table.filterNote()
	if busy := m.vms.busyText(); busy != "" {
		text += "  " + busy
	}
	return text
}

// statusLine is the line above the help bar: the filter being typed, a
// question, or the last result.
func (m Model) statusLine() string {
	switch {
	case m.table.filtering:
		return m.table.filter.View()
	case m.confirm != nil:
		return m.confirm.View()
	case m.vms.err != nil:
		return m.styles.Error.Render("list vms: " + oneLine(m.vms.err))
	case m.status == "":
		if st, ok := m.current(); ok && st.Err != "" {
			return m.styles.Error.Render(st.DisplayName() + ": " + st.Err)
		}
		return ""
	case m.statusErr:
		return m.styles.Error.Render(m.status)
	}
	return m.styles.Status.Render(m.status)
}

// clip cuts a whole screen to width×height.
func clip(s string, width, height int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > height {
		lines = lines[:max(height, 0)]
	}
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, width, "")
	}
	return strings.Join(lines, "\n")
}
