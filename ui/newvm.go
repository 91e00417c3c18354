package ui

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config"
)

// The new VM form: every field checked as it is typed, with the config
// package's own rules, then the whole definition with config.VM.Validate.

// Fields of the new VM form.
const (
	vmName = iota
	vmMemory
	vmCPUs
	vmDisks
	vmISO
	vmKernel
	vmInitrd
	vmAppend
	vmNetwork
	vmPorts
)

// vmForm is the new VM form.
type vmForm struct {
	*form
	cwd string
}

func newVMForm(cwd string) *vmForm {
	f := &vmForm{cwd: cwd}
	pathCheck := func(string) error { return nil }
	f.form = &form{
		title: "New VM",
		fields: []field{
			newField("name", "demo", "letters, digits, - _ . (as vmctl)", func(v string) error {
				if v == "" {
					return errors.New("a name is needed")
				}
				return config.ValidName(v)
			}),
			newField("memory", "512M", "empty for 512M; K, M, G suffixes, a whole number of MiB", func(v string) error {
				if v == "" {
					return nil
				}
				_, err := config.ParseMemory(v)
				return err
			}),
			newField("vcpus", "1", fmt.Sprintf("1 to %d", config.MaxCPUs), func(v string) error {
				if v == "" {
					return nil
				}
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > config.MaxCPUs {
					return fmt.Errorf("%q is not a number of vcpus from 1 to %d", v, config.MaxCPUs)
				}
				return nil
			}),
			newField("disks", "disk.qcow2, data.raw", fmt.Sprintf("comma-separated images, at most %d (press d to make one)", config.MaxDisks), func(v string) error {
				if n := len(splitList(v)); n > config.MaxDisks {
					return fmt.Errorf("%d disks, at most %d", n, config.MaxDisks)
				}
				return nil
			}),
			newField("iso", "install.iso", "a CD-ROM image", pathCheck),
			newField("kernel", "/path/to/vmlinuz", "boot a kernel directly", pathCheck),
			newField("initrd", "/path/to/initrd.img", "needs a kernel", pathCheck),
			newField("append", "console=ttyS0", "the kernel's command line", nil),
			newField("network", "user", "empty for user (NAT), none, or bridge,br=NAME", func(v string) error {
				if v == "" || v == "none" {
					return nil
				}
				_, err := config.ParseNetwork(v)
				return err
			}),
			newField("ports", "tcp::2222-:22", "port forwards of the user network, comma-separated", func(v string) error {
				for _, p := range splitList(v) {
					if _, err := config.ParseHostFwd(p); err != nil {
						return err
					}
				}
				return nil
			}),
		},
	}
	f.form.whole = func() error {
		_, err := f.definition()
		return err
	}
	f.focusOn(0)
	f.validate()
	return f
}

// definition builds the definition the form describes and validates it.
func (f *vmForm) definition() (*config.VM, error) {
	def := &config.VM{Name: f.value(vmName)}
	if v := f.value(vmMemory); v != "" {
		mem, err := config.ParseMemory(v)
		if err != nil {
			return nil, err
		}
		def.Memory = mem
	}
	if v := f.value(vmCPUs); v != "" {
		def.CPUs, _ = strconv.Atoi(v)
	}
	for _, p := range splitList(f.value(vmDisks)) {
		def.Disks = append(def.Disks, config.Disk{Path: absPath(f.cwd, p)})
	}
	def.CDROM = absPath(f.cwd, f.value(vmISO))
	def.Kernel = absPath(f.cwd, f.value(vmKernel))
	def.Initrd = absPath(f.cwd, f.value(vmInitrd))
	def.Append = f.value(vmAppend)
	if def.Initrd != "" && def.Kernel == "" {
		return nil, errors.New("initrd: needs a kernel")
	}
	if def.Append != "" && def.Kernel == "" {
		return nil, errors.New("append: needs a kernel")
	}
	ports := splitList(f.value(vmPorts))
	if v := f.value(vmNetwork); v != "none" {
		n, err := config.ParseNetwork(v)
		if err != nil {
			return nil, err
		}
		if len(ports) > 0 && n.Type != config.NetUser {
			return nil, errors.New("ports: port forwards need a user network")
		}
		n.HostFwd = append(n.HostFwd, ports...)
		def.Networks = append(def.Networks, n)
	} else if len(ports) > 0 {
		return nil, errors.New("ports: port forwards need a user network")
	}
	if def.Kernel == "" && def.CDROM == "" && len(def.Disks) == 0 {
		return nil, errors.New("nothing to boot: give a disk, an iso or a kernel")
	}
	def.SetDefaults()
	// Validate wants the ID that Store.Create assigns: lend it one.
	def.ID = 1
	err := def.Validate()
	def.ID = 0
	if err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return def, nil
}

// updateForms handles messages while a form is open, and the results of
// forms submitted.
func (m Model) updateForms(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case createdMsg:
		if m.vmForm == nil {
			return m, nil
		}
		m.vmForm.busy = false
		if msg.err != nil {
			m.vmForm.err = fmt.Errorf("define %s: %w", msg.def.Name, msg.err)
			return m, nil
		}
		m.vmForm, m.screen = nil, screenTable
		m.selected = msg.def.Name
		m.setStatus(false, "defined vm %s (id %d): press s to start it", msg.def.Name, msg.def.ID)
		return m, m.refresh()
	case diskDoneMsg, progressMsg:
		return m.updateDiskResult(msg)
	}
	switch m.screen {
	case screenNewVM:
		f := m.vmForm
		if f.busy {
			return m, nil
		}
		res, cmd := f.update(msg)
		switch res {
		case formCancel:
			m.vmForm, m.screen = nil, screenTable
			return m, nil
		case formSubmit:
			def, err := f.definition()
			if err != nil {
				f.err = err
				return m, nil
			}
			f.busy = true
			return m, createCmd(m.b, def)
		}
		return m, cmd
	case screenDisk:
		return m.updateDiskForm(msg)
	}
	return m, nil
}
