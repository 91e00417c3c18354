package ui

import (
	"errors"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/vm"
)

// How the picture of the VMs is kept current. QEMU tells the Watcher when a
// VM is paused, resumed or shut down, or exits, and only that VM is read
// again (statusCmd). Each tick (every Refresh, twice that once nothing has
// changed for a while) reads the running QEMUs' CPU time and memory from
// /proc alone (sampleCmd), which also notices a QEMU gone or stopped by a
// signal, and the backend's stamp of the VMs' directories, which notices a
// VM defined, removed, started or stopped by another process; a changed
// stamp, and every FullRefresh, reads the whole list. VMs that no Watcher
// follows (another vmtui holds their events socket) or in a passing state
// (starting, stopping, broken) are read again on every tick. Without a
// Watcher at all, every tick reads the whole list.

// DefaultRefresh is how often the running VMs' CPU and memory are sampled.
const DefaultRefresh = time.Second

// DefaultFullRefresh is how often the whole list is read when a Watcher
// follows the VMs.
const DefaultFullRefresh = 15 * time.Second

// quietRefreshes is how many ticks in a row (10 s) may change nothing, with
// no input, before the interval doubles (an idle TUI then costs half as
// much); a key press or a change brings it back.
const quietRefreshes = 10

// refresher is the Model's bookkeeping of what is being read.
type refresher struct {
	watcher Watcher // nil: no events, poll

	refreshing bool // a full list is under way
	refreshNow bool // list again as soon as the running one ends
	lastList   time.Time
	sampling   bool   // a sample is under way
	stamp      string // the backend's last stamp
	tickGen    int
	// quiet counts the ticks in a row that changed nothing on the table
	// with no key pressed: past quietRefreshes, ticks slow down.
	quiet int

	polled     map[string]bool // VMs no Watcher follows: read each tick
	inspecting map[string]bool // VMs being read
	pending    map[string]bool // VMs to read again once read
}

func newRefresher(w Watcher) refresher {
	return refresher{watcher: w, polled: make(map[string]bool), inspecting: make(map[string]bool), pending: make(map[string]bool)}
}

// interval is the time to the next tick.
func (m *Model) interval() time.Duration {
	if m.quiet >= quietRefreshes {
		return 2 * m.opts.Refresh
	}
	return m.opts.Refresh
}

// refresh reads the whole list now (or once the one under way ends).
func (m *Model) refresh() tea.Cmd {
	if m.refreshing {
		m.refreshNow = true
		return nil
	}
	m.refreshing = true
	return listCmd(m.b, m.watcher)
}

// inspect reads VM name again (once more after the reading under way).
func (m *Model) inspect(name string) tea.Cmd {
	if m.inspecting[name] {
		m.pending[name] = true
		return nil
	}
	m.inspecting[name] = true
	return statusCmd(m.b, m.watcher, name)
}

// onTick samples /proc, reads what must be polled, and schedules the next
// tick.
func (m *Model) onTick(msg tickMsg) tea.Cmd {
	if msg.gen != m.tickGen {
		return nil
	}
	m.tickGen++
	cmds := []tea.Cmd{tickCmd(m.interval(), m.tickGen)}
	if m.watcher == nil || msg.at.Sub(m.lastList) >= m.opts.FullRefresh {
		cmds = append(cmds, m.refresh())
	}
	if !m.sampling {
		m.sampling = true
		cmds = append(cmds, sampleCmd(m.b, m.vms.running()))
	}
	if m.watcher != nil && !m.refreshing {
		for _, st := range m.vms.all {
			switch {
			case m.polled[st.Name], st.State == vm.StateStarting, st.State == vm.StateStopping, st.State == vm.StateBroken:
				cmds = append(cmds, m.inspect(st.Name))
			}
		}
	}
	if m.screen == screenDetail && m.detail != nil {
		cmds = append(cmds, detailCmd(m.b, m.detail.name))
	}
	return tea.Batch(cmds...)
}

// applyList takes a full list.
func (m *Model) applyList(msg listMsg) tea.Cmd {
	m.refreshing = false
	m.lastList = msg.at
	var cmd tea.Cmd
	if m.refreshNow {
		m.refreshNow = false
		cmd = m.refresh()
	}
	m.vms.err = msg.err
	if msg.err == nil {
		if m.vms.loaded && !sameRows(m.vms.all, msg.list) {
			m.quiet = 0
		}
		m.vms.setAll(msg.list, msg.at)
		for name := range m.polled {
			if st, ok := m.vms.get(name); !ok || !st.Running() {
				delete(m.polled, name)
			}
		}
	}
	m.table.refresh()
	return cmd
}

// sameRows reports whether two lists draw the same table.
func sameRows(a, b []vm.Status) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if cellsDiffer(a[i], b[i]) {
			return false
		}
	}
	return true
}

// applyStatus takes the status of one VM.
func (m *Model) applyStatus(msg statusMsg) tea.Cmd {
	delete(m.inspecting, msg.name)
	var cmd tea.Cmd
	if m.pending[msg.name] {
		delete(m.pending, msg.name)
		cmd = m.inspect(msg.name)
	}
	switch {
	case errors.Is(msg.err, store.ErrNotFound):
		if _, ok := m.vms.get(msg.name); ok {
			m.quiet = 0
		}
		m.vms.remove(msg.name)
		delete(m.polled, msg.name)
	case msg.err != nil:
		m.setStatus(true, "%s: %v", msg.name, msg.err)
	case m.vms.asOf[msg.name].After(msg.at):
		// Read since.
	default:
		if old, ok := m.vms.get(msg.name); !ok || cellsDiffer(old, msg.st) {
			m.quiet = 0
		}
		m.vms.put(msg.st, msg.at)
		if !msg.st.Running() {
			delete(m.polled, msg.name)
		}
	}
	m.table.refresh()
	return cmd
}

// applySample takes /proc samples: CURMEM and the charts. A QEMU gone or
// stopped by a signal is read again; a changed stamp reads the list.
func (m *Model) applySample(msg sampleMsg) tea.Cmd {
	m.sampling = false
	var cmds []tea.Cmd
	if msg.stamp != "" && m.stamp != "" && msg.stamp != m.stamp {
		cmds = append(cmds, m.refresh())
	}
	if msg.stamp != "" {
		m.stamp = msg.stamp
	}
	changed := false
	for name, s := range msg.samples {
		st, ok := m.vms.get(name)
		switch {
		case !ok || !st.Running():
		case errors.Is(s.err, vm.ErrNotRunning):
			cmds = append(cmds, m.inspect(name))
		case s.err != nil || s.ps.PID != st.PID:
		default:
			if s.ps.Stopped() && st.State != vm.StateBroken {
				cmds = append(cmds, m.inspect(name))
			}
			if m.vms.record(name, s.ps, msg.at) {
				changed = true
			}
		}
	}
	if changed {
		m.quiet = 0
		m.table.refresh()
	} else {
		m.quiet++
	}
	return tea.Batch(cmds...)
}

// applyWatch takes an event of a watched VM: it is read again, or polled
// while no Watcher can follow it.
func (m *Model) applyWatch(msg watchMsg) tea.Cmd {
	name := msg.ev.VM
	cmds := []tea.Cmd{waitWatch(m.watcher)}
	switch msg.ev.Kind {
	case vm.WatchBusy:
		m.polled[name] = true
		return tea.Batch(cmds...)
	case vm.WatchLost:
		m.polled[name] = true
	case vm.WatchConnected, vm.WatchExit:
		delete(m.polled, name)
	}
	return tea.Batch(append(cmds, m.inspect(name))...)
}
