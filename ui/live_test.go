package ui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/vm"
)

func (f *fakeBackend) SetMemory(_ context.Context, name string, size int64) error {
	f.record(fmt.Sprintf("set memory %s %d", name, size))
	return f.err
}

func (f *fakeBackend) AttachDisk(_ context.Context, name, path string) error {
	f.record("attach " + name + " " + path)
	return f.err
}

func (f *fakeBackend) DetachDisk(_ context.Context, name, path string) error {
	f.record("detach " + name + " " + path)
	return f.err
}

// detailOf returns a model showing the detail view of the first VM (web,
// running), its list changed by mod first.
func detailOf(t *testing.T, f *fakeBackend, mod func([]vm.Status)) Model {
	t.Helper()
	if mod != nil {
		list, _ := f.List(context.Background())
		mod(list)
		f.setList(list)
	}
	m := loaded(t, f, 100, 30)
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(Model)
	return update(t, m, cmd())
}

// TestLiveKeys: from the detail view of a running VM, m asks a size and
// sets the memory, a asks a path and attaches it (made absolute), u
// detaches the one disk attached after y, or the one chosen among several;
// each runs as an operation named in the status line. A stopped VM, a
// bad size, esc and n change nothing.
func TestLiveKeys(t *testing.T) {
	two := func(l []vm.Status) { l[0].Attached = []string{"/srv/a.qcow2", "/srv/b.raw"} }
	one := func(l []vm.Status) { l[0].Attached = []string{"/srv/a.qcow2"} }
	stopped := func(l []vm.Status) { l[0].PID, l[0].State = 0, vm.StateStopped }
	for _, tc := range []struct {
		name   string
		mod    func([]vm.Status)
		keys   string
		call   string
		status string
	}{
		{"memory", nil, "m512M<enter>", "set memory web 536870912", "setting memory to 512M of vm web…"},
		{"bad size", nil, "m12Q<enter><esc>", "", ""},
		{"memory cancelled", nil, "m1G<esc>", "", ""},
		{"attach", nil, "adata.qcow2<enter>", "attach web /home/user/data.qcow2", "attaching disk /home/user/data.qcow2 to vm web…"},
		{"attach absolute", nil, "a/srv/x.raw<enter>", "attach web /srv/x.raw", "attaching disk /srv/x.raw to vm web…"},
		{"detach the one disk", one, "uy", "detach web /srv/a.qcow2", "detaching disk /srv/a.qcow2 from vm web…"},
		{"detach: no", one, "un", "", "detach disk /srv/a.qcow2 from vm web: cancelled"},
		{"detach: choose", two, "u<down><enter>y", "detach web /srv/b.raw", "detaching disk /srv/b.raw from vm web…"},
		{"detach: none attached", nil, "u", "", "detach disk from vm web: no disk is attached to it (a attaches one)"},
		{"stopped", stopped, "m", "", "set memory of vm web: vm is not running; start it with s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			m := detailOf(t, f, tc.mod)
			var cmds []tea.Cmd
			for _, k := range splitKeys(tc.keys) {
				next, cmd := m.Update(k)
				m = next.(Model)
				cmds = append(cmds, cmd)
			}
			if m.screen != screenDetail || m.detail.live != nil {
				t.Errorf("after %q: screen %v, form %v; want the detail view, no form", tc.keys, m.screen, m.detail.live)
			}
			if m.status != tc.status {
				t.Errorf("status %q, want %q", m.status, tc.status)
			}
			for _, cmd := range cmds {
				runCmd(t, cmd)
			}
			var ops []string
			for _, c := range f.Calls() {
				if !strings.HasPrefix(c, "status ") {
					ops = append(ops, c)
				}
			}
			if got := strings.Join(ops, ","); got != tc.call {
				t.Errorf("calls %q, want %q", got, tc.call)
			}
		})
	}
}

// TestLiveForm: the forms take the bottom of the detail view, with their
// keys; a bad size is said under the field; the attached disks and the
// memory a guest has now are listed.
func TestLiveForm(t *testing.T) {
	f := newFake()
	m := detailOf(t, f, func(l []vm.Status) {
		l[0].Attached = []string{"/srv/a.qcow2", "/srv/b.raw"}
		l[0].MaxMem = 1536 << 20
	})
	view := m.View()
	for _, want := range []string{"/srv/a.qcow2  attached while it runs (u detaches)", "memory now 1.5G (m changes it)", "m memory", "a attach disk", "u detach disk"} {
		if !strings.Contains(view, want) {
			t.Errorf("detail view: no %q in\n%s", want, view)
		}
	}
	m = keys(t, m, "m12Q")
	view = m.View()
	for _, want := range []string{"Memory of web", "memory  12Q", "✗", "esc cancel"} {
		if !strings.Contains(view, want) {
			t.Errorf("memory form: no %q in\n%s", want, view)
		}
	}
	if lines := strings.Split(view, "\n"); len(lines) > 30 {
		t.Errorf("memory form: %d lines, want at most 30", len(lines))
	}
	m = keys(t, m, "<esc>u")
	view = m.View()
	for _, want := range []string{"Detach which disk?", "› /srv/a.qcow2", "  /srv/b.raw", "enter detach"} {
		if !strings.Contains(view, want) {
			t.Errorf("detach choice: no %q in\n%s", want, view)
		}
	}
	// The operation's end reads the VM again and says what happened.
	m = keys(t, m, "<esc>")
	op := liveOp(liveAttach, 0, "/srv/c.qcow2")
	m.vms.busy["web"] = op
	m = update(t, m, opDoneMsg{op: op, name: "web", err: fmt.Errorf("image is in use by vm build")})
	if !m.statusErr || m.status != "attach disk /srv/c.qcow2 to vm web: image is in use by vm build" {
		t.Errorf("status %q (error %v)", m.status, m.statusErr)
	}
}

// TestTrimCause: the status line names the operation and the VM; the
// error from vm, which names them too, is shown from its cause.
func TestTrimCause(t *testing.T) {
	for _, tc := range []struct{ err, prefix, want string }{
		{"set memory of vm web: 1G is more than its max_memory, 768M", "set memory of vm web", "1G is more than its max_memory, 768M"},
		{"set memory of vm web to 512M: the guest stopped short: it has 300M", "set memory of vm web", "the guest stopped short: it has 300M"},
		{`attach "/d" to vm web: image is in use by vm b`, `attach "/d" to vm web`, "image is in use by vm b"},
		{"web: vm not found", "set memory of vm web", "web: vm not found"},
	} {
		err := trimCause(errors.New(tc.err), tc.prefix)
		if err.Error() != tc.want || errors.Unwrap(err) == nil && err.Error() != tc.err {
			t.Errorf("trimCause(%q, %q) = %q, want %q", tc.err, tc.prefix, err, tc.want)
		}
	}
	if trimCause(nil, "x") != nil {
		t.Errorf("trimCause(nil) is not nil")
	}
}
