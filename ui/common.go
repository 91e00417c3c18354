package ui

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/vm"
)

// component is a screen of the TUI (as soft-serve's pkg/ui components): it
// takes the messages meant for it, draws itself in the size it is given,
// and names its keys for the help bar.
type component interface {
	help.KeyMap
	SetSize(width, height int)
	Update(tea.Msg) tea.Cmd
	View() string
}

// common is what every screen shares, given to their constructors.
type common struct {
	b      Backend
	keys   *KeyMap
	styles *Styles
	// cwd resolves the relative paths typed in forms.
	cwd string
	// vms is the TUI's picture of the VMs.
	vms *fleet
}

// fleet is the TUI's picture of the VMs: the last list, kept current by
// QEMU's events, /proc samples and refreshes, with the charts' history and
// the operations under way. The screens read it; the model writes it.
type fleet struct {
	all    []vm.Status // by ID
	loaded bool
	err    error // of the last full list
	// asOf is when each VM's row was read: a list started earlier does
	// not overwrite a row read since.
	asOf    map[string]time.Time
	history map[string]*history
	busy    map[string]*operation // VM name → operation under way
	spin    spinner.Model
}

func newFleet() *fleet {
	return &fleet{
		asOf:    make(map[string]time.Time),
		history: make(map[string]*history),
		busy:    make(map[string]*operation),
		spin:    spinner.New(spinner.WithSpinner(spinner.Dot)),
	}
}

// historyLen is how many samples the CPU and memory charts keep (three
// minutes at one a second).
const historyLen = 180

// history is the recent CPU and memory use of a running VM.
type history struct {
	pid int
	// last is the last /proc sample, at lastAt.
	last   vm.ProcStat
	lastAt time.Time
	cpu    []float64 // percent of one core
	mem    []float64 // bytes
}

// index returns the position of VM name in all, or -1.
func (f *fleet) index(name string) int {
	return slices.IndexFunc(f.all, func(s vm.Status) bool { return s.Name == name })
}

// get returns the row of VM name.
func (f *fleet) get(name string) (vm.Status, bool) {
	if i := f.index(name); i >= 0 {
		return f.all[i], true
	}
	return vm.Status{}, false
}

// put replaces the row of st.Name read at at, or adds it in ID order.
func (f *fleet) put(st vm.Status, at time.Time) {
	f.asOf[st.Name] = at
	if i := f.index(st.Name); i >= 0 {
		f.all[i] = st
		f.forget(st)
		return
	}
	i, _ := slices.BinarySearchFunc(f.all, st, func(a, b vm.Status) int { return cmp.Compare(a.ID, b.ID) })
	f.all = slices.Insert(f.all, i, st)
}

// remove drops VM name.
func (f *fleet) remove(name string) {
	if i := f.index(name); i >= 0 {
		f.all = slices.Delete(f.all, i, i+1)
	}
	delete(f.asOf, name)
	delete(f.history, name)
}

// setAll takes a full list read from at: rows read since then are kept.
func (f *fleet) setAll(list []vm.Status, at time.Time) {
	seen := make(map[string]bool, len(list))
	for i, st := range list {
		seen[st.Name] = true
		if f.asOf[st.Name].After(at) {
			if cur, ok := f.get(st.Name); ok {
				list[i] = cur
			}
			continue
		}
		f.asOf[st.Name] = at
		f.forget(st)
	}
	for name := range f.asOf {
		if !seen[name] {
			delete(f.asOf, name)
		}
	}
	for name := range f.history {
		if !seen[name] {
			delete(f.history, name)
		}
	}
	f.all = list
	f.loaded = true
}

// forget drops the history of a VM that no longer runs the QEMU it was
// kept for.
func (f *fleet) forget(st vm.Status) {
	if h := f.history[st.Name]; h != nil && h.pid != st.PID {
		delete(f.history, st.Name)
	}
}

// record adds a /proc sample of VM name's QEMU, taken at at, to its row
// (CURMEM) and its charts. It reports whether the row changed.
func (f *fleet) record(name string, ps vm.ProcStat, at time.Time) bool {
	i := f.index(name)
	if i < 0 || f.all[i].PID != ps.PID {
		return false
	}
	h := f.history[name]
	if h == nil || h.pid != ps.PID {
		h = &history{pid: ps.PID}
		f.history[name] = h
	}
	h.mem = appendCapped(h.mem, float64(ps.RSS))
	if !h.lastAt.IsZero() {
		if dt := at.Sub(h.lastAt).Seconds(); dt > 0 && ps.CPUTicks >= h.last.CPUTicks {
			h.cpu = appendCapped(h.cpu, float64(ps.CPUTicks-h.last.CPUTicks)/vm.ClockTicks/dt*100)
		}
	}
	h.last, h.lastAt = ps, at
	old := f.all[i]
	f.all[i].CurMem = ps.RSS
	return cellsDiffer(old, f.all[i])
}

func appendCapped(s []float64, v float64) []float64 {
	s = append(s, v)
	if len(s) > historyLen {
		s = s[len(s)-historyLen:]
	}
	return s
}

// running returns the rows of the running VMs.
func (f *fleet) running() []vm.Status {
	var out []vm.Status
	for _, st := range f.all {
		if st.Running() {
			out = append(out, st)
		}
	}
	return out
}

// busyText lists the operations under way, after the spinner; "" when
// there are none.
func (f *fleet) busyText() string {
	if len(f.busy) == 0 {
		return ""
	}
	var ops []string
	for _, s := range f.all {
		if op, ok := f.busy[s.Name]; ok {
			ops = append(ops, op.busy(s.DisplayName()))
		}
	}
	if len(ops) == 0 {
		for name, op := range f.busy {
			ops = append(ops, op.busy(printable(name)))
			break
		}
	}
	return f.spin.View() + " " + strings.Join(ops, ", ")
}
