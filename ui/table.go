package ui

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/x/ansi"

	"github.com/vmtui/vmtui/internal/units"
	"github.com/vmtui/vmtui/vm"
)

// The table screen: a title line, the header, the rows, a status line and
// the help bar. The columns are exactly those of `vmtui --list`, with the
// same widths, after a two-column gutter for the cursor.

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

// View draws the TUI.
func (m Model) View() string {
	switch m.screen {
	case screenHelp:
		return m.viewHelp()
	case screenDetail:
		return m.viewDetail()
	case screenNewVM:
		return m.clip(m.viewForm(m.vmForm.form) + m.styles.Faint.Render("tab/↑↓ move  enter next/submit  ctrl+s submit  esc cancel"))
	case screenDisk:
		return m.viewDisk()
	}
	return m.viewTable()
}

func (m Model) viewTable() string {
	var b strings.Builder
	b.WriteString(m.line(m.titleLine()))
	b.WriteByte('\n')
	cols := visibleColumns(m.width)
	b.WriteString(m.line(m.styles.Header.Render(ansi.Truncate(headerLine(cols), m.width, ""))))
	b.WriteByte('\n')
	h := m.tableHeight()
	for i := m.offset; i < m.offset+h; i++ {
		switch {
		case i < len(m.rows):
			b.WriteString(m.line(m.renderRow(m.rows[i], cols, i == m.cursor)))
		case i == 0 && m.loaded && len(m.all) == 0:
			b.WriteString(m.line(m.styles.Faint.Render("  no vms defined: press n to define one")))
		case i == 0 && m.loaded:
			b.WriteString(m.line(m.styles.Faint.Render("  no vm matches the filter (esc clears it)")))
		case i == 0 && !m.loaded && m.listErr == nil:
			b.WriteString(m.line(m.styles.Faint.Render("  loading…")))
		}
		b.WriteByte('\n')
	}
	b.WriteString(m.line(m.statusLine()))
	b.WriteByte('\n')
	b.WriteString(m.line(m.help.ShortHelpView(m.keys.ShortHelp())))
	return b.String()
}

// line cuts s to the width of the screen.
func (m Model) line(s string) string {
	return ansi.Truncate(s, m.width, "")
}

// renderRow draws one row of the table.
func (m Model) renderRow(s vm.Status, cols []column, selected bool) string {
	left, state, name := rowCells(s, cols)
	if selected {
		text := ansi.Truncate(cursorMark+left+state+" "+name, m.width, "")
		if pad := m.width - ansi.StringWidth(text); pad > 0 {
			text += strings.Repeat(" ", pad)
		}
		return m.styles.Selected.Render(text)
	}
	return ansi.Truncate("  "+left+m.styles.state(s.State).Render(state)+" "+name, m.width, "")
}

// titleLine is the first line: counts, the filter and the spinner.
func (m Model) titleLine() string {
	counts := map[vm.State]int{}
	for _, s := range m.all {
		counts[s.State]++
	}
	var parts []string
	for _, st := range []vm.State{vm.StateStarting, vm.StateRunning, vm.StatePaused, vm.StateStopping, vm.StateStopped, vm.StateBroken} {
		if n := counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	title := m.styles.Title.Render("vmtui")
	text := fmt.Sprintf("%s  %d vms", title, len(m.all))
	if len(parts) > 0 {
		text += ": " + strings.Join(parts, ", ")
	}
	if q := m.filter.Value(); q != "" && m.mode != modeFilter {
		text += fmt.Sprintf("  [filter %q: %d shown]", q, len(m.rows))
	}
	if len(m.busy) > 0 {
		text += "  " + m.spin.View() + " " + m.busyText()
	}
	return text
}

// busyText lists the operations under way.
func (m Model) busyText() string {
	var ops []string
	for _, s := range m.all {
		if op, ok := m.busy[s.Name]; ok {
			ops = append(ops, progressive(op)+" "+s.DisplayName())
		}
	}
	if len(ops) == 0 {
		for name, op := range m.busy {
			ops = append(ops, progressive(op)+" "+name)
			break
		}
	}
	return strings.Join(ops, ", ")
}

// statusLine is the line above the help bar: the filter being typed, a
// question, or the last result.
func (m Model) statusLine() string {
	switch {
	case m.mode == modeFilter:
		return m.filter.View()
	case m.mode == modeConfirm && m.confirm != nil:
		return m.styles.Label.Render(m.confirm.prompt)
	case m.listErr != nil:
		return m.styles.Error.Render("list vms: " + oneLine(m.listErr))
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

// viewHelp is the full help.
func (m Model) viewHelp() string {
	full := m.help
	full.ShowAll = true
	var b strings.Builder
	b.WriteString(m.styles.Title.Render("vmtui keys"))
	b.WriteString("\n\n")
	b.WriteString(full.FullHelpView(m.keys.FullHelp()))
	b.WriteString("\n\n")
	b.WriteString(strings.Join([]string{
		"The table is the one `vmtui --list` prints, refreshed every second.",
		"x powers the guest down, X kills QEMU (both ask y/n). D removes the",
		"definition of a stopped vm (asks; disks are kept). e opens it in",
		"$EDITOR. o sorts by id, name, state or memory. In the console, ~.",
		"(after a newline) or Ctrl-] returns here. In forms: tab/shift+tab",
		"move, enter submits, esc cancels (an import too). q quits and",
		"leaves every vm running.",
	}, "\n"))
	b.WriteString("\n\n")
	b.WriteString(m.styles.Faint.Render("? or esc: back to the table"))
	return m.clip(b.String())
}

// clip cuts a whole screen to the terminal's size.
func (m Model) clip(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > m.height {
		lines = lines[:m.height]
	}
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, m.width, "")
	}
	return strings.Join(lines, "\n")
}

// tableHeight is the number of rows the screen has room for: all but the
// title, the header, the status line and the help bar.
func (m *Model) tableHeight() int {
	return max(1, m.height-4)
}
