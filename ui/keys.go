package ui

import "github.com/charmbracelet/bubbles/key"

// KeyMap is the TUI's one keymap: the help bars and the full help are drawn
// from it, and Update matches keys only through it.
type KeyMap struct {
	Up, Down, Top, Bottom key.Binding
	Detail                key.Binding
	Start                 key.Binding
	Stop                  key.Binding
	ForceStop             key.Binding
	Pause                 key.Binding
	Save                  key.Binding // suspend to disk (vmtui save)
	Console               key.Binding
	New                   key.Binding
	Disks                 key.Binding
	Edit                  key.Binding
	Remove                key.Binding
	Filter                key.Binding
	Sort                  key.Binding
	Help                  key.Binding
	Quit                  key.Binding
	Back                  key.Binding
	Yes, No               key.Binding
	// SetMemory, AttachDisk and DetachDisk change a running VM from the
	// detail view (live.go).
	SetMemory, AttachDisk, DetachDisk key.Binding
	// Snapshots opens the snapshot screen from the detail view.
	Snapshots key.Binding
	// Snapshot is the keys of the snapshot screen.
	Snapshot SnapshotKeyMap
	// Filtering ends the filter being typed (Back clears it).
	Filtering key.Binding
	// Form is the keys of the forms.
	Form FormKeyMap
}

// FormKeyMap is the keys of a form.
type FormKeyMap struct {
	Next, Prev key.Binding
	// Enter moves to the next field, and submits on the last one.
	Enter  key.Binding
	Submit key.Binding
	Cancel key.Binding
}

// SnapshotKeyMap is the keys of the snapshot screen.
type SnapshotKeyMap struct {
	Take, Revert, Delete key.Binding
}

// DefaultKeyMap returns the default keys.
func DefaultKeyMap() KeyMap {
	return KeyMap{
		Up:        key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:      key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		Top:       key.NewBinding(key.WithKeys("home", "g"), key.WithHelp("g/home", "first")),
		Bottom:    key.NewBinding(key.WithKeys("end", "G"), key.WithHelp("G/end", "last")),
		Detail:    key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "details")),
		Start:     key.NewBinding(key.WithKeys("s"), key.WithHelp("s", "start")),
		Stop:      key.NewBinding(key.WithKeys("x"), key.WithHelp("x", "stop")),
		ForceStop: key.NewBinding(key.WithKeys("X"), key.WithHelp("X", "force stop")),
		Pause:     key.NewBinding(key.WithKeys("p"), key.WithHelp("p", "pause")),
		Save:      key.NewBinding(key.WithKeys("z"), key.WithHelp("z", "save to disk")),
		Console:   key.NewBinding(key.WithKeys("c"), key.WithHelp("c", "console")),
		New:       key.NewBinding(key.WithKeys("n"), key.WithHelp("n", "new")),
		Disks:     key.NewBinding(key.WithKeys("d"), key.WithHelp("d", "disk/import")),
		Edit:      key.NewBinding(key.WithKeys("e"), key.WithHelp("e", "edit")),
		Remove:    key.NewBinding(key.WithKeys("D"), key.WithHelp("D", "remove")),
		Filter:    key.NewBinding(key.WithKeys("/"), key.WithHelp("/", "filter")),
		Sort:      key.NewBinding(key.WithKeys("o"), key.WithHelp("o", "sort")),
		Help:      key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		Quit:      key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
		Back:      key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "back")),
		Yes:       key.NewBinding(key.WithKeys("y", "Y"), key.WithHelp("y", "yes")),
		No:        key.NewBinding(key.WithKeys("n", "N", "esc"), key.WithHelp("n", "no")),
		Filtering: key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "keep the filter")),
		Form:      DefaultFormKeyMap(),
		Snapshots: key.NewBinding(key.WithKeys("S"), key.WithHelp("S", "snapshots")),

		// The live changes of the detail view (live.go).
		SetMemory:  key.NewBinding(key.WithKeys("m"), key.WithHelp("m", "memory")),
		AttachDisk: key.NewBinding(key.WithKeys("a"), key.WithHelp("a", "attach disk")),
		DetachDisk: key.NewBinding(key.WithKeys("u"), key.WithHelp("u", "detach disk")),
		Snapshot: SnapshotKeyMap{
			Take:   key.NewBinding(key.WithKeys("t"), key.WithHelp("t", "take")),
			Revert: key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "revert")),
			Delete: key.NewBinding(key.WithKeys("D"), key.WithHelp("D", "delete")),
		},
	}
}

// DefaultFormKeyMap returns the default keys of the forms.
func DefaultFormKeyMap() FormKeyMap {
	return FormKeyMap{
		Next:   key.NewBinding(key.WithKeys("tab", "down"), key.WithHelp("tab/↓", "next")),
		Prev:   key.NewBinding(key.WithKeys("shift+tab", "up"), key.WithHelp("shift+tab/↑", "prev")),
		Enter:  key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "next/submit")),
		Submit: key.NewBinding(key.WithKeys("ctrl+s"), key.WithHelp("ctrl+s", "submit")),
		Cancel: key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "cancel")),
	}
}

// ShortHelp is the help bar under the table.
func (k KeyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Start, k.Stop, k.Pause, k.Console, k.New, k.Detail, k.Help, k.Quit}
}

// FullHelp is the ? screen, one column per group.
func (k KeyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Top, k.Bottom, k.Detail, k.Filter, k.Sort, k.Back},
		{k.Start, k.Stop, k.ForceStop, k.Pause, k.Console, k.SetMemory, k.AttachDisk, k.DetachDisk},
		{k.New, k.Disks, k.Edit, k.Remove, k.Snapshots, k.Save, k.Help, k.Quit},
	}
}

// ShortHelp is the help bar under a form.
func (k FormKeyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Next, k.Prev, k.Enter, k.Submit, k.Cancel}
}

// FullHelp is ShortHelp, in one column.
func (k FormKeyMap) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }
