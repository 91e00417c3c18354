package ui

import (
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config"
)

// TestDetailDevices: the detail view lists the device keys a definition
// sets, with the CID its running guest was given.
func TestDetailDevices(t *testing.T) {
	f := newFake()
	def := f.defs["web"]
	def.Sockets, def.Cores, def.MaxMemory, def.Vsock = 2, 1, 4<<30, true
	def.Shares = []config.Share{{Path: "/srv/data", Tag: "data"}}
	def.Disks[0].Bus, def.Disks[0].Discard = config.BusSCSI, true
	f.list[0].CID = 1001
	m := loaded(t, f, 100, 40)
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(Model)
	m = update(t, m, cmd())
	view := m.View()
	for _, want := range []string{"Devices", "topology 2 sockets × 1 core × 1 thread", "max_memory 4G", "vsock cid 1001",
		`share data "/srv/data"`, "disks[0] bus scsi, discard"} {
		if !strings.Contains(view, want) {
			t.Errorf("detail view: no %q in\n%s", want, view)
		}
	}
}

// TestNewVMFormMaxMemory: the form's max memory is checked against the
// memory, as the definition's max_memory.
func TestNewVMFormMaxMemory(t *testing.T) {
	m := keys(t, loaded(t, newFake(), 80, 24), "n")
	m = keys(t, m, "guest1<tab>1G<tab>512M<tab>2<tab><tab><tab>/boot/vmlinuz")
	if _, err := m.newVM.definition(); err == nil || !strings.Contains(err.Error(), "max_memory: 512M is below memory (1G)") {
		t.Errorf("definition: %v, want max_memory below memory", err)
	}
	m = keys(t, m, "<up><up><up><up><bs><bs><bs><bs>3G")
	def, err := m.newVM.definition()
	if err != nil || def.MaxMemory != 3<<30 {
		t.Errorf("definition: %+v, %v; want max memory 3G", def, err)
	}
}
