// Package ui is vmtui's full-screen terminal interface, a bubbletea
// program: a live table of the VMs with keys to start, stop, pause and
// attach to them, a detail view, and forms to define VMs and make disks.
//
// All I/O (the VM list, QMP, /proc, disks) happens in tea.Cmds through a
// [Backend]; Update and View only compute. Quitting leaves every VM running.
package ui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/spinner"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

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
	}
	return fmt.Sprintf("screen(%d)", int(s))
}

// mode is how the table screen takes keys.
type mode int

const (
	modeNormal  mode = iota
	modeFilter       // typing a filter
	modeConfirm      // waiting for y or n
)

func (m mode) String() string {
	switch m {
	case modeNormal:
		return "normal"
	case modeFilter:
		return "filter"
	case modeConfirm:
		return "confirm"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// sortOrder is the order of the table's rows.
type sortOrder int

const (
	sortByID sortOrder = iota
	sortByName
	sortByState
	sortByMemory
	numSortOrders
)

func (o sortOrder) String() string {
	switch o {
	case sortByID:
		return "id"
	case sortByName:
		return "name"
	case sortByState:
		return "state"
	case sortByMemory:
		return "memory"
	}
	return fmt.Sprintf("sortOrder(%d)", int(o))
}

// stateRank orders states for sortByState: running first.
var stateRank = map[vm.State]int{vm.StateStarting: 0, vm.StateRunning: 0, vm.StatePaused: 1, vm.StateStopping: 2, vm.StateBroken: 3, vm.StateStopped: 4}

// compare orders a and b; ties go by ID.
func (o sortOrder) compare(a, b vm.Status) int {
	var c int
	switch o {
	case sortByName:
		c = strings.Compare(a.Name, b.Name)
	case sortByState:
		c = cmp.Compare(stateRank[a.State], stateRank[b.State])
	case sortByMemory:
		c = cmp.Compare(b.CurMem, a.CurMem)
	}
	return cmp.Or(c, cmp.Compare(a.ID, b.ID))
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

// DefaultRefresh is how often the VM list is refreshed.
const DefaultRefresh = time.Second

// quietRefreshes is how many refreshes in a row (10 s) may change nothing, with
// no input, before the interval doubles (an idle TUI then costs half as
// much); a key press or a change brings it back.
const quietRefreshes = 10

// historyLen is how many refreshes the CPU and memory charts keep (three
// minutes at one a second).
const historyLen = 180

// Options configure a Model.
type Options struct {
	// Backend is where the VMs come from; required.
	Backend Backend
	// Refresh is the interval between refreshes; 0 means DefaultRefresh.
	Refresh time.Duration
	// Cwd resolves relative paths typed in forms; "" means "/".
	Cwd string
	// Editor is the command that edits a definition file (split on
	// spaces); blank means vi.
	Editor string
	// SampleCPU reads the CPU time of a process in clock ticks; nil
	// means no CPU history (tests). Run sets it to read /proc.
	SampleCPU func(pid int) (uint64, bool)
	// Keys and Styles; zero values mean the defaults.
	Keys   *KeyMap
	Styles *Styles
}

// history is the recent CPU and memory use of a running VM.
type history struct {
	pid  int
	last cpuSample
	cpu  []float64 // percent of one core
	mem  []float64 // bytes
}

// confirmation is a question waiting for y or n, and what y does.
type confirmation struct {
	prompt string
	name   string
	verb   string
}

// Model is the TUI.
type Model struct {
	opts   Options
	b      Backend
	keys   KeyMap
	styles Styles
	help   help.Model
	spin   spinner.Model
	filter textinput.Model

	screen screen
	mode   mode
	width  int
	height int

	all      []vm.Status // the last list, by ID
	rows     []vm.Status // all, filtered
	loaded   bool
	listErr  error
	cursor   int
	offset   int
	selected string // the name under the cursor, kept across refreshes and sorts
	order    sortOrder

	refreshing bool
	refreshNow bool // refresh again as soon as the running one ends
	tickGen    int
	// quiet counts the refreshes in a row that changed nothing on the
	// table with no key pressed: past quietRefreshes, refreshes slow down.
	quiet int

	status    string
	statusErr bool
	busy      map[string]string // VM name → operation under way
	confirm   *confirmation

	history map[string]*history
	detail  *detailMsg

	vmForm   *vmForm
	diskForm *diskForm
}

// New returns the TUI model for opts.
func New(opts Options) Model {
	if opts.Refresh == 0 {
		opts.Refresh = DefaultRefresh
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
	f := textinput.New()
	f.Prompt = "/"
	f.Placeholder = "name"
	f.CharLimit = 64
	staticCursor(&f)
	return Model{
		opts:    opts,
		b:       opts.Backend,
		keys:    keys,
		styles:  styles,
		help:    help.New(),
		spin:    spinner.New(spinner.WithSpinner(spinner.Dot)),
		filter:  f,
		width:   defaultWidth,
		height:  defaultHeight,
		busy:    make(map[string]string),
		history: make(map[string]*history),
		// Init's list is under way.
		refreshing: true,
	}
}

// Init starts the first refresh.
func (m Model) Init() tea.Cmd {
	return listCmd(m.b, m.opts.SampleCPU)
}

// Run runs the TUI on the terminal until the user quits.
func Run(ctx context.Context, b Backend) error {
	cwd, _ := os.Getwd()
	editor := strings.Join(editorCommand(os.Getenv("VISUAL"), os.Getenv("EDITOR")), " ")
	m := New(Options{Backend: b, Cwd: cwd, Editor: editor, SampleCPU: procCPUTicks})
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

// current returns the VM under the cursor.
func (m *Model) current() (vm.Status, bool) {
	if m.cursor < 0 || m.cursor >= len(m.rows) {
		return vm.Status{}, false
	}
	return m.rows[m.cursor], true
}

// Update handles a message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.Width = msg.Width
		m.clampOffset()
		return m, nil
	case tickMsg:
		if msg.gen != m.tickGen || m.refreshing {
			return m, nil
		}
		m.refreshing = true
		return m, listCmd(m.b, m.opts.SampleCPU)
	case listMsg:
		return m.applyList(msg)
	case spinner.TickMsg:
		if len(m.busy) == 0 {
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case opDoneMsg:
		delete(m.busy, msg.name)
		if msg.err != nil {
			m.setStatus(true, "%s %s: %v", msg.verb, msg.name, msg.err)
		} else {
			m.setStatus(false, "%s: %s", msg.name, pastTense(msg.verb))
		}
		if msg.verb == "remove" && msg.err == nil && m.screen == screenDetail {
			m.screen = screenTable
		}
		return m, m.refresh()
	case consoleDoneMsg:
		if msg.err != nil {
			m.setStatus(true, "console %s: %v", msg.name, msg.err)
		} else {
			m.setStatus(false, "detached from the console of %s", msg.name)
		}
		return m, m.refresh()
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
	case detailMsg:
		if m.screen == screenDetail && m.selected == msg.name {
			m.detail = &msg
		}
		return m, nil
	case createdMsg, diskDoneMsg, progressMsg:
		return m.updateForms(msg)
	case tea.MouseMsg:
		m.quiet = 0
		return m.updateMouse(msg)
	case tea.KeyMsg:
		m.quiet = 0
		return m.updateKey(msg)
	}
	if m.screen == screenNewVM || m.screen == screenDisk {
		return m.updateForms(msg)
	}
	return m, nil
}

// refresh asks for a refresh now.
func (m *Model) refresh() tea.Cmd {
	if m.refreshing {
		m.refreshNow = true
		return nil
	}
	m.refreshing = true
	return listCmd(m.b, m.opts.SampleCPU)
}

// applyList takes a refreshed list, keeps the cursor on the same VM and
// schedules the next refresh.
func (m Model) applyList(msg listMsg) (tea.Model, tea.Cmd) {
	m.refreshing = false
	m.tickGen++
	var cmds []tea.Cmd
	if m.refreshNow {
		m.refreshNow = false
		m.refreshing = true
		cmds = append(cmds, listCmd(m.b, m.opts.SampleCPU))
	}
	if msg.err == nil && sameRows(m.all, msg.list) {
		m.quiet++
	} else {
		m.quiet = 0
	}
	if !m.refreshing {
		cmds = append(cmds, tickCmd(m.interval(), m.tickGen))
	}
	m.listErr = msg.err
	if msg.err == nil {
		m.all = msg.list
		m.loaded = true
		m.record(msg)
	}
	m.applyFilter()
	if m.screen == screenDetail && m.selected != "" {
		cmds = append(cmds, detailCmd(m.b, m.selected))
	}
	return m, tea.Batch(cmds...)
}

// interval is the time to the next refresh.
func (m *Model) interval() time.Duration {
	if m.quiet >= quietRefreshes {
		return 2 * m.opts.Refresh
	}
	return m.opts.Refresh
}

// sameRows reports whether two lists draw the same table.
func sameRows(a, b []vm.Status) bool {
	if len(a) != len(b) {
		return false
	}
	cols := columns
	for i := range a {
		la, sa, na := rowCells(a[i], cols)
		lb, sb, nb := rowCells(b[i], cols)
		if la != lb || sa != sb || na != nb || a[i].Err != b[i].Err {
			return false
		}
	}
	return true
}

// record adds a refresh to the CPU and memory history.
func (m *Model) record(msg listMsg) {
	seen := make(map[string]bool, len(msg.list))
	for _, st := range msg.list {
		seen[st.Name] = true
		if st.PID == 0 {
			continue
		}
		h := m.history[st.Name]
		if h == nil || h.pid != st.PID {
			h = &history{pid: st.PID}
			m.history[st.Name] = h
		}
		h.mem = appendCapped(h.mem, float64(st.CurMem))
		s, ok := msg.samples[st.Name]
		if !ok || s.pid != st.PID {
			continue
		}
		if !h.last.at.IsZero() {
			if dt := s.at.Sub(h.last.at).Seconds(); dt > 0 && s.ticks >= h.last.ticks {
				// Clock ticks are USER_HZ, 100 a second on Linux.
				h.cpu = appendCapped(h.cpu, float64(s.ticks-h.last.ticks)/100/dt*100)
			}
		}
		h.last = s
	}
	for name := range m.history {
		if !seen[name] {
			delete(m.history, name)
		}
	}
}

func appendCapped(s []float64, v float64) []float64 {
	s = append(s, v)
	if len(s) > historyLen {
		s = s[len(s)-historyLen:]
	}
	return s
}

// applyFilter recomputes the visible rows and puts the cursor back on the
// selected VM (or the nearest row when it is gone).
func (m *Model) applyFilter() {
	q := strings.ToLower(strings.TrimSpace(m.filter.Value()))
	m.rows = m.rows[:0:0]
	for _, st := range m.all {
		if q == "" || strings.Contains(strings.ToLower(st.Name), q) {
			m.rows = append(m.rows, st)
		}
	}
	if m.order != sortByID {
		slices.SortStableFunc(m.rows, m.order.compare)
	}
	found := false
	for i, st := range m.rows {
		if st.Name == m.selected {
			m.cursor, found = i, true
			break
		}
	}
	if !found {
		m.cursor = min(max(m.cursor, 0), max(len(m.rows)-1, 0))
		if st, ok := m.current(); ok {
			m.selected = st.Name
		} else {
			m.selected = ""
		}
	}
	m.clampOffset()
}

// moveTo puts the cursor on row i.
func (m *Model) moveTo(i int) {
	if len(m.rows) == 0 {
		return
	}
	m.cursor = min(max(i, 0), len(m.rows)-1)
	m.selected = m.rows[m.cursor].Name
	m.clampOffset()
}

// clampOffset scrolls the table so that the cursor is visible.
func (m *Model) clampOffset() {
	h := m.tableHeight()
	if m.cursor < m.offset {
		m.offset = m.cursor
	}
	if m.cursor >= m.offset+h {
		m.offset = m.cursor - h + 1
	}
	m.offset = max(0, min(m.offset, len(m.rows)-h))
}
