package ui

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/vmtui/vmtui/internal/units"
	"github.com/vmtui/vmtui/vm"
)

// The table screen's component: the header and the rows, the cursor, the
// filter and the order. The columns are exactly those of `vmtui --list`,
// with the same widths, after a two-column gutter for the cursor. The model
// draws the title above it and the status line and help bar below.

// tableTop is the screen line of the first row.
const tableTop = 2

// cursorMark marks the selected row, so that it shows without colour.
const cursorMark = "› "

// column is a column of the table, with vm.WriteTable's width.
type column struct {
	title string
	width int
	cell  func(vm.Status) string
}

// columns are the columns before STATE, as `vmtui --list` prints them.
var columns = []column{
	{"ID", 5, func(s vm.Status) string { return strconv.Itoa(s.ID) }},
	{"PID", 5, func(s vm.Status) string { return ifRunning(s, strconv.Itoa(s.PID)) }},
	{"VCPUS", 5, func(s vm.Status) string { return strconv.Itoa(s.VCPUs) }},
	{"MAXMEM", 7, func(s vm.Status) string { return units.FormatSize(s.MaxMem) }},
	{"CURMEM", 7, func(s vm.Status) string { return ifRunning(s, units.FormatSize(s.CurMem)) }},
	{"TTY", 7, func(s vm.Status) string { return ifRunning(s, s.TTYName()) }},
	{"OWNER", 12, func(s vm.Status) string { return s.Owner }},
}

// dropOrder is the order in which a terminal too narrow for every column
// loses them (by index in columns); ID, STATE and NAME always stay.
var dropOrder = []int{6, 4, 2, 1, 3, 5}

// stateWidth is the width of the STATE column.
const stateWidth = 8

// nameRoom is the width kept for names before columns are dropped.
const nameRoom = 12

func ifRunning(s vm.Status, v string) string {
	if !s.Running() {
		return "-"
	}
	return v
}

// visibleColumns returns the columns that fit in width: all of them on
// 80 columns and more.
func visibleColumns(width int) []column {
	shown := make([]bool, len(columns))
	total := 2 + stateWidth + 1 + nameRoom // gutter, STATE, space, NAME
	for i, c := range columns {
		shown[i] = true
		total += c.width + 1
	}
	for _, i := range dropOrder {
		if total <= width {
			break
		}
		shown[i] = false
		total -= columns[i].width + 1
	}
	var out []column
	for i, c := range columns {
		if shown[i] {
			out = append(out, c)
		}
	}
	return out
}

// rowCells returns a status's columns before STATE (each followed by a
// space), its STATE and NAME, as `vmtui --list` prints them.
func rowCells(s vm.Status, cols []column) (left, state, name string) {
	var b strings.Builder
	for _, c := range cols {
		fmt.Fprintf(&b, "%*s ", c.width, c.cell(s))
	}
	return b.String(), fmt.Sprintf("%*s", stateWidth, string(s.State)), s.DisplayName()
}

// cellsDiffer reports whether two rows draw differently (or one has an
// error the other has not).
func cellsDiffer(a, b vm.Status) bool {
	la, sa, na := rowCells(a, columns)
	lb, sb, nb := rowCells(b, columns)
	return la != lb || sa != sb || na != nb || a.Err != b.Err
}

// headerLine is the table's header for cols.
func headerLine(cols []column) string {
	var b strings.Builder
	b.WriteString("  ")
	for _, c := range cols {
		fmt.Fprintf(&b, "%*s ", c.width, c.title)
	}
	fmt.Fprintf(&b, "%*s %s", stateWidth, "STATE", "NAME")
	return b.String()
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
var stateRank = map[vm.State]int{vm.StateStarting: 0, vm.StateRunning: 0, vm.StatePaused: 1, vm.StateStopping: 2, vm.StateBroken: 3, vm.StateSaved: 4, vm.StateStopped: 5}

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

// tableModel is the table of the VMs.
type tableModel struct {
	common
	width, height int // height: the header and the rows

	rows     []vm.Status // the fleet's, filtered and sorted
	cursor   int
	offset   int
	selected string // the name under the cursor, kept across refreshes and sorts
	order    sortOrder

	filter    textinput.Model
	filtering bool // typing a filter
}

func newTable(c common) *tableModel {
	f := textinput.New()
	f.Prompt = "/"
	f.Placeholder = "name"
	f.CharLimit = 64
	staticCursor(&f)
	return &tableModel{common: c, width: defaultWidth, height: defaultHeight - 3, filter: f}
}

// SetSize sets the size of the header and rows.
func (t *tableModel) SetSize(width, height int) {
	t.width, t.height = width, height
	t.clampOffset()
}

// ShortHelp is the help bar under the table.
func (t *tableModel) ShortHelp() []key.Binding {
	if t.filtering {
		return []key.Binding{t.keys.Filtering, t.keys.Back}
	}
	return t.keys.ShortHelp()
}

// FullHelp is the ? screen.
func (t *tableModel) FullHelp() [][]key.Binding { return t.keys.FullHelp() }

// Update moves the cursor, types the filter and changes the order.
func (t *tableModel) Update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case tea.MouseMsg:
		switch {
		case msg.Button == tea.MouseButtonWheelUp:
			t.moveTo(t.cursor - 1)
		case msg.Button == tea.MouseButtonWheelDown:
			t.moveTo(t.cursor + 1)
		case msg.Button == tea.MouseButtonLeft && msg.Action == tea.MouseActionPress:
			row := msg.Y - tableTop + t.offset
			if msg.Y >= tableTop && msg.Y < tableTop+t.rowsHeight() && row < len(t.rows) {
				t.moveTo(row)
			}
		}
		return nil
	case tea.KeyMsg:
		if t.filtering {
			return t.updateFilter(msg)
		}
		k := t.keys
		if i, ok := listMove(k, msg, t.cursor, len(t.rows)); ok {
			t.moveTo(i)
			return nil
		}
		switch {
		case key.Matches(msg, k.Filter):
			t.filtering = true
			return t.filter.Focus()
		case key.Matches(msg, k.Sort):
			t.order = (t.order + 1) % numSortOrders
			t.refresh()
			return notice(false, "sorted by %s", t.order)
		case key.Matches(msg, k.Back):
			if t.filter.Value() != "" {
				t.filter.SetValue("")
				t.refresh()
			}
		}
	}
	return nil
}

// listMove returns where the list keys of k (Up, Down, Top, Bottom) put
// a cursor at cursor in a list of n, and whether msg is one of them.
func listMove(k *KeyMap, msg tea.KeyMsg, cursor, n int) (int, bool) {
	switch {
	case key.Matches(msg, k.Up):
		return cursor - 1, true
	case key.Matches(msg, k.Down):
		return cursor + 1, true
	case key.Matches(msg, k.Top):
		return 0, true
	case key.Matches(msg, k.Bottom):
		return n - 1, true
	}
	return cursor, false
}

// updateFilter types the filter.
func (t *tableModel) updateFilter(msg tea.KeyMsg) tea.Cmd {
	switch {
	case key.Matches(msg, t.keys.Filtering):
		t.filtering = false
		t.filter.Blur()
		return nil
	case key.Matches(msg, t.keys.Back):
		t.filtering = false
		t.filter.Blur()
		t.filter.SetValue("")
		t.refresh()
		return nil
	}
	var cmd tea.Cmd
	t.filter, cmd = t.filter.Update(msg)
	t.refresh()
	return cmd
}

// refresh recomputes the visible rows from the fleet and puts the cursor
// back on the selected VM (or the nearest row when it is gone).
func (t *tableModel) refresh() {
	q := strings.ToLower(strings.TrimSpace(t.filter.Value()))
	t.rows = t.rows[:0:0]
	for _, st := range t.vms.all {
		if q == "" || strings.Contains(strings.ToLower(st.Name), q) {
			t.rows = append(t.rows, st)
		}
	}
	if t.order != sortByID {
		slices.SortStableFunc(t.rows, t.order.compare)
	}
	if i := slices.IndexFunc(t.rows, func(s vm.Status) bool { return s.Name == t.selected }); i >= 0 {
		t.cursor = i
	} else {
		t.cursor = min(max(t.cursor, 0), max(len(t.rows)-1, 0))
		if st, ok := t.current(); ok {
			t.selected = st.Name
		} else {
			t.selected = ""
		}
	}
	t.clampOffset()
}

// current returns the VM under the cursor.
func (t *tableModel) current() (vm.Status, bool) {
	if t.cursor < 0 || t.cursor >= len(t.rows) {
		return vm.Status{}, false
	}
	return t.rows[t.cursor], true
}

// moveTo puts the cursor on row i.
func (t *tableModel) moveTo(i int) {
	if len(t.rows) == 0 {
		return
	}
	t.cursor = min(max(i, 0), len(t.rows)-1)
	t.selected = t.rows[t.cursor].Name
	t.clampOffset()
}

// rowsHeight is the number of rows there is room for.
func (t *tableModel) rowsHeight() int { return max(1, t.height-1) }

// clampOffset scrolls the table so that the cursor is visible.
func (t *tableModel) clampOffset() {
	h := t.rowsHeight()
	if t.cursor < t.offset {
		t.offset = t.cursor
	}
	if t.cursor >= t.offset+h {
		t.offset = t.cursor - h + 1
	}
	t.offset = max(0, min(t.offset, len(t.rows)-h))
}

// filterNote is what the title says of a filter that is set.
func (t *tableModel) filterNote() string {
	if q := t.filter.Value(); q != "" && !t.filtering {
		return fmt.Sprintf("  [filter %q: %d shown]", q, len(t.rows))
	}
	return ""
}

// View draws the header and the rows.
func (t *tableModel) View() string {
	var b strings.Builder
	cols := visibleColumns(t.width)
	b.WriteString(t.styles.Header.Render(ansi.Truncate(headerLine(cols), t.width, "")))
	for i := t.offset; i < t.offset+t.rowsHeight(); i++ {
		b.WriteByte('\n')
		var line string
		switch {
		case i < len(t.rows):
			line = t.renderRow(t.rows[i], cols, i == t.cursor)
		case i == 0 && t.vms.loaded && len(t.vms.all) == 0:
			line = t.styles.Faint.Render("  no vms defined: press n to define one")
		case i == 0 && t.vms.loaded:
			line = t.styles.Faint.Render("  no vm matches the filter (esc clears it)")
		case i == 0 && !t.vms.loaded && t.vms.err == nil:
			line = t.styles.Faint.Render("  loading…")
		}
		b.WriteString(ansi.Truncate(line, t.width, ""))
	}
	return b.String()
}

// renderRow draws one row of the table.
func (t *tableModel) renderRow(s vm.Status, cols []column, selected bool) string {
	left, state, name := rowCells(s, cols)
	if selected {
		text := ansi.Truncate(cursorMark+left+state+" "+name, t.width, "")
		if pad := t.width - ansi.StringWidth(text); pad > 0 {
			text += strings.Repeat(" ", pad)
		}
		return t.styles.Selected.Render(text)
	}
	return ansi.Truncate("  "+left+t.styles.state(s.State).Render(state)+" "+name, t.width, "")
}
