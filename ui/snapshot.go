package ui

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/units"
	"github.com/vmtui/vmtui/vm"
)

// The snapshot screen, opened with S from the detail view (or the table):
// the snapshots of one VM (tag, date, the guest's clock, the RAM saved),
// with keys to take one (a form asks its tag), revert to one and delete one
// (both asked y/n in the status line). They are operations like the
// lifecycle ones (snapshotOp), run by Model.run with the spinner, what
// they do and their result in the status line; the list is read again
// once each ends. esc goes back.

// snapshotsMsg carries the snapshots of a VM, or why they could not be read.
type snapshotsMsg struct {
	name string
	list []vm.Snapshot
	err  error
}

// snapshotsCmd lists the snapshots of VM name.
func snapshotsCmd(b Backend, name string) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
		defer cancel()
		list, err := b.Snapshots(ctx, name)
		return snapshotsMsg{name: name, list: list, err: err}
	}
}

// snapshotKind is what an operation does with a snapshot.
type snapshotKind int

const (
	snapshotTake snapshotKind = iota
	snapshotRevert
	snapshotDelete
)

// snapshotOp returns the operation that takes, reverts to or deletes
// snapshot tag of a VM; revert and delete ask first.
func snapshotOp(kind snapshotKind, tag string) *operation {
	op := &operation{
		object: "snapshot " + tag,
		key:    func(k KeyMap) key.Binding { return k.Snapshot.Take },
		when:   func(vm.Status) error { return nil },
	}
	// The prompt is a format with %s for the VM's name: a % of the tag
	// stays a %.
	quoted := strings.ReplaceAll(tag, "%", "%%")
	switch kind {
	case snapshotTake:
		op.verb, op.ing, op.past = "take", "taking", "took"
		op.do = func(ctx context.Context, b Backend, name string) error { return b.CreateSnapshot(ctx, name, tag) }
	case snapshotRevert:
		op.verb, op.ing, op.past = "revert to", "reverting to", "reverted to"
		op.prompt = "revert %s to snapshot " + quoted + "? what changed since is lost (y/n)"
		op.key = func(k KeyMap) key.Binding { return k.Snapshot.Revert }
		op.do = func(ctx context.Context, b Backend, name string) error { return b.RevertSnapshot(ctx, name, tag) }
	case snapshotDelete:
		op.verb, op.ing, op.past = "delete", "deleting", "deleted"
		op.prompt = "delete snapshot " + quoted + " of %s? (y/n)"
		op.key = func(k KeyMap) key.Binding { return k.Snapshot.Delete }
		op.do = func(ctx context.Context, b Backend, name string) error { return b.DeleteSnapshot(ctx, name, tag) }
	}
	return op
}

// checkSnapshotTag says whether tag can name a new snapshot among list,
// by the command line's rules (vm.ValidSnapshotTag: not empty, no control
// characters, not only digits, ...) and not taken already.
func checkSnapshotTag(tag string, list []vm.Snapshot) error {
	if tag == "" {
		return errors.New("a tag is needed")
	}
	if err := vm.ValidSnapshotTag(tag); err != nil {
		return err
	}
	for _, sn := range list {
		if sn.Tag == tag {
			return fmt.Errorf("a snapshot is tagged %q already", tag)
		}
	}
	return nil
}

// snapshotModel is the snapshot screen of one VM.
type snapshotModel struct {
	common
	width, height int
	help          help.Model
	name          string // the VM
	from          screen // where esc goes back to

	list     []vm.Snapshot
	err      error // of the last listing
	loaded   bool
	loading  bool // a listing is under way
	reload   bool // list again once it ends
	cursor   int
	selected string // the tag under the cursor, kept across listings
	form     *form  // the tag of a new snapshot, or nil
}

func newSnapshots(c common, name string, from screen) *snapshotModel {
	h := help.New()
	h.ShortSeparator = "  "
	return &snapshotModel{common: c, name: name, from: from, help: h, width: defaultWidth, height: defaultHeight}
}

// SetSize sets the size of the whole screen (the model draws its last two
// lines: the status line and the keys).
func (s *snapshotModel) SetSize(width, height int) {
	s.width, s.height = width, height
	s.help.Width = width
}

// ShortHelp is the keys of the list, or of the form.
func (s *snapshotModel) ShortHelp() []key.Binding {
	if s.form != nil {
		return []key.Binding{s.keys.Form.Enter, s.keys.Form.Cancel}
	}
	k := s.keys
	return []key.Binding{k.Snapshot.Take, k.Snapshot.Revert, k.Snapshot.Delete, k.Up, k.Down, k.Back, k.Quit}
}

// FullHelp is ShortHelp in one column.
func (s *snapshotModel) FullHelp() [][]key.Binding { return [][]key.Binding{s.ShortHelp()} }

// load lists the snapshots again (once more after the listing under way).
func (s *snapshotModel) load() tea.Cmd {
	if s.loading {
		s.reload = true
		return nil
	}
	s.loading = true
	return snapshotsCmd(s.b, s.name)
}

// Update takes a listing, and moves the cursor.
func (s *snapshotModel) Update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case snapshotsMsg:
		if msg.name != s.name {
			return nil
		}
		s.loading = false
		s.loaded = true
		s.err = msg.err
		if msg.err == nil {
			s.list = msg.list
			s.follow()
		}
		if s.form != nil {
			s.form.validate()
		}
		if s.reload {
			s.reload = false
			return s.load()
		}
	case tea.KeyMsg:
		if i, ok := listMove(s.keys, msg, s.cursor, len(s.list)); ok {
			s.moveTo(i)
		}
	}
	return nil
}

// moveTo puts the cursor on row i (within the list).
func (s *snapshotModel) moveTo(i int) {
	s.cursor = max(0, min(i, len(s.list)-1))
	if sn, ok := s.current(); ok {
		s.selected = sn.Tag
	}
}

// follow puts the cursor back on the tag it was on after a listing, else
// keeps its row.
func (s *snapshotModel) follow() {
	for i, sn := range s.list {
		if sn.Tag == s.selected {
			s.cursor = i
			return
		}
	}
	s.moveTo(s.cursor)
}

// current returns the snapshot under the cursor.
func (s *snapshotModel) current() (vm.Snapshot, bool) {
	if s.cursor < 0 || s.cursor >= len(s.list) {
		return vm.Snapshot{}, false
	}
	return s.list[s.cursor], true
}

// newTagForm returns the form that asks the tag of a new snapshot.
func (s *snapshotModel) newTagForm() *form {
	list := s.list
	f := &form{
		title: "Take a snapshot of " + printable(s.name),
		fields: []field{
			newField("tag", "pre-upgrade", "its name; a running vm's RAM is saved too", func(v string) error {
				return checkSnapshotTag(v, list)
			}),
		},
	}
	// One byte more than a tag may have: a tag too long is said so.
	f.fields[0].input.CharLimit = vm.MaxSnapshotTagLen + 1
	f.focusOn(0)
	return f
}

// Column widths of the list.
const (
	snapDateWidth  = len("2006-01-02 15:04:05")
	snapClockWidth = len("000:00:00.000")
	snapRAMWidth   = 8
)

// View draws the screen but its last two lines.
func (s *snapshotModel) View() string {
	st := s.styles
	var lines []string
	head := fmt.Sprintf("%s %s  snapshots", st.Title.Render("vmtui ›"), st.Label.Render(printable(s.name)))
	if vs, ok := s.vms.get(s.name); ok {
		head = fmt.Sprintf("%s %s (id %d)  %s  snapshots", st.Title.Render("vmtui ›"), st.Label.Render(vs.DisplayName()), vs.ID, st.state(vs.State).Render(string(vs.State)))
	}
	if busy := s.vms.busyText(); busy != "" {
		head += "  " + busy
	}
	lines = append(lines, head, "")
	var formLines []string
	if s.form != nil {
		formLines = strings.Split(strings.TrimRight(s.form.view(st, s.width, s.vms.spin.View()), "\n"), "\n")
		formLines = append([]string{""}, formLines...)
	}
	room := max(1, s.height-2) // the status line and the keys are the model's
	switch {
	case s.err != nil:
		lines = append(lines, st.Error.Render(oneLine(s.err))) // the error says what failed
	case !s.loaded:
		lines = append(lines, st.Faint.Render("loading…"))
	case len(s.list) == 0:
		lines = append(lines, "no snapshots: press "+s.keys.Snapshot.Take.Help().Key+" to take one")
	default:
		rows := s.rows()
		lines = append(lines, st.Header.Render(rows[0]))
		// The rows that fit, the cursor's among them.
		fit := max(1, room-len(lines)-len(formLines))
		first := max(0, min(s.cursor-fit+1, len(rows)-1-fit))
		first = min(first, s.cursor)
		for i := first; i < len(s.list) && i < first+fit; i++ {
			row := rows[i+1]
			if i == s.cursor {
				row = st.Selected.Render(row)
			}
			lines = append(lines, row)
		}
	}
	lines = append(lines, formLines...)
	if len(lines) > room {
		lines = lines[:room]
	}
	for len(lines) < room {
		lines = append(lines, "")
	}
	return clip(strings.Join(lines, "\n"), s.width, room)
}

// rows returns the header and one line per snapshot, unstyled, with the
// cursor's mark.
func (s *snapshotModel) rows() []string {
	tagWidth := len("TAG")
	for _, sn := range s.list {
		tagWidth = max(tagWidth, ansi.StringWidth(printable(sn.Tag)))
	}
	// On a narrow screen a long tag is cut first, to 16 cells; then the
	// columns on the right.
	fixed := 2 + 2 + snapDateWidth + 2 + snapClockWidth + 2 + snapRAMWidth
	tagWidth = max(min(tagWidth, s.width-fixed), min(tagWidth, 16))
	line := func(mark, tag, date, clock, ram string) string {
		tag = ansi.Truncate(tag, tagWidth, "…")
		return fmt.Sprintf("%s%s%s  %-*s  %*s  %*s", mark, tag, strings.Repeat(" ", tagWidth-ansi.StringWidth(tag)),
			snapDateWidth, date, snapClockWidth, clock, snapRAMWidth, ram)
	}
	out := []string{line("  ", "TAG", "DATE", "VM CLOCK", "RAM")}
	for i, sn := range s.list {
		mark := "  "
		if i == s.cursor {
			mark = "› "
		}
		out = append(out, line(mark, printable(sn.Tag), sn.Date.Local().Format("2006-01-02 15:04:05"), disk.FormatVMClock(sn.VMClock), ramSize(sn.VMStateSize)))
	}
	return out
}

// ramSize is the size of the RAM and devices a snapshot saved; "-" for a
// disk-only snapshot.
func ramSize(n int64) string {
	if n <= 0 {
		return "-"
	}
	return units.FormatSize(n)
}

// openSnapshots shows the snapshot screen of VM name, from the screen
// shown, and lists its snapshots.
func (m *Model) openSnapshots(name string) tea.Cmd {
	m.snapshots = newSnapshots(m.common, name, m.screen)
	m.show(screenSnapshots, m.snapshots)
	return m.snapshots.load()
}

// closeSnapshots goes back from the snapshot screen to where it was
// opened from.
func (m *Model) closeSnapshots() tea.Cmd {
	s := m.snapshots
	m.snapshots = nil
	if s.from == screenDetail && m.detail != nil {
		m.screen = screenDetail
		return detailCmd(m.b, m.detail.name)
	}
	m.back()
	return nil
}

// updateSnapshots takes a key on the snapshot screen: the form's first,
// then the screen's own keys; the rest of the TUI's keys do nothing here
// but quit and help.
func (m Model) updateSnapshots(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	s := m.snapshots
	if f := s.form; f != nil {
		res, cmd := f.update(m.keys.Form, msg)
		switch res {
		case formCancel:
			s.form = nil
			return m, nil
		case formSubmit:
			s.form = nil
			return m, m.run(snapshotOp(snapshotTake, f.value(0)), s.name)
		}
		return m, cmd
	}
	k := m.keys
	switch {
	case key.Matches(msg, k.Quit):
		return m, tea.Quit
	case key.Matches(msg, k.Back):
		return m, m.closeSnapshots()
	case key.Matches(msg, k.Help):
		m.back()
		m.screen = screenHelp
		return m, nil
	case key.Matches(msg, k.Snapshot.Take):
		s.form = s.newTagForm()
		return m, nil
	case key.Matches(msg, k.Snapshot.Revert), key.Matches(msg, k.Snapshot.Delete):
		kind, verb := snapshotRevert, "revert to"
		if key.Matches(msg, k.Snapshot.Delete) {
			kind, verb = snapshotDelete, "delete"
		}
		sn, ok := s.current()
		if !ok {
			m.setStatus(true, "%s: no snapshot to %s", s.name, verb)
			return m, nil
		}
		m.confirm = newConfirm(m.common, snapshotOp(kind, sn.Tag), s.name)
		m.confirm.SetSize(m.width, m.height)
		return m, nil
	}
	return m, s.Update(msg)
}

// snapshotsView draws the snapshot screen, with the status line and the
// keys (of the question, when one is asked).
func (m Model) snapshotsView() string {
	return m.snapshots.View() + "\n" + m.footer(m.snapshots, m.snapshots.help)
}
