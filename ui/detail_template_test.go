package ui

import (
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/charmbracelet/x/exp/golden"
)

// TestDetailTemplateGolden: the detail view of an instance names its
// template.
func TestDetailTemplateGolden(t *testing.T) {
	f := newFake()
	f.list[0].Template = "base"
	f.defs["web"].Template = "base"
	m := loaded(t, f, 80, 24)
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(Model)
	m = update(t, m, cmd())
	m.vms.history["web"] = &history{pid: 4242, cpu: []float64{0, 10, 50, 100, 30, 5}, mem: []float64{100 << 20, 200 << 20, 312 << 20}}
	golden.RequireEqual(t, []byte(m.View()))
}
